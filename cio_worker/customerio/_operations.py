"""Turn a job into the one HTTP request that delivers it: API, method, path, body, limiter bucket.

Pure functions, no I/O: tests check every kind against Customer.io's published OpenAPI specs
(tests/specs; what we rely on beyond them: docs/customerio-api-notes.md).

Identifiers in paths are percent-encoded whole (`/` too), as the official clients do. An id that is
exactly `.` or `..` cannot be sent as a path segment at all (percent-encoding does not make it
literal, RFC 3986 §2.3, §6.2.2.2); validation.py refuses such ids at enqueue, and _http.py refuses
to send any path the HTTP client would rewrite.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from cio_worker import jsonutil
from cio_worker.config import Settings
from cio_worker.job import Job
from cio_worker.kinds import Kind

Api = Literal["track", "app", "pipelines"]


@dataclass(frozen=True, slots=True)
class HttpOperation:
    """One request to Customer.io. `bucket` names the shared rate limit it draws from."""

    api: Api
    bucket: str
    method: str
    path: str
    json: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: A body already encoded as JSON (batches are joined from stored items, never re-parsed).
    content: bytes | None = None

    @property
    def route(self) -> str:
        """The path with every identifier replaced by its placeholder: safe to log."""
        return route_of(self.path)


def segment(value: str | int) -> str:
    """A path segment with everything but unreserved characters percent-encoded."""
    return quote(str(value), safe="")


#: Every path cio_worker sends, as a template: `{...}` stands for one identifier segment.
ROUTES = (
    # Track v1 and v2 (docs/customerio-api.md §2, §3)
    "/api/v1/customers/{id}",
    "/api/v1/customers/{id}/events",
    "/api/v1/customers/{id}/devices",
    "/api/v1/customers/{id}/devices/{token}",
    "/api/v1/customers/{id}/suppress",
    "/api/v1/customers/{id}/unsuppress",
    "/api/v1/events",
    "/api/v1/merge_customers",
    "/api/v1/accounts/region",
    "/api/v2/batch",
    "/api/v2/entity",
    # App API (§4): sends, broadcasts, reads
    "/v1/send/email",
    "/v1/send/push",
    "/v1/send/sms",
    "/v1/campaigns/{broadcast_id}/triggers",
    "/v1/campaigns/{broadcast_id}/triggers/{trigger_id}",
    "/v1/campaigns/{broadcast_id}/triggers/{trigger_id}/errors",
    "/v1/campaigns/{campaign_id}/metrics",
    "/v1/campaigns",
    "/v1/broadcasts",
    "/v1/broadcasts/{broadcast_id}/triggers",
    "/v1/customers",
    "/v1/customers/{id}/attributes",
    "/v1/customers/{id}/messages",
    "/v1/messages/{delivery_id}",
    "/v1/transactional/{transactional_id}/messages",
    "/v1/segments",
    # Data Pipelines (§5)
    "/v1/identify",
    "/v1/track",
    "/v1/page",
    "/v1/screen",
    "/v1/group",
    "/v1/alias",
    "/v1/batch",
)
_ROUTE_PARTS = sorted((tuple(t.split("/")) for t in ROUTES), key=lambda t: str(t).count("{"))
_LITERAL_PARTS = frozenset(p for parts in _ROUTE_PARTS for p in parts if not p.startswith("{"))


def route_of(path: str) -> str:
    """`path`'s template from ROUTES (query dropped), e.g. `/api/v1/customers/{id}/events`.

    A path no template matches keeps only the segments that are literal words of some template;
    every other segment becomes `{?}`, so an identifier never reaches a log or a dead letter.
    """
    parts = path.split("?", 1)[0].split("/")
    for template in _ROUTE_PARTS:
        if len(template) == len(parts) and all(
            t.startswith("{") or t == part for t, part in zip(template, parts, strict=True)
        ):
            return "/".join(template)
    return "/".join(part if part in _LITERAL_PARTS else "{?}" for part in parts)


def build_operation(job: Job, settings: Settings) -> HttpOperation:
    """The request for `job`; identify/track/page go to Pipelines when data_api is `pipelines`."""
    if job.kind.family.value == "track" and settings.data_api == "pipelines":
        return pipelines_operation(job)
    return _TRACK_V1.get(job.kind, _app)(job)


def _track(method: str, path: str, body: dict[str, Any] | None = None) -> HttpOperation:
    return HttpOperation(api="track", bucket="track", method=method, path=path, json=body)


def _customer(job: Job) -> str:
    return f"/api/v1/customers/{segment(job.payload['user_id'])}"


def _event_body(job: Job, name_key: str) -> dict[str, Any]:
    p = job.payload
    # The job id is the event's dedup id: a redelivered event is not counted twice.
    body: dict[str, Any] = {"name": p[name_key], "data": p["properties"], "id": job.id}
    if p.get("timestamp") is not None:
        body["timestamp"] = p["timestamp"]
    return body


def _identify(job: Job) -> HttpOperation:
    body = dict(job.payload["traits"])
    if job.payload.get("timestamp") is not None:
        body["_timestamp"] = job.payload["timestamp"]
    return _track("PUT", _customer(job), body)


def _event(job: Job) -> HttpOperation:
    return _track("POST", f"{_customer(job)}/events", _event_body(job, "event"))


def _page(job: Job) -> HttpOperation:
    return _track("POST", f"{_customer(job)}/events", {**_event_body(job, "url"), "type": "page"})


def _anonymous(job: Job) -> HttpOperation:
    body = {"anonymous_id": job.payload["anonymous_id"], **_event_body(job, "event")}
    return _track("POST", "/api/v1/events", body)


def _add_device(job: Job) -> HttpOperation:
    p = job.payload
    device: dict[str, Any] = {"id": p["device_id"], "platform": p["platform"]}
    if p.get("last_used") is not None:
        device["last_used"] = p["last_used"]
    if p.get("attributes"):
        device["attributes"] = p["attributes"]
    return _track("PUT", f"{_customer(job)}/devices", {"device": device})


def _remove_device(job: Job) -> HttpOperation:
    return _track("DELETE", f"{_customer(job)}/devices/{segment(job.payload['device_id'])}")


#: Push `to` when the job names none: the published schema requires `to`, documenting `all` as
#: its default ("all of the person's devices"), so sending it changes nothing but conformance.
DEFAULT_PUSH_TO = "all"


def _app(job: Job) -> HttpOperation:
    if job.kind is Kind.BROADCAST:
        path = f"/v1/campaigns/{segment(job.payload['broadcast_id'])}/triggers"
        return HttpOperation("app", "broadcast", "POST", path, _broadcast_body(job.payload["body"]))
    channel = job.kind.value.removeprefix("send_")
    body = dict(job.payload)
    if job.kind is Kind.SEND_PUSH:
        body.setdefault("to", DEFAULT_PUSH_TO)
    if isinstance(body.get("headers"), dict):
        # A job stored before headers were converted at enqueue: send the documented JSON string.
        body["headers"] = email_headers_json(body["headers"].items())
    return HttpOperation("app", "transactional", "POST", f"/v1/send/{channel}", body)


def _broadcast_body(stored: dict[str, Any]) -> dict[str, Any]:
    """The trigger body. People ids are strings in the published schema (`ids[]`,
    `per_user_data[].id`); an int id is the same person as its decimal string (as in a path)."""
    body = dict(stored)
    if "ids" in body:
        body["ids"] = [str(item) if isinstance(item, int) else item for item in body["ids"]]
    if "per_user_data" in body:
        body["per_user_data"] = [
            {**item, "id": str(item["id"])} if isinstance(item.get("id"), int) else item
            for item in body["per_user_data"]
        ]
    return body


_TRACK_V1 = {
    Kind.IDENTIFY: _identify,
    Kind.TRACK: _event,
    Kind.TRACK_ANONYMOUS: _anonymous,
    Kind.PAGE: _page,
    Kind.DELETE: lambda job: _track("DELETE", _customer(job)),
    Kind.MERGE: lambda job: _track("POST", "/api/v1/merge_customers", dict(job.payload)),
    Kind.SUPPRESS: lambda job: _track("POST", f"{_customer(job)}/suppress"),
    Kind.UNSUPPRESS: lambda job: _track("POST", f"{_customer(job)}/unsuppress"),
    Kind.ADD_DEVICE: _add_device,
    Kind.REMOVE_DEVICE: _remove_device,
}

# -- Data Pipelines API (docs/customerio-api.md §5) --------------------------------------------

#: Without this header Pipelines answers 200 to bad data and silently drops it; with it, a bad
#: call is a real 400/401 that dead-letters (docs/customerio-api-notes.md, "Strict mode").
STRICT_HEADERS = {"X-Strict-Mode": "1"}

_SEMANTIC_EVENTS = {
    Kind.DELETE: "User Deleted",
    Kind.SUPPRESS: "User Suppressed",
    Kind.UNSUPPRESS: "User Unsuppressed",
    Kind.ADD_DEVICE: "Device Created or Updated",
    Kind.REMOVE_DEVICE: "Device Deleted",
}


def iso_timestamp(unix_seconds: int) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).isoformat().replace("+00:00", "Z")


def pipelines_operation(job: Job) -> HttpOperation:
    """The single Pipelines call for `job`. Its body carries `type` = the call's own type (the
    published `/track` and `/batch` schemas require it), so it is also the job's batch item."""
    p = job.payload
    body: dict[str, Any] = {"messageId": job.id}
    if p.get("timestamp") is not None:
        body["timestamp"] = iso_timestamp(p["timestamp"])
    if "user_id" in p:
        body["userId"] = p["user_id"]
    kind = job.kind
    if kind is Kind.IDENTIFY:
        path, extra = "identify", {"traits": p["traits"]}
    elif kind in (Kind.TRACK, Kind.TRACK_ANONYMOUS):
        path, extra = "track", {"event": p["event"], "properties": p["properties"]}
        if kind is Kind.TRACK_ANONYMOUS:
            extra["anonymousId"] = p["anonymous_id"]
    elif kind is Kind.PAGE:
        path, extra = "page", {"name": p["url"], "properties": {"url": p["url"], **p["properties"]}}
    elif kind is Kind.MERGE:
        # Pipelines merges with alias: previousId is folded into userId.
        primary, secondary = p["primary"], p["secondary"]
        path, extra = (
            "alias",
            {
                "userId": next(iter(primary.values())),
                "previousId": next(iter(secondary.values())),
            },
        )
    else:
        path, extra = "track", {"event": _SEMANTIC_EVENTS[kind]}
        if kind in (Kind.ADD_DEVICE, Kind.REMOVE_DEVICE):
            device: dict[str, Any] = {"token": p["device_id"]}
            if kind is Kind.ADD_DEVICE:
                device["type"] = p["platform"]
                extra["properties"] = dict(p.get("attributes") or {})
            extra["context"] = {"device": device}
    body.update(extra)
    body["type"] = path
    return HttpOperation(
        "pipelines", "pipelines", "POST", f"/v1/{path}", body, headers=dict(STRICT_HEADERS)
    )


def email_headers_json(pairs: Iterable[tuple[object, object]]) -> str:
    """Header (name, value) pairs as the JSON string Customer.io's `/v1/send/email` takes:
    `[{"name": ..., "value": ...}]`, unchecked (the producer checks them at enqueue)."""
    return jsonutil.dumps([{"name": name, "value": text} for name, text in pairs])
