"""Turn Track-family jobs into a batch request's body: one item per job.

The queue stores only each job's record (kind and payload); the sender builds the items when it
sends (`batch_body`), in one orjson call for the whole body: about 2 µs a job, so one worker
process still moves tens of thousands of events a second, and a queued event takes half the
Redis memory it took when the ready item was stored beside the job (issue 18). Two targets
(docs/customerio-api.md §3 and §5):

- Track API v2 `POST /api/v2/batch`: `{"type": "person", "identifiers": {...}, "action": ...}`.
  A person is named by exactly one identifier; like Track v1's path, the kind is inferred from
  the value: `cio_<id>` is a `cio_id`, a value with `@` an `email`, anything else an `id`.
- Data Pipelines `POST /v1/batch`: the single call's body, which carries its `"type"` (identify,
  track, page, alias), `messageId` = job id, ISO-8601 timestamps. Merges travel as `alias` items,
  keeping their place in the person's order: the published batch schema does not list alias, but
  Customer.io's own Pipelines libraries send every alias inside `/v1/batch`
  (docs/customerio-api-notes.md, "Merges in a Pipelines batch").

Anonymous events have no Track v2 person operation, so on Track they are not batched; Pipelines
takes them in `/v1/batch` like any call (`batchable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from cio_worker import jsonutil
from cio_worker.customerio._operations import pipelines_operation
from cio_worker.job import Job
from cio_worker.kinds import KINDS, Kind

#: Kinds that travel in batches; the others keep one request per job.
BATCHABLE = frozenset(
    {
        Kind.IDENTIFY,
        Kind.TRACK,
        Kind.PAGE,
        Kind.DELETE,
        Kind.MERGE,
        Kind.SUPPRESS,
        Kind.UNSUPPRESS,
        Kind.ADD_DEVICE,
        Kind.REMOVE_DEVICE,
    }
)


def batchable(data_api: str) -> frozenset[Kind]:
    """The kinds that travel in batches to `data_api` (`track` or `pipelines`)."""
    return BATCHABLE | {Kind.TRACK_ANONYMOUS} if data_api == "pipelines" else BATCHABLE


#: Paths and body limits per API. A batch closes below the limit with headroom for the wrapper.
TRACK_BATCH_PATH = "/api/v2/batch"
PIPELINES_BATCH_PATH = "/v1/batch"
MAX_BATCH_BYTES = 450_000  # Customer.io: under 500 KB a request (both APIs)
#: Customer.io's limit itself: a body over it is refused with a 413.
REQUEST_LIMIT_BYTES = 500_000
#: How much longer than its stored record (`Job.record_json`) an item is, per API: the keys an
#: item adds (`type`, `identifiers`, `action`, the event's `id` or `messageId`, an ISO timestamp
#: for a number) less those it drops (`kind`, `payload`). The queue counts it per job when it
#: fills a batch up to MAX_BATCH_BYTES. On Track v2 it is a bound: every value is copied as it
#: is, written by the same encoder as in its record (`_body`), and the longest growth is a page
#: for an email address with a timestamp, 55 bytes. On Pipelines a page also copies its URL
#: into `properties`, so its item grows by the URL's length: 96 covers the other kinds and
#: short URLs, and a batch that still outgrows the request limit is trimmed before it is sent
#: (`fitting_count`, worker/_batch_fit.py). tests/test_batching.py checks both.
ITEM_SLACK_BYTES = {"track": 56, "pipelines": 96}


def person_identifiers(value: str | int) -> dict[str, str]:
    text = str(value)
    if text.startswith("cio_"):
        return {"cio_id": text.removeprefix("cio_")}
    if "@" in text:
        return {"email": text}
    return {"id": text}


def track_v2_item(job: Job) -> dict[str, Any]:
    """The Track v2 batch operation for `job` (one of BATCHABLE)."""
    return _track_v2(job.id, job.kind, job.payload)


def _track_v2(job_id: str, kind: Kind, p: dict[str, Any]) -> dict[str, Any]:
    if kind is Kind.MERGE:
        return {
            "type": "person",
            "action": "merge",
            "primary": dict(p["primary"]),
            "secondary": dict(p["secondary"]),
        }
    item: dict[str, Any] = {"type": "person", "identifiers": person_identifiers(p["user_id"])}
    if kind is Kind.IDENTIFY:
        item["action"] = "identify"
        item["attributes"] = p["traits"]
    elif kind in (Kind.TRACK, Kind.PAGE):
        item["action"] = "event" if kind is Kind.TRACK else "page"
        item["name"] = p["event"] if kind is Kind.TRACK else p["url"]
        item["id"] = job_id  # the event's dedup id: a resend is not counted twice
        item["attributes"] = p["properties"]
    elif kind is Kind.ADD_DEVICE:
        device: dict[str, Any] = {"token": p["device_id"], "platform": p["platform"]}
        if p.get("last_used") is not None:
            device["last_used"] = p["last_used"]
        if p.get("attributes"):
            device["attributes"] = p["attributes"]
        item["action"] = "add_device"
        item["device"] = device
    elif kind is Kind.REMOVE_DEVICE:
        item["action"] = "delete_device"
        item["device"] = {"token": p["device_id"]}
    else:  # delete, suppress, unsuppress
        item["action"] = kind.value
    if p.get("timestamp") is not None:
        item["timestamp"] = p["timestamp"]
    return item


def pipelines_item(job: Job) -> dict[str, Any]:
    """The Data Pipelines batch call for `job`: the single call's body, `type` included."""
    op = pipelines_operation(job)
    assert op.json is not None and op.json["type"] == op.path.rsplit("/", 1)[1]
    return dict(op.json)


