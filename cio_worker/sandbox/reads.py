"""Answers of the App API's read endpoints: people search (cursor-paged), a person's attributes,
segments, campaigns, a campaign's metrics, broadcasts, one delivery, and what was sent: the
deliveries of a transactional message or to a person, and a broadcast's triggers.

Shapes follow Customer.io's App API reference: search answers `identifiers`, `ids` and `next`
(`?start=<next>` gives the next page, an empty `next` ends the list; `limit` is 1..1000, default
50); lists of segments, campaigns and broadcasts come in one answer, as Customer.io sends them.
Delivery listings answer `{"messages": [MessageObject...], "next"}`, newest first, paged the
same way, over `created` in [start_ts, end_ts] (inclusive; the last 6 months by default). A
delivery or trigger shows only once the listing lag has passed since it was accepted.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cio_worker.sandbox.appdata import AppData, campaign_series
from cio_worker.sandbox.responses import Reply, meta_error

#: Customer.io's default and largest page of a people search.
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
#: Seconds per metrics resolution, and the periods answered when no start/end is given.
_RESOLUTIONS = {
    "hours": (3600, 24),
    "days": (86_400, 45),
    "weeks": (7 * 86_400, 12),
    "months": (30 * 86_400, 12),
}
_RESOLUTION_ALIASES = {"hourly": "hours", "daily": "days", "weekly": "weeks", "monthly": "months"}
#: Most periods one metrics answer holds.
MAX_PERIODS = 1000
#: Delivery listings: the window when no start_ts/end_ts is given (6 months), and the widest one
#: answered (12 months for a transactional message, 6 for a person), seconds.
_SIX_MONTHS_S = 183 * 86_400
_WIDEST_WINDOW_S = {"transactional_messages": 2 * _SIX_MONTHS_S, "person_messages": _SIX_MONTHS_S}
#: The `metric` and `state` filters of a transactional message's deliveries.
METRICS = (
    "attempted",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "converted",
    "bounced",
    "spammed",
    "unsubscribed",
    "dropped",
    "failed",
    "undeliverable",
)
STATES = ("failed", "sent", "drafted", "attempted")
_FAILED_METRICS = frozenset({"failed", "bounced", "dropped", "undeliverable"})

Query = Mapping[str, str]


class QueryError(ValueError):
    """A query parameter breaks a rule; the message names it."""


@dataclass(frozen=True)
class View:
    """What one read sees: the workspace, and what decides which accepted sends show yet.

    Attributes:
        data: the workspace and what the sandbox accepted.
        clock_now: now on the sandbox clock (`SandboxConfig.clock`), for the listing lag.
        lag_s: the listing lag in force.
        missing_broadcast_ids: broadcasts that do not exist (404).
        wall_now: now in Unix seconds, for the default time window of delivery listings.
    """

    data: AppData
    clock_now: float = math.inf
    lag_s: float = 0.0
    missing_broadcast_ids: frozenset[int] = frozenset()
    wall_now: int = field(default_factory=lambda: int(time.time()))


# -- Search filter (checked as a body in checks_app.py), evaluated per person --------------------
def _text(value: object) -> str:
    # Customer.io compares attribute values as text: true matches "true".
    return str(value).lower() if isinstance(value, bool) else str(value)


def matches(person: Mapping[str, Any], condition: Mapping[str, Any]) -> bool:
    """Whether `person` is in the audience `condition` describes (already checked)."""
    ((key, inner),) = condition.items()
    if key == "and":
        return all(matches(person, item) for item in inner)
    if key == "or":
        return any(matches(person, item) for item in inner)
    if key == "not":
        return not matches(person, inner)
    if key == "segment":
        return bool(inner["id"] in person["segments"])
    attributes = person["attributes"]
    if inner["operator"] == "exists":
        return bool(inner["field"] in attributes)
    return inner["field"] in attributes and _text(attributes[inner["field"]]) == _text(
        inner["value"]
    )


# -- Cursors and query parameters ----------------------------------------------------------------
def encode_cursor(offset: int) -> str:
    """An opaque `next` token for the page starting at `offset`."""
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def decode_cursor(token: str) -> int:
    """The offset inside a `start` token; QueryError if it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise QueryError("start is not a valid page token") from None
    prefix, _, number = text.partition(":")
    if prefix != "offset" or not number.isdigit():
        raise QueryError("start is not a valid page token")
    return int(number)


def _int_param(query: Query, name: str, low: int, high: int, default: int | None) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise QueryError(f"{name} must be an integer from {low} to {high}")
    return int(raw)


