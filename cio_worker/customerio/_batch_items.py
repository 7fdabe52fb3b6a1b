"""Turn a Track-family job into one item of a batch request, as compact JSON, at enqueue time.

The item is built once, by the producer, and stored with the job; the worker joins stored items
into `{"batch":[...]}` without parsing them, which is how one worker process moves tens of
thousands of events a second. Two targets (docs/customerio-api.md §3 and §5):

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

from typing import Any

from cio_worker import jsonutil
from cio_worker.customerio._operations import pipelines_operation
from cio_worker.job import Job
from cio_worker.kinds import Kind

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


def person_identifiers(value: str | int) -> dict[str, str]:
    text = str(value)
    if text.startswith("cio_"):
        return {"cio_id": text.removeprefix("cio_")}
    if "@" in text:
        return {"email": text}
    return {"id": text}


def track_v2_item(job: Job) -> dict[str, Any]:
    """The Track v2 batch operation for `job` (one of BATCHABLE)."""
    p = job.payload
    kind = job.kind
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
        item["id"] = job.id  # the event's dedup id: a resend is not counted twice
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


def batch_item_json(job: Job, data_api: str) -> str:
    """The stored item: compact JSON, ready to be joined into a batch body."""
    item = pipelines_item(job) if data_api == "pipelines" else track_v2_item(job)
    return jsonutil.dumps(item)


def batch_body(items: list[bytes]) -> bytes:
    """`{"batch":[item,...]}` from stored items, without parsing them."""
    return b'{"batch":[' + b",".join(items) + b"]}"
