"""Answers of the App API's read endpoints: people search (cursor-paged), a person's attributes,
segments, campaigns, a campaign's metrics, broadcasts, one delivery, and what was sent (the
delivery and trigger listings, in sent_reads.py).

Shapes follow Customer.io's App API reference: search answers `identifiers`, `ids` and `next`
(`?start=<next>` gives the next page, an empty `next` ends the list; `limit` is 1..1000, default
50); lists of segments, campaigns and broadcasts come in one answer, as Customer.io sends them.
A delivery shows only once the listing lag has passed since it was accepted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from cio_worker.sandbox import sent_reads
from cio_worker.sandbox.appdata import AppData, campaign_series
from cio_worker.sandbox.read_params import NotFound, Query, QueryError, View, int_param, page
from cio_worker.sandbox.responses import Reply, meta_error

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

Answer = Callable[[View, Mapping[str, str], Query, Any], Reply]


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


# -- Answers --------------------------------------------------------------------------------------
def _search(view: View, params: Mapping[str, str], query: Query, body: Any) -> Reply:
    found = [person for person in view.data.people if matches(person, body["filter"])]
    people, next_token = page(found, query)
    return Reply(
        200,
        {
            "identifiers": [{k: p[k] for k in ("email", "id", "cio_id")} for p in people],
            "ids": [person["id"] for person in people],
            "next": next_token,
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
        return int_param(query, "steps", 0, 120, 0) or most
    res = query.get("res") or "days"
    res = _RESOLUTION_ALIASES.get(res, res)
    if res not in _RESOLUTIONS:
        raise QueryError("res must be one of hours, days, weeks, months")
    seconds, default = _RESOLUTIONS[res]
    start = int_param(query, "start", 0, 9_999_999_999, None)
    end = int_param(query, "end", 0, 9_999_999_999, None)
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


_ANSWERS: dict[str, Answer] = {
    "search_people": _search,
    "person_attributes": _attributes,
    "segments": _listing("segments"),
    "campaigns": _listing("campaigns"),
    "campaign_metrics": _metrics,
    "broadcasts": _listing("broadcasts"),
    "message": _message,
    "transactional_messages": sent_reads.transactional_messages,
    "person_messages": sent_reads.person_messages,
    "broadcast_triggers": sent_reads.broadcast_triggers,
    "broadcast_trigger": sent_reads.broadcast_trigger,
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
    except NotFound as exc:
        return meta_error(404, str(exc))