# -- Answers --------------------------------------------------------------------------------------
def _search(view: View, params: Mapping[str, str], query: Query, body: Any) -> Reply:
    limit = _int_param(query, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT) or DEFAULT_LIMIT
    offset = decode_cursor(query["start"]) if query.get("start") else 0
    found = [person for person in view.data.people if matches(person, body["filter"])]
    page = found[offset : offset + limit]
    more = offset + limit < len(found)
    return Reply(
        200,
        {
            "identifiers": [{k: p[k] for k in ("email", "id", "cio_id")} for p in page],
            "ids": [person["id"] for person in page],
            "next": encode_cursor(offset + limit) if more else "",
        },
    )


def _attributes(view: View, params: Mapping[str, str], query: Query, body: Any) -> Reply:
    id_type = query.get("id_type") or "id"
    if id_type not in ("id", "email", "cio_id"):
        raise QueryError("id_type must be one of id, email, cio_id")
    person = view.data.find_person(params["customer_id"], id_type)
    if person is None:
        return meta_error(404, "customer not found")
    identifiers = {key: person[key] for key in ("email", "id", "cio_id")}
    customer = {
        "id": person["id"],
        "identifiers": identifiers,
        "attributes": person["attributes"],
        "timestamps": person["timestamps"],
        "unsubscribed": person["unsubscribed"],
        "devices": person["devices"],
    }
    return Reply(200, {"customer": customer})


def _metrics(view: View, params: Mapping[str, str], query: Query, body: Any) -> Reply:
    campaign_id = params["campaign_id"]
    if not campaign_id.isascii() or not campaign_id.isdigit():
        raise QueryError("campaign_id must be a number")
    if not any(c["id"] == int(campaign_id) for c in view.data.campaigns):
        return meta_error(404, f"campaign {campaign_id} not found")
    version = query.get("version")
    if version not in ("1", "2"):
        raise QueryError("version is required: 1 or 2 (2 recommended)")
    return Reply(200, {"metric": {"series": campaign_series(int(campaign_id), _periods(query))}})


def _periods(query: Query) -> int:
    """How many periods a metrics request covers (version 2: res/start/end; 1: period/steps)."""
    if query.get("version") == "1":
        unit = query.get("period") or "days"
        if unit not in _RESOLUTIONS:
            raise QueryError("period must be one of hours, days, weeks, months")
        most = _RESOLUTIONS[unit][1]
        return _int_param(query, "steps", 0, 120, 0) or most
    res = query.get("res") or "days"
    res = _RESOLUTION_ALIASES.get(res, res)
    if res not in _RESOLUTIONS:
        raise QueryError("res must be one of hours, days, weeks, months")
    seconds, default = _RESOLUTIONS[res]
    start = _int_param(query, "start", 0, 9_999_999_999, None)
    end = _int_param(query, "end", 0, 9_999_999_999, None)
    if start is None or end is None:
        return default
    if end <= start:
        raise QueryError("end must be after start")
    return min(MAX_PERIODS, math.ceil((end - start) / seconds))


def _message(view: View, params: Mapping[str, str], query: Query, body: Any) -> Reply:
    message_id = params["message_id"]
    message = view.data.messages.get(message_id)
    if message is None or not view.data.visible(message_id, view.clock_now, view.lag_s):
        return meta_error(404, "message not found")
    return Reply(200, {"message": message})


def _listing(key: str) -> Answer:
    def answer(view: View, params: Mapping[str, str], query: Query, body: Any) -> Reply:
        return Reply(200, {key: getattr(view.data, key)})

    return answer


# -- What was sent -------------------------------------------------------------------------------
def _transactional_messages(
    view: View, params: Mapping[str, str], query: Query, body: Any
) -> Reply:
    template_id = _path_int(params["transactional_id"], "transactional_id")
    metric = _choice(query, "metric", METRICS)
    state = _choice(query, "state", STATES)
    found = [
        message
        for message in _in_window(view, query, "transactional_messages")
        if message["message_template_id"] == template_id
        and (metric is None or metric in message["metrics"])
        and (state is None or delivery_state(message) == state)
    ]
    return _messages_page(found, query)


def _person_messages(view: View, params: Mapping[str, str], query: Query, body: Any) -> Reply:
    id_type = query.get("id_type") or "id"
    if id_type == "phone":
        raise QueryError("id_type phone: phone is not an identifier in this workspace")
    if id_type not in ("id", "email", "cio_id"):
        raise QueryError("id_type must be one of id, email, phone, cio_id")
    wanted = params["customer_id"]
    if id_type == "email":
        wanted = wanted.lower()
    found = [
        message
        for message in _in_window(view, query, "person_messages")
        if _identifier(message, id_type) == wanted
    ]
    return _messages_page(found, query)