def batch_item(job: Job, data_api: str) -> dict[str, Any]:
    """`job`'s item in a batch to `data_api` (`track` or `pipelines`)."""
    return pipelines_item(job) if data_api == "pipelines" else track_v2_item(job)


def batch_body(jobs: Sequence[Job], data_api: str) -> bytes:
    """`{"batch":[item,...]}` for `jobs`, as compact UTF-8 JSON."""
    return _body([batch_item(job, data_api) for job in jobs])


def records_body(records: Sequence[tuple[str, bytes]], data_api: str) -> bytes:
    """`batch_body` straight from stored records (`(job id, Job.record_json)`), as a sender has
    them. A sender builds thousands of items a request, so this is its hot loop: the records
    are read in one call, and a Track v2 event item, the usual job, is made inline, without a
    `Job` or a call per item (tests/test_batching.py checks it against `batch_body`)."""
    decoded = decode_records([record for _, record in records])
    if data_api == "pipelines":
        jobs = [
            Job.from_record(job_id, data)
            for (job_id, _), data in zip(records, decoded, strict=True)
        ]
        return batch_body(jobs, data_api)
    items: list[dict[str, Any]] = []
    append = items.append
    for (job_id, _), data in zip(records, decoded, strict=True):
        p = data["payload"]
        if data["kind"] == "track":
            user = p["user_id"]
            text = user if type(user) is str else str(user)
            if text.startswith("cio_"):
                identifiers = {"cio_id": text[4:]}
            else:
                identifiers = {"email": text} if "@" in text else {"id": text}
            item = {
                "type": "person",
                "identifiers": identifiers,
                "action": "event",
                "name": p["event"],
                "id": job_id,
                "attributes": p["properties"],
            }
            if p.get("timestamp") is not None:
                item["timestamp"] = p["timestamp"]
            append(item)
        else:
            append(_track_v2(job_id, KINDS[data["kind"]], p))
    return _body(items)


def _body(items: list[dict[str, Any]]) -> bytes:
    """`{"batch":[...]}`, each item written by the encoder that wrote its record: orjson, or the
    standard library for one holding an integer past 64 bits (orjson refuses it). Encoding the
    whole body with the standard library instead would write every other item's floats its own
    way (`1e-07` where the record has `1e-7`), and items could outgrow ITEM_SLACK_BYTES."""
    try:
        return orjson.dumps({"batch": items})
    except TypeError:
        return b'{"batch":[' + b",".join(map(jsonutil.dumps_bytes, items)) + b"]}"


def fitting_count(records: Sequence[tuple[str, bytes]], data_api: str, max_bytes: int) -> int:
    """How many of `records`, oldest first, fit one body of at most `max_bytes` (at least one).

    Only for a batch whose body came out over the request limit (an item grew more than
    ITEM_SLACK_BYTES allowed), so it measures each item alone: `{"batch":[` and `]}` plus the
    items and the commas between them."""
    wrapper = len(b'{"batch":[]}')
    total, count = wrapper - 1, 0  # then each item and a comma, but the first has none
    for job_id, record in records:
        total += len(records_body([(job_id, record)], data_api)) - wrapper + 1
        if count and total > max_bytes:
            break
        count += 1
    return count


def decode_records(records: Sequence[bytes]) -> list[Any]:
    """Each stored record as `jsonutil.loads` reads it, in one parse of the lot: a parse per
    record cost a sender more than building its item. A record is one JSON text each, so the
    records joined by commas are an array of as many values (checked). The lot goes through
    `jsonutil.loads` too, so a 19-digit number anywhere is read exactly (by the stdlib)."""
    if not records:
        return []
    values = jsonutil.loads(b"[" + b",".join(records) + b"]")
    if isinstance(values, list) and len(values) == len(records):
        return values
    return [jsonutil.loads(record) for record in records]  # raises on the record at fault
