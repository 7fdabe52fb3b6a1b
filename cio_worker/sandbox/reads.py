"""Answers of the App API's read endpoints: people search (cursor-paged), a person's attributes,
segments, campaigns, a campaign's metrics, broadcasts and one delivery.

Shapes follow Customer.io's App API reference: search answers `identifiers`, `ids` and `next`
(`?start=<next>` gives the next page, an empty `next` ends the list; `limit` is 1..1000, default
50); lists of segments, campaigns and broadcasts come in one answer, as Customer.io sends them.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Mapping
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

Query = Mapping[str, str]


class QueryError(ValueError):
    """A query parameter breaks a rule; the message names it."""


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
def _search(data: AppData, params: Mapping[str, str], query: Query, body: Any) -> Reply:
    limit = _int_param(query, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT) or DEFAULT_LIMIT
    offset = decode_cursor(query["start"]) if query.get("start") else 0
    found = [person for person in data.people if matches(person, body["filter"])]
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


def _attributes(data: AppData, params: Mapping[str, str], query: Query, body: Any) -> Reply:
    id_type = query.get("id_type") or "id"
    if id_type not in ("id", "email", "cio_id"):
        raise QueryError("id_type must be one of id, email, cio_id")
    person = data.find_person(params["customer_id"], id_type)
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


def _metrics(data: AppData, params: Mapping[str, str], query: Query, body: Any) -> Reply:
    campaign_id = params["campaign_id"]
    if not campaign_id.isascii() or not campaign_id.isdigit():
        raise QueryError("campaign_id must be a number")
    if not any(c["id"] == int(campaign_id) for c in data.campaigns):
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


def _message(data: AppData, params: Mapping[str, str], query: Query, body: Any) -> Reply:
    message = data.messages.get(params["message_id"])
    if message is None:
        return meta_error(404, "message not found")
    return Reply(200, {"message": message})


def _listing(key: str) -> Callable[[AppData, Mapping[str, str], Query, Any], Reply]:
    def answer(data: AppData, params: Mapping[str, str], query: Query, body: Any) -> Reply:
        return Reply(200, {key: getattr(data, key)})

    return answer


_ANSWERS: dict[str, Callable[[AppData, Mapping[str, str], Query, Any], Reply]] = {
    "search_people": _search,
    "person_attributes": _attributes,
    "segments": _listing("segments"),
    "campaigns": _listing("campaigns"),
    "campaign_metrics": _metrics,
    "broadcasts": _listing("broadcasts"),
    "message": _message,
}


def answer(
    name: str, data: AppData, params: Mapping[str, str], query: Query, body: object
) -> Reply:
    """The reply of read endpoint `name`; a bad query parameter is a 400 naming it."""
    try:
        return _ANSWERS[name](data, params, query, body)
    except QueryError as exc:
        return meta_error(400, str(exc))