def _broadcast_triggers(view: View, params: Mapping[str, str], query: Query, body: Any) -> Reply:
    broadcast_id = _broadcast_id(view, params)
    triggers = view.data.visible_triggers(broadcast_id, view.clock_now, view.lag_s)
    return Reply(200, {"triggers": triggers})


def _broadcast_trigger(view: View, params: Mapping[str, str], query: Query, body: Any) -> Reply:
    broadcast_id = _broadcast_id(view, params)
    trigger_id = _path_int(params["trigger_id"], "trigger_id")
    trigger = view.data.triggers.get(trigger_id)
    if (
        trigger is None
        or trigger["broadcast_id"] != broadcast_id
        or not view.data.visible(trigger_id, view.clock_now, view.lag_s)
    ):
        return meta_error(404, f"trigger {trigger_id} of broadcast {broadcast_id} not found")
    return Reply(200, trigger)


def delivery_state(message: Mapping[str, Any]) -> str:
    """How the `state` filter reads a delivery: failed, sent, drafted or attempted."""
    metrics = message["metrics"]
    if message["failure_message"] or _FAILED_METRICS & set(metrics):
        return "failed"
    if "sent" in metrics:
        return "sent"
    if "drafted" in metrics:
        return "drafted"
    return "attempted"


def _broadcast_id(view: View, params: Mapping[str, str]) -> int:
    broadcast_id = _path_int(params["broadcast_id"], "broadcast_id")
    if broadcast_id in view.missing_broadcast_ids:
        raise _NotFound(f"broadcast {broadcast_id} not found")
    return broadcast_id


def _in_window(view: View, query: Query, name: str) -> list[dict[str, Any]]:
    """Visible deliveries, newest first, created within the request's [start_ts, end_ts]."""
    start = _int_param(query, "start_ts", 0, 9_999_999_999, None)
    end = _int_param(query, "end_ts", 0, 9_999_999_999, None)
    if start is not None and end is not None and end < start:
        raise QueryError("end_ts must not be before start_ts")
    if end is None:
        end = view.wall_now if start is None else max(view.wall_now, start)
    if start is None:
        start = end - _SIX_MONTHS_S
    # A wider range answers the newest part only, as Customer.io does.
    start = max(start, end - _WIDEST_WINDOW_S[name])
    return [
        message
        for message in view.data.visible_messages(view.clock_now, view.lag_s)
        if start <= message["created"] <= end
    ]


def _messages_page(found: list[dict[str, Any]], query: Query) -> Reply:
    limit = _int_param(query, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT) or DEFAULT_LIMIT
    offset = decode_cursor(query["start"]) if query.get("start") else 0
    more = offset + limit < len(found)
    return Reply(
        200,
        {
            "messages": found[offset : offset + limit],
            "next": encode_cursor(offset + limit) if more else "",
        },
    )


def _identifier(message: Mapping[str, Any], id_type: str) -> str | None:
    value = message["customer_identifiers"].get(id_type)
    if value is None:
        return None
    return str(value).lower() if id_type == "email" else str(value)


def _path_int(value: str, name: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise QueryError(f"{name} must be a number")
    return int(value)


def _choice(query: Query, name: str, allowed: tuple[str, ...]) -> str | None:
    value = query.get(name) or None
    if value is not None and value not in allowed:
        raise QueryError(f"{name} must be one of {', '.join(allowed)}")
    return value


class _NotFound(LookupError):
    """The thing a read names does not exist: 404 with this message."""


Answer = Callable[[View, Mapping[str, str], Query, Any], Reply]

_ANSWERS: dict[str, Answer] = {
    "search_people": _search,
    "person_attributes": _attributes,
    "segments": _listing("segments"),
    "campaigns": _listing("campaigns"),
    "campaign_metrics": _metrics,
    "broadcasts": _listing("broadcasts"),
    "message": _message,
    "transactional_messages": _transactional_messages,
    "person_messages": _person_messages,
    "broadcast_triggers": _broadcast_triggers,
    "broadcast_trigger": _broadcast_trigger,
}


def answer(
    name: str, view: View | AppData, params: Mapping[str, str], query: Query, body: object
) -> Reply:
    """The reply of read endpoint `name` (a bare AppData reads with no lag); a bad query or path
    parameter is a 400 naming it."""
    if isinstance(view, AppData):
        view = View(view)
    try:
        return _ANSWERS[name](view, params, query, body)
    except QueryError as exc:
        return meta_error(400, str(exc))
    except _NotFound as exc:
        return meta_error(404, str(exc))
