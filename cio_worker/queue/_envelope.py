"""Celery task messages written by hand, so enqueueing needs one Redis round trip and no Celery.

The shape is Celery's task protocol 2 inside kombu's Redis envelope, cut to what a Celery 5 worker
and kombu 5 read (checked against celery/kombu 5.7; tests/test_email_storage.py proves that kombu
acknowledges, rejects and restores it, even from a SIGKILLed consumer, and that a real worker
consumes and retries it and its task events name the task and the job):

- kombu reads `properties.delivery_tag` and `properties.delivery_info.exchange/routing_key` with
  `[]`; the rest with `.get` (a missing `priority` is the default priority, queue `cio.<family>`
  itself). The exchange is the default one (`""`): kombu then restores an unacknowledged message
  straight to its routing key, the queue, without looking up a binding.
- No `body_encoding`: kombu decodes a body only when it names one, so the body is the JSON itself,
  not base64 (a third shorter). `content-type` is read; `content-encoding` defaults to utf-8.
- Celery reads the headers `task` and `id` with `[]`; every other header (eta, expires, retries,
  root_id, argsrepr, timelimit, ignore_result...) with `.get`, its absence meaning what
  `send_task`'s null or default meant. The body is `[args, kwargs, embed]`. `argsrepr` and
  `kwargsrepr` stay: they are what Flower shows as the task's arguments (the job id).

About 330 bytes, where `send_task`'s own envelope is about 1,050: a queued email was mostly this
message (issue 18). The message carries only the job id: the payload stays in Redis (keys.job),
so Flower, which shows task arguments, never shows an email address or an attribute.
"""

from __future__ import annotations

import json
import random

from cio_worker.kinds import Family, Kind, queue_name


def task_message(job_id: str, kind: Kind) -> str:
    """The JSON kombu pushes onto the family's list for a task `kind.task_name(job_id)`."""
    head, middle, sep, tail, end = _parts(kind)
    if job_id.isascii() and job_id.isalnum():  # a ULID: nothing to escape
        quoted, twice, args = f'"{job_id}"', f'\\"{job_id}\\"', f"\"['{job_id}']\""
    else:  # an id is data: quoted and escaped like any JSON string, then again inside the body
        quoted = json.dumps(job_id)
        twice = json.dumps(quoted)[1:-1]
        args = json.dumps(repr([job_id]))
    # The tag names this copy of the message in kombu's unacked hash while a worker holds it:
    # 64 random bits in hex (the module's generator is reseeded in a forked child). Messages the
    # ledger's scripts build take `<family>.<seq>` instead (MESSAGE_LUA): the dot keeps the two
    # apart.
    tag = f"{random.getrandbits(64):x}"
    return f"{head}{twice}{middle}{quoted}{sep}{args}{tail}{tag}{end}"


def lua_parts(family: Family) -> list[str]:
    """MESSAGE_LUA's `parts` for `family`'s kinds: the envelope around the id, with the task
    name's kind cut out (`head`, `middle` before and after the kind, `sep`, `tail`, `end`)."""
    cached = _LUA_PARTS.get(family)
    if cached is None:  # kinds differ only by name (tests/test_email_storage.py checks each)
        sample = next(iter(Kind))
        head, middle, sep, _tail, end = _parts(sample)
        before, _, after = middle.partition(sample.value)
        cached = _LUA_PARTS[family] = [head, before, after, sep, _tail_part(family), end]
    return cached


#: Lua `message(id, kind, tag, parts)`: `task_message` built inside a script (the ledger's
#: release of a waiting job, queue/_ledger_scripts.py), `parts` being `lua_parts(family)`. A job
#: id outside [A-Za-z0-9] is escaped as JSON twice, like `task_message` does; only its argsrepr
#: (what Flower shows, read by nobody else) is then JSON rather than Python's repr.
MESSAGE_LUA = r"""
local function message(id, kind, tag, p)
  local quoted, twice, args
  if string.find(id, '^%w+$') then
    quoted = '"' .. id .. '"'
    twice = '\\"' .. id .. '\\"'
    args = '"[\'' .. id .. '\']"'
  else
    quoted = cjson.encode(id)
    twice = string.sub(cjson.encode(quoted), 2, -2)
    args = cjson.encode('[' .. quoted .. ']')
  end
  return p[1] .. twice .. p[2] .. kind .. p[3] .. quoted .. p[4] .. args .. p[5] .. tag .. p[6]
end
"""


def _parts(kind: Kind) -> tuple[str, str, str, str, str]:
    """The envelope around the id (in the body, then as headers.id and argsrepr) and the tag."""
    cached = _PARTS.get(kind)
    if cached is None:
        cached = _PARTS[kind] = (
            '{"body":"[[',
            f'],{{}},{{}}]","content-type":"application/json","headers":{{"task":'
            f'{json.dumps(kind.task_name)},"id":',
            ',"argsrepr":',
            _tail_part(kind.family),
            '"}}',
        )
    return cached


def _tail_part(family: Family) -> str:
    """From argsrepr's end to the tag: the rest of the headers and the properties."""
    queue = json.dumps(queue_name(family))
    return (
        f',"kwargsrepr":"{{}}"}},"properties":{{"delivery_info":{{"exchange":"",'
        f'"routing_key":{queue}}},"delivery_tag":"'
    )


_PARTS: dict[Kind, tuple[str, str, str, str, str]] = {}
_LUA_PARTS: dict[Family, list[str]] = {}
