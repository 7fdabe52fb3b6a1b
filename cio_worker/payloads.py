"""Jobs: the frozen record the producer stores and the worker delivers, and one builder per kind.

A builder validates its arguments (validation.py) and returns the job's payload: a plain dict,
independent of which Customer.io API will carry it (operations.py decides that at delivery).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cio_worker import jsonutil
from cio_worker import validation as v
from cio_worker.errors import ValidationError
from cio_worker.kinds import Family, Kind

#: An App API message body (with attachments, which may reach 2 MB) is capped at 3 MB.
MAX_MESSAGE_BYTES = 3 * 1024 * 1024
#: Recipients across to, cc and bcc of one transactional email.
MAX_EMAIL_RECIPIENTS = 15
#: Broadcast `ids` and `per_user_data` entries.
MAX_BROADCAST_AUDIENCE = 10_000

_COMMON_MESSAGE_FIELDS = frozenset(
    {"send_at", "language", "disable_message_retention", "send_to_unsubscribed", "queue_draft"}
)
EMAIL_FIELDS = _COMMON_MESSAGE_FIELDS | {
    "from",
    "subject",
    "body",
    "body_plain",
    "body_amp",
    "cc",
    "bcc",
    "reply_to",
    "preheader",
    "headers",
    "attachments",
    "tracked",
    "fake_bcc",
    "disable_css_preprocessing",
    "auto_create",
}
PUSH_FIELDS = _COMMON_MESSAGE_FIELDS | {
    "title",
    "message",
    "image_url",
    "link",
    "sound",
    "custom_data",
    "custom_payload",
    "custom_device",
}
SMS_FIELDS = _COMMON_MESSAGE_FIELDS | {"tracked"}
BROADCAST_AUDIENCE_KEYS = ("recipients", "emails", "ids", "per_user_data", "data_file_url")


@dataclass(frozen=True, slots=True)
class Job:
    """One unit of delivery. `id` is a ULID, also sent as the event dedup id where one exists."""

    id: str
    kind: Kind
    payload: dict[str, Any]
    created_at: float

    @property
    def family(self) -> Family:
        return self.kind.family

    def to_json(self) -> str:
        return jsonutil.dumps(
            {"id": self.id, "kind": self.kind.value, "payload": self.payload, "t": self.created_at}
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Job:
        data = json.loads(raw)
        return cls(
            id=data["id"], kind=Kind(data["kind"]), payload=data["payload"], created_at=data["t"]
        )


def _track_op(
    kind: Kind, payload: dict[str, Any], *, part: tuple[str, int] | None = None
) -> dict[str, Any]:
    # Every Track kind must fit one v2 operation (32 KB), so batching never meets an oversize job.
    # `part` names a field with a looser limit of its own (event data: 100,000 bytes); it is
    # measured only when the operation is too big, so the common case encodes JSON once, and an
    # oversize field is still named in the error.
    try:
        v.operation_size("payload", payload)
    except ValidationError:
        if part is not None:
            name, limit = part
            if (size := v.encoded_len(payload[name])) > limit:
                raise ValidationError(
                    name, f"must be at most {limit} bytes as JSON, got {size}"
                ) from None
        raise
    return payload


def identify(user_id: object, traits: object, timestamp: object) -> dict[str, Any]:
    return _track_op(
        Kind.IDENTIFY,
        {
            "user_id": v.identifier("user_id", user_id),
            "traits": v.attributes("traits", traits),
            "timestamp": v.timestamp("timestamp", timestamp),
        },
    )


def event(
    kind: Kind, id_field: str, person: object, name: object, properties: object, timestamp: object
) -> dict[str, Any]:
    """Person events, anonymous events and page views share one shape."""
    name_field = "url" if kind is Kind.PAGE else "event"
    name_value = (
        v.identifier("url", name, max_bytes=v.MAX_EVENT_NAME_BYTES)
        if kind is Kind.PAGE
        else v.event_name(name_field, name)
    )
    return _track_op(
        kind,
        {
            id_field: v.identifier(id_field, person),
            name_field: name_value,
            "properties": v.json_object("properties", properties),
            "timestamp": v.timestamp("timestamp", timestamp),
        },
        part=("properties", v.MAX_EVENT_DATA_BYTES),
    )


def person_only(user_id: object) -> dict[str, Any]:
    return {"user_id": v.identifier("user_id", user_id)}


def merge(primary: object, secondary: object) -> dict[str, Any]:
    first = v.person_reference("primary", primary)
    second = v.person_reference("secondary", secondary)
    if first == second:
        raise ValidationError("secondary", "must differ from primary")
    return {"primary": first, "secondary": second}


def add_device(
    user_id: object, device_id: object, platform: object, last_used: object, attributes: object
) -> dict[str, Any]:
    return _track_op(
        Kind.ADD_DEVICE,
        {
            "user_id": v.identifier("user_id", user_id),
            "device_id": v.identifier("device_id", device_id, max_bytes=1000),
            "platform": v.choice("platform", platform, ("ios", "android")),
            "last_used": v.timestamp("last_used", last_used),
            "attributes": _device_attributes(attributes),
        },
    )


def _device_attributes(value: object) -> dict[str, Any]:
    """Device attributes are strings only in Track v1 (e.g. push_enabled is "true"/"false")."""
    result = v.attributes("attributes", value)
    for name, item in result.items():
        if not isinstance(item, str):
            raise ValidationError(f"attributes.{name}", "device attribute values must be strings")
    return result


def remove_device(user_id: object, device_id: object) -> dict[str, Any]:
    return {
        "user_id": v.identifier("user_id", user_id),
        "device_id": v.identifier("device_id", device_id, max_bytes=1000),
    }


def message(
    kind: Kind,
    transactional_message_id: object,
    identifiers: object,
    to: object,
    message_data: object,
    fields: Mapping[str, object],
) -> dict[str, Any]:
    """A transactional email, push or SMS request body, validated field by field."""
    if isinstance(transactional_message_id, bool) or not isinstance(
        transactional_message_id, int | str
    ):
        raise ValidationError("transactional_message_id", "must be an int id or a trigger name")
    if isinstance(transactional_message_id, str) and not transactional_message_id.strip():
        raise ValidationError("transactional_message_id", "must not be empty")
    if isinstance(transactional_message_id, int) and transactional_message_id <= 0:
        raise ValidationError("transactional_message_id", "must be a positive int")
    if identifiers is None or identifiers == {}:
        raise ValidationError(
            "identifiers", "is required: one of id, email, cio_id of the recipient"
        )
    allowed = {Kind.SEND_EMAIL: EMAIL_FIELDS, Kind.SEND_PUSH: PUSH_FIELDS}.get(kind, SMS_FIELDS)
    extra = {("from" if key == "from_" else key): value for key, value in fields.items()}
    unknown = sorted(set(extra) - allowed)
    if unknown:
        raise ValidationError(
            unknown[0], f"is not a field of {kind.value}; allowed: {sorted(allowed)}"
        )
    body: dict[str, Any] = {
        "transactional_message_id": transactional_message_id,
        "identifiers": v.person_reference("identifiers", identifiers),
    }
    if to is not None:
        body["to"] = v.identifier("to", to, max_bytes=10_000)
    if message_data is not None:
        body["message_data"] = v.json_object("message_data", message_data)
    for key, value in extra.items():
        if value is not None:
            v.json_value(key, value)
            body[key] = value
    if kind is Kind.SEND_EMAIL:
        if "to" not in body:
            raise ValidationError("to", "is required for a transactional email (/v1/send/email)")
        _check_recipients(body)
    size = v.encoded_len(body)
    if size > MAX_MESSAGE_BYTES:
        raise ValidationError(
            "payload", f"must be at most {MAX_MESSAGE_BYTES} bytes as JSON, got {size}"
        )
    return body


def _check_recipients(body: Mapping[str, Any]) -> None:
    count = 0
    for key in ("to", "cc", "bcc"):
        value = body.get(key)
        if isinstance(value, str):
            count += len([part for part in value.split(",") if part.strip()])
        elif isinstance(value, list):
            count += len(value)
    if count > MAX_EMAIL_RECIPIENTS:
        raise ValidationError(
            "to", f"at most {MAX_EMAIL_RECIPIENTS} recipients across to, cc and bcc"
        )


def broadcast(
    broadcast_id: object, data: object, audience: Mapping[str, object], flags: Mapping[str, object]
) -> dict[str, Any]:
    """An API-triggered broadcast: at most one audience key, plus optional data and flags."""
    if isinstance(broadcast_id, bool) or not isinstance(broadcast_id, int) or broadcast_id <= 0:
        raise ValidationError("broadcast_id", "must be a positive int")
    given = {key: value for key, value in audience.items() if value is not None}
    if len(given) > 1:
        raise ValidationError(
            "/".join(sorted(given)), "a broadcast takes at most one audience key, got several"
        )
    body: dict[str, Any] = {}
    if data is not None:
        body["data"] = v.json_object("data", data)
    for key, value in given.items():
        v.json_value(key, value)
        if key in ("ids", "per_user_data", "emails"):
            if not isinstance(value, list | tuple) or not value:
                raise ValidationError(key, "must be a non-empty list")
            if len(value) > MAX_BROADCAST_AUDIENCE:
                raise ValidationError(
                    key, f"at most {MAX_BROADCAST_AUDIENCE} entries, got {len(value)}"
                )
            value = list(value)
        if key == "recipients" and (not isinstance(value, Mapping) or not value):
            raise ValidationError(
                key, "must be a non-empty filter dict (and/or/not, segment, attribute)"
            )
        if key == "per_user_data":
            entries: list[object] = list(value)  # type: ignore[call-overload]
            for index, item in enumerate(entries):
                if not isinstance(item, Mapping) or not (item.get("id") or item.get("email")):
                    raise ValidationError(f"per_user_data[{index}]", "needs an id or an email")
        body[key] = value
    for key, value in flags.items():
        if value is not None:
            if not isinstance(value, bool):
                raise ValidationError(key, "must be a bool")
            body[key] = value
    return {"broadcast_id": broadcast_id, "body": body}
