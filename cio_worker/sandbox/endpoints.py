"""The route table: which method and path is which Customer.io endpoint.

Paths are matched as received, still percent-encoded, so an id like `user%2F1` stays one segment
(Starlette's own router matches the decoded path, where it would become two).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

from cio_worker.sandbox import checks_app, checks_pipelines, checks_track
from cio_worker.sandbox.checks import Check, no_checks
from cio_worker.sandbox.limits import Family

Api = Literal["track_v1", "track_v2", "app", "pipelines"]
#: What a successful call answers: `{}`, the region lookup, a delivery, a broadcast trigger, or
#: workspace data from an App API read (reads.py, by endpoint name).
ReplyKind = Literal["empty", "region", "delivery", "trigger", "read"]

_SEGMENT = r"[^/]+"


@dataclass(frozen=True)
class Endpoint:
    """One method + path of one API.

    Attributes:
        name: short name, unique within the API.
        api: which API the endpoint belongs to (decides auth and error shapes).
        family: which rate limit it counts against.
        method: HTTP method.
        pattern: regex over the raw path; named groups are the path parameters.
        check: body checks (checks*.py).
        reply: what a success answers.
        id_param: the path parameter recorded as `path_id`.
    """

    name: str
    api: Api
    family: Family
    method: str
    pattern: re.Pattern[str]
    check: Check
    reply: ReplyKind = "empty"
    id_param: str | None = None


@dataclass(frozen=True)
class Match:
    """An endpoint and its percent-decoded path parameters."""

    endpoint: Endpoint
    params: dict[str, str] = field(default_factory=dict)

    @property
    def path_id(self) -> str | None:
        """The decoded identifier from the path, if the endpoint has one."""
        param = self.endpoint.id_param
        return None if param is None else self.params[param]


def _path(template: str) -> re.Pattern[str]:
    """`/a/{x}/b` to a regex matching one raw segment per parameter."""
    regex = re.sub(r"\{(\w+)\}", lambda m: f"(?P<{m.group(1)}>{_SEGMENT})", template)
    return re.compile(f"^{regex}$")


def _track_v1(name: str, method: str, template: str, check: Check) -> Endpoint:
    id_param = "id" if "{id}" in template else None
    return Endpoint(name, "track_v1", "track", method, _path(template), check, id_param=id_param)


def _track_v2(name: str, template: str, check: Check) -> Endpoint:
    return Endpoint(name, "track_v2", "track", "POST", _path(template), check)


def _pipelines(name: str, check: Check) -> Endpoint:
    return Endpoint(name, "pipelines", "pipelines", "POST", _path(f"/v1/{name}"), check)


def _send(channel: str, check: Check) -> Endpoint:
    path = _path(f"/v1/send/{channel}")
    return Endpoint(f"send_{channel}", "app", "transactional", "POST", path, check, "delivery")


def _read(name: str, method: str, template: str, check: Check = no_checks) -> Endpoint:
    """An App API read: Bearer auth, the 10/s `app` limit, answered from the workspace data."""
    found = re.search(r"\{(\w+)\}", template)
    id_param = found.group(1) if found else None
    return Endpoint(name, "app", "app", method, _path(template), check, "read", id_param)


_CUSTOMER = "/api/v1/customers/{id}"

ENDPOINTS: tuple[Endpoint, ...] = (
    _track_v1("identify", "PUT", _CUSTOMER, checks_track.check_identify),
    _track_v1("delete", "DELETE", _CUSTOMER, checks_track.check_path_person),
    _track_v1("event", "POST", f"{_CUSTOMER}/events", checks_track.check_person_event),
    _track_v1("anonymous_event", "POST", "/api/v1/events", checks_track.check_anonymous_event),
    _track_v1("add_device", "PUT", f"{_CUSTOMER}/devices", checks_track.check_add_device),
    _track_v1(
        "delete_device", "DELETE", f"{_CUSTOMER}/devices/{{token}}", checks_track.check_path_person
    ),
    _track_v1("suppress", "POST", f"{_CUSTOMER}/suppress", checks_track.check_path_person),
    _track_v1("unsuppress", "POST", f"{_CUSTOMER}/unsuppress", checks_track.check_path_person),
    _track_v1("merge", "POST", "/api/v1/merge_customers", checks_track.check_merge),
    Endpoint(
        "region", "track_v1", "track", "GET", _path("/api/v1/accounts/region"), no_checks, "region"
    ),
    _track_v2("entity", "/api/v2/entity", checks_track.check_entity),
    _track_v2("batch", "/api/v2/batch", checks_track.check_batch),
    _send("email", checks_app.check_send_email),
    _send("push", checks_app.check_send),
    _send("sms", checks_app.check_send),
    Endpoint(
        "broadcast",
        "app",
        "broadcast",
        "POST",
        _path("/v1/campaigns/{broadcast_id}/triggers"),
        checks_app.check_broadcast,
        "trigger",
        id_param="broadcast_id",
    ),
    _read("search_people", "POST", "/v1/customers", checks_app.check_search),
    _read("person_attributes", "GET", "/v1/customers/{customer_id}/attributes"),
    _read("segments", "GET", "/v1/segments"),
    _read("campaigns", "GET", "/v1/campaigns"),
    _read("campaign_metrics", "GET", "/v1/campaigns/{campaign_id}/metrics"),
    _read("broadcasts", "GET", "/v1/broadcasts"),
    _read("message", "GET", "/v1/messages/{message_id}"),
    # What was sent: deliveries and triggers the sandbox accepted (sent_reads.py; listing lag).
    _read("transactional_messages", "GET", "/v1/transactional/{transactional_id}/messages"),
    _read("person_messages", "GET", "/v1/customers/{customer_id}/messages"),
    _read("broadcast_triggers", "GET", "/v1/broadcasts/{broadcast_id}/triggers"),
    _read("broadcast_trigger", "GET", "/v1/campaigns/{broadcast_id}/triggers/{trigger_id}"),
    *(_pipelines(name, checks_pipelines.check_call(name)) for name in checks_pipelines.CALL_TYPES),
    _pipelines("batch", checks_pipelines.check_batch),
)


def resolve(method: str, raw_path: str) -> tuple[Match | None, tuple[str, ...]]:
    """The endpoint for `method` on `raw_path` (percent-encoded, no query string).

    Returns:
        (match, ()) when found; (None, allowed methods) when only the method is wrong;
        (None, ()) for an unknown path.
    """
    allowed: list[str] = []
    for endpoint in ENDPOINTS:
        found = endpoint.pattern.match(raw_path)
        if found is None:
            continue
        if endpoint.method != method:
            allowed.append(endpoint.method)
            continue
        params = {name: unquote(value) for name, value in found.groupdict().items()}
        return Match(endpoint, params), ()
    return None, tuple(allowed)
