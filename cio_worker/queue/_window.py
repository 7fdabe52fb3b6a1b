"""The window: a family's queue holds at most `WINDOW` task messages; later jobs wait compactly.

A task message costs Redis about 330 bytes (_envelope.py) and a queued job's hash about 640 (its
job JSON is longer than `hash-max-ziplist-value`, so the hash is a real hash table): a queued
email cost 1,170 bytes, twice issue 18's target. Only the messages workers are about to take need
to exist, so a family's Celery list holds at most `WINDOW` of them. A job enqueued while its
family's list is full, or while any job of the family waits, *waits* instead
(_ledger_scripts.ENQUEUE): its hash is only `state waiting`, `kind` and `attempts 0` (a listpack,
which the harness and `status` read like any job's), its record is a field of
keys.records(family) and its id is at the end of keys.waiting(family). About 350 bytes in all.

`RELEASE_LUA`'s `release` moves waiting jobs, oldest first, into the queue while it is shorter
than the window, doing exactly what a push does (the job JSON back in the hash, state queued, a
sequence number, the unclaimed entry, the task message built in Lua from the envelope's parts).
Three callers keep the queue full while jobs wait:

- every claim (_ledger_scripts.CLAIM) releases up to `CLAIM_RELEASE`: one for the message the
  worker took, one more to make up for a message taken without a claim (a duplicate the worker
  drops before claiming, a message lost and recovered as a stray);
- every enqueue releases what fits before it decides where its own jobs go;
- the sweeper (_sweeper.py) tops a short queue up, for a queue emptied without claims (workers of
  an older version during an upgrade).

Durability is unchanged: a waiting job is in Redis (AOF) from its enqueue, each move is one
script, and the chaos harness sees it unfinished (its hash exists) with attempts 0. A job never
overtakes an older one of its family: while any waits, every new one waits behind it.

Why 200: enough that no worker ever finds its queue empty while jobs wait (a claim refills the
queue in the same script that empties it by one, and a worker takes one message per thread), and
small enough that the messages cost nothing that matters (200 x 330 B = 66 KB per family).
"""

from __future__ import annotations

from collections.abc import Sequence

from cio_worker import keys
from cio_worker.job import Job
from cio_worker.kinds import KIND_FAMILY, Family, Kind, queue_name
from cio_worker.queue._envelope import MESSAGE_LUA, lua_parts

#: Task messages a family's queue holds at most while its jobs wait (see the module).
WINDOW = 200
#: Waiting jobs a claim releases at most (see the module).
CLAIM_RELEASE = 2
#: Jobs per ZADD / LPUSH / RPUSH inside ENQUEUE: Lua's `unpack` refuses about 8,000 values.
ENQUEUE_SLICE = 1000

# `with_id(id, record)`: the job JSON (`Job.to_json`) from its record (`Job.record_json`).
# `window(k, a)`: the family's window from KEYS[k..k+4] (`window_keys`) and ARGV[a..a+8]
# (`window_args`). `release(q, limit)`: see the module; each released job's message is tagged
# `<family>.<seq>`, unique per push and never a random hex tag of _envelope.task_message.
RELEASE_LUA = (
    MESSAGE_LUA
    + r"""
local function with_id(id, record)
  local quoted = string.find(id, '^%w+$') and ('"' .. id .. '"') or cjson.encode(id)
  return '{"id":' .. quoted .. ',' .. string.sub(record, 2)
end

local function window(k, a)
  return {queue = KEYS[k], unclaimed = KEYS[k + 1], seq = KEYS[k + 2], waiting = KEYS[k + 3],
          records = KEYS[k + 4], window = tonumber(ARGV[a]), prefix = ARGV[a + 1],
          family = ARGV[a + 2], parts = {unpack(ARGV, a + 3, a + 8)}}
end

local function release(q, limit)
  local room = q.window - redis.call('LLEN', q.queue)
  if room < limit then limit = room end
  if limit <= 0 then return 0 end
  -- LRANGE + LTRIM rather than LPOP's count, which Redis before 6.2 lacks.
  local ids = redis.call('LRANGE', q.waiting, 0, limit - 1)
  if #ids == 0 then return 0 end
  redis.call('LTRIM', q.waiting, #ids, -1)
  local released = 0
  for _, id in ipairs(ids) do
    local job_key = q.prefix .. id
    local record = redis.call('HGET', q.records, id)
    local found = redis.call('HMGET', job_key, 'state', 'kind')
    if record then redis.call('HDEL', q.records, id) end
    if record and found[1] == 'waiting' then
      local seq = redis.call('INCR', q.seq)
      redis.call('HSET', job_key, 'state', 'queued', 'job', with_id(id, record))
      redis.call('ZADD', q.unclaimed, seq, id)
      redis.call('LPUSH', q.queue, message(id, found[2], q.family .. '.' .. seq, q.parts))
      released = released + 1
    end
  end
  return released
end
"""
)


def window_keys(family: Family) -> list[str]:
    """`window`'s KEYS: the family's queue, unclaimed index, push seq, waiting list, records."""
    name = family.value
    return [
        queue_name(family),
        keys.unclaimed(name),
        keys.push_seq(name),
        keys.waiting(name),
        keys.records(name),
    ]


def window_args(family: Family) -> list[str]:
    """`window`'s ARGV: the window, the job hash key prefix, the family, the envelope's parts."""
    return [str(WINDOW), keys.job(""), family.value, *lua_parts(family)]


#: A job for ENQUEUE as the bulk producer keeps it: its id, kind and stored record (what
#: `Job.record_json` gives), with no `Job` around it.
LedgerRecord = tuple[str, Kind, bytes]


def enqueue_call(
    job: Job, *, replace: bool = False, stats_field: str = "enqueued"
) -> tuple[list[str], list[str | bytes]]:
    """KEYS and ARGV of ledger_scripts.ENQUEUE for `job` (shared by the sync and async paths)."""
    record = (job.id, job.kind, job.record_json())
    return _enqueue_call(KIND_FAMILY[job.kind], [record], replace=replace, stats_field=stats_field)


def record_calls(
    records: Sequence[LedgerRecord], *, replace: bool = False, stats_field: str = "enqueued"
) -> list[tuple[list[str], list[str | bytes]]]:
    """KEYS and ARGV of each ledger_scripts.ENQUEUE call that stores `records`: one per family
    and `ENQUEUE_SLICE` jobs, each family's jobs in the order given."""
    by_family: dict[Family, list[LedgerRecord]] = {}
    for record in records:
        by_family.setdefault(KIND_FAMILY[record[1]], []).append(record)
    size = ENQUEUE_SLICE
    return [
        _enqueue_call(family, group[start : start + size], replace=replace, stats_field=stats_field)
        for family, group in by_family.items()
        for start in range(0, len(group), size)
    ]


def _enqueue_call(
    family: Family, records: Sequence[LedgerRecord], *, replace: bool, stats_field: str
) -> tuple[list[str], list[str | bytes]]:
    # Each job is two arguments, its id and its record: the script builds its hash key from
    # the job key prefix in `window_args` (as `release` does), and the jobs' kinds are one
    # argument. redis-py spends more packing an argument than Lua spends on either (issue 18).
    args: list[str | bytes] = [
        *window_args(family),
        f"{family.value}:{stats_field}",
        "1" if replace else "0",
        " ".join([record[1] for record in records]),  # a Kind is a StrEnum: its value
    ]
    pairs: list[str | bytes] = [""] * (2 * len(records))
    pairs[0::2] = [record[0] for record in records]
    pairs[1::2] = [record[2] for record in records]
    return [*window_keys(family), keys.stats()], args + pairs
