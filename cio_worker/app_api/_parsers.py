"""Parsers of the App API's answers into the typed results of _models.py.

Pure functions: strict about the shape Customer.io promises, lenient about optional fields. A 2xx
body of the wrong shape is an `UnexpectedResponseError`, never an empty result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cio_worker.app_api._models import (
    Broadcast,
    Campaign,
    CampaignMetrics,
    Delivery,
    Device,
    Person,
    PersonRef,
    Segment,
    Trigger,
    delivery_status,
)
from cio_worker.errors import UnexpectedResponseError


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UnexpectedResponseError(f"{where}: expected a JSON object")
    return value


def _items(body: object, key: str, where: str) -> list[Mapping[str, Any]]:
    items = _object(body, where).get(key)
    if not isinstance(items, list) or not all(isinstance(item, Mapping) for item in items):
        raise UnexpectedResponseError(f"{where}: `{key}` is not a list of objects")
    return items


def _cursor(body: object) -> str | None:
    value = _object(body, "page").get("next")
    return str(value) if value else None


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _flag(value: object) -> bool | None:
    # Profile attributes come back as strings: "true"/"false".
    return value if isinstance(value, bool) else {"true": True, "false": False}.get(str(value))


def _tags(value: object) -> tuple[str, ...]:
    return tuple(str(tag) for tag in value) if isinstance(value, list) else ()


def _id(item: Mapping[str, Any], where: str) -> int:
    value = _int(item.get("id"))
    if value is None:
        raise UnexpectedResponseError(f"{where}: an item has no integer id")
    return value


def parse_search_page(body: object) -> tuple[list[PersonRef], str | None]:
    """One page of `POST /v1/customers`: `identifiers` (or the older `ids`) and `next`."""
    where = "POST /v1/customers"
    if "identifiers" in _object(body, where):
        people = [
            PersonRef(_text(i.get("cio_id")), _text(i.get("id")), _text(i.get("email")))
            for i in _items(body, "identifiers", where)
        ]
    else:
        ids = _object(body, where).get("ids")
        if not isinstance(ids, list):
            raise UnexpectedResponseError(f"{where}: neither `identifiers` nor `ids` is a list")
        people = [PersonRef(None, _text(value), None) for value in ids]
    return people, _cursor(body)


def parse_person(body: object) -> Person:
    """`GET /v1/customers/{id}/attributes`: `{"customer": {...}}`."""
    customer = _object(_object(body, "attributes").get("customer"), "attributes: customer")
    identifiers = customer.get("identifiers") or {}
    attributes = dict(customer.get("attributes") or {})
    timestamps = customer.get("timestamps") or {}
    devices = customer.get("devices") or []
    return Person(
        cio_id=_text(identifiers.get("cio_id") or attributes.get("cio_id")),
        id=_text(identifiers.get("id") or customer.get("id")),
        email=_text(identifiers.get("email") or attributes.get("email")),
        attributes=attributes,
        timestamps={name: t for name, t in timestamps.items() if _int(t) is not None},
        unsubscribed=bool(_flag(customer.get("unsubscribed", attributes.get("unsubscribed")))),
        devices=tuple(
            Device(str(d.get("id")), _text(d.get("platform")), _int(d.get("last_used")))
            for d in devices
            if isinstance(d, Mapping) and d.get("id") is not None
        ),
    )


def parse_segments(body: object) -> tuple[list[Segment], str | None]:
    """`GET /v1/segments`: `{"segments": [...]}`."""
    where = "GET /v1/segments"
    segments = [
        Segment(
            id=_id(s, where),
            name=str(s.get("name", "")),
            description=_text(s.get("description")),
            type=_text(s.get("type")),
            state=_text(s.get("state")),
            progress=_int(s.get("progress")),
            tags=_tags(s.get("tags")),
            created_at=_int(s.get("created_at")),
            updated_at=_int(s.get("updated_at")),
        )
        for s in _items(body, "segments", where)
    ]
    return segments, _cursor(body)


def parse_campaigns(body: object) -> tuple[list[Campaign], str | None]:
    """`GET /v1/campaigns`: `{"campaigns": [...]}`."""
    where = "GET /v1/campaigns"
    campaigns = [
        Campaign(
            id=_id(c, where),
            name=str(c.get("name", "")),
            state=_text(c.get("state")),
            active=_flag(c.get("active")),
            type=_text(c.get("type")),
            created=_int(c.get("created")),
            updated=_int(c.get("updated")),
            first_started=_int(c.get("first_started")),
            tags=_tags(c.get("tags")),
        )
        for c in _items(body, "campaigns", where)
    ]
    return campaigns, _cursor(body)


def parse_broadcasts(body: object) -> tuple[list[Broadcast], str | None]:
    """`GET /v1/broadcasts`: `{"broadcasts": [...]}`."""
    where = "GET /v1/broadcasts"
    broadcasts = [
        Broadcast(
            id=_id(b, where),
            name=str(b.get("name", "")),
            state=_text(b.get("state")),
            active=_flag(b.get("active")),
            created=_int(b.get("created")),
            updated=_int(b.get("updated")),
            tags=_tags(b.get("tags")),
        )
        for b in _items(body, "broadcasts", where)
    ]
    return broadcasts, _cursor(body)


def parse_metrics(body: object, campaign_id: int, res: str) -> CampaignMetrics:
    """`GET /v1/campaigns/{id}/metrics`: `{"metric": {"series": {name: [count, ...]}}}`."""
    where = f"GET /v1/campaigns/{campaign_id}/metrics"
    series = _object(_object(_object(body, where).get("metric"), where).get("series"), where)
    parsed: dict[str, tuple[int, ...]] = {}
    for metric, counts in series.items():
        if not isinstance(counts, list) or any(_int(count) is None for count in counts):
            raise UnexpectedResponseError(f"{where}: series {metric!r} is not a list of counts")
        parsed[str(metric)] = tuple(int(count) for count in counts)
    return CampaignMetrics(campaign_id, res, parsed)


def parse_delivery(body: object) -> Delivery:
    """`GET /v1/messages/{id}`: `{"message": {...}}`."""
    return _message(_object(_object(body, "message").get("message"), "GET /v1/messages: message"))


def parse_messages_page(body: object) -> tuple[list[Delivery], str | None]:
    """A page of `GET /v1/customers/{id}/messages` or `/v1/transactional/{id}/messages`:
    `{"messages": [...], "next": "<cursor>"}`."""
    items = _items(body, "messages", "messages listing")
    return [_message(item) for item in items], _cursor(body)


def parse_triggers(body: object) -> tuple[list[Trigger], str | None]:
    """`GET /v1/broadcasts/{id}/triggers`: `{"triggers": [{id, broadcast_id, created_at, ...}]}`."""
    triggers = []
    for item in _items(body, "triggers", "broadcast triggers"):
        if item.get("id") is None:
            raise UnexpectedResponseError("broadcast triggers: a trigger without an id")
        triggers.append(
            Trigger(
                id=str(item["id"]),
                broadcast_id=_int(item.get("broadcast_id")),
                created_at=_int(item.get("created_at")),
                processed_at=_int(item.get("processed_at")),
            )
        )
    return triggers, None


def _message(message: Mapping[str, Any]) -> Delivery:
    raw_metrics = message.get("metrics") or {}
    metrics = {str(name): int(t) for name, t in raw_metrics.items() if _int(t) is not None}
    return Delivery(
        id=str(message.get("id", "")),
        status=delivery_status(metrics),
        type=_text(message.get("type")),
        recipient=_text(message.get("recipient")),
        customer_id=_text(message.get("customer_id")),
        campaign_id=_int(message.get("campaign_id")),
        broadcast_id=_int(message.get("broadcast_id")),
        action_id=_int(message.get("action_id")),
        created=_int(message.get("created")),
        metrics=metrics,
        failure_message=_text(message.get("failure_message")),
        forgotten=bool(message.get("forgotten")),
        template_id=_int(message.get("message_template_id")),
        identifiers={
            str(k): str(v)
            for k, v in (message.get("customer_identifiers") or {}).items()
            if v is not None
        },
    )
