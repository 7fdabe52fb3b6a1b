"""Answers of the App API's reads of what was sent: the deliveries of a transactional message or
to a person, and a broadcast's triggers.

Delivery listings answer `{"messages": [MessageObject...], "next"}`, newest first, cursor-paged
like a people search, over `created` in [start_ts, end_ts] (inclusive; the last 6 months by
default). A delivery or trigger shows only once the listing lag has passed since it was accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cio_worker.sandbox.read_params import (
    NotFound,
    Query,
    QueryError,
    View,
    choice_param,
    int_param,
    page,
    path_int,
)
from cio_worker.sandbox.responses import Reply, meta_error

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


def transactional_messages(view: View, params: Mapping[str, str], query: Query, body: Any) -> Reply:
    template_id = path_int(params["transactional_id"], "transactional_id")
    metric = choice_param(query, "metric", METRICS)
    state = choice_param(query, "state", STATES)
    found = [
        message
        for message in _in_window(view, query, "transactional_messages")
        if message["message_template_id"] == template_id
        and (metric is None or metric in message["metrics"])
        and (state is None or delivery_state(message) == state)
    ]
    return _messages_page(found, query)


def person_messages(view: View, params: Mapping[str, str], query: Query, body: Any) -> Reply:
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


def broadcast_triggers(view: View, params: Mapping[str, str], query: Query, body: Any) -> Reply:
    broadcast_id = _broadcast_id(view, params)
    triggers = view.data.visible_triggers(broadcast_id, view.clock_now, view.lag_s)
    return Reply(200, {"triggers": triggers})


def broadcast_trigger(view: View, params: Mapping[str, str], query: Query, body: Any) -> Reply:
    broadcast_id = _broadcast_id(view, params)
    trigger_id = path_int(params["trigger_id"], "trigger_id")
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
    broadcast_id = path_int(params["broadcast_id"], "broadcast_id")
    if broadcast_id in view.missing_broadcast_ids:
        raise NotFound(f"broadcast {broadcast_id} not found")
    return broadcast_id


def _in_window(view: View, query: Query, name: str) -> list[dict[str, Any]]:
    """Visible deliveries, newest first, created within the request's [start_ts, end_ts]."""
    start = int_param(query, "start_ts", 0, 9_999_999_999, None)
    end = int_param(query, "end_ts", 0, 9_999_999_999, None)
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
    messages, next_token = page(found, query)
    return Reply(200, {"messages": messages, "next": next_token})


def _identifier(message: Mapping[str, Any], id_type: str) -> str | None:
    value = message["customer_identifiers"].get(id_type)
    if value is None:
        return None
    return str(value).lower() if id_type == "email" else str(value)
