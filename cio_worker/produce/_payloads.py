"""Jobs: the frozen record the producer stores and the worker delivers, and one builder per kind.

A builder validates its arguments (validation.py) and returns the job's payload: a plain dict,
independent of which Customer.io API will carry it (customerio/_operations.py decides that at
delivery).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cio_worker import validation as v
from cio_worker.customerio import email_headers_json
from cio_worker.errors import ValidationError
from cio_worker.kinds import Kind

#: An App API message body (with attachments, which may reach 2 MB) is capped at 3 MB.
MAX_MESSAGE_BYTES = 3 * 1024 * 1024
#: Recipients across to, cc and bcc of one transactional email.
MAX_EMAIL_RECIPIENTS = 15
#: A message's `to` (one address or a comma-separated list), UTF-8.
MAX_TO_BYTES = 10_000
#: Broadcast `ids`, `emails` and `per_user_data` entries (Customer.io's API-triggered broadcast
#: limits: 10,000 recipients, 10,000 per-user entries).
MAX_BROADCAST_AUDIENCE = 10_000
#: A broadcast's `data` as JSON: Customer.io's "Trigger Data" limit, 50,000 bytes.
MAX_BROADCAST_DATA_BYTES = 50_000
#: A whole broadcast trigger body as JSON: Customer.io's "Trigger Payload" limit, 25 MB (read as
#: 25,000,000 bytes, the stricter meaning). Bulk audiences belong in `data_file_url`.
MAX_BROADCAST_BYTES = 25_000_000
#: Broadcast and transactional message ids are JSON integers; none exceeds a signed 64 bits.
MAX_OBJECT_ID = 2**63 - 1

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
_MESSAGE_FIELDS = {Kind.SEND_EMAIL: EMAIL_FIELDS, Kind.SEND_PUSH: PUSH_FIELDS}  # else SMS_FIELDS
#: At most a message body of an int id, identifiers and `to` as JSON (each character escaped as
#: `\uXXXX` at worst, 6 bytes): far below MAX_MESSAGE_BYTES, so `message` does not measure it.
UNMEASURED_MESSAGE_BYTES = 6 * (v.MAX_ID_BYTES + MAX_TO_BYTES) + 200
# The kinds bulk enqueues most, read once (here and in _jobs.py): in Python 3.11 reading
# `Kind.TRACK` costs about 0.1 µs, as much as a function call, and an event reads it twice.
KIND_IDENTIFY, KIND_TRACK, KIND_PAGE = Kind.IDENTIFY, Kind.TRACK, Kind.PAGE
KIND_SEND_EMAIL = Kind.SEND_EMAIL
_EVENT_PROPERTIES = ("properties", v.MAX_EVENT_DATA_BYTES)


#: A Track operation's payload and its compact JSON, which the bulk producer stores as it is.
Encoded = tuple[dict[str, Any], bytes]


def _track_op(
    payload: dict[str, Any], *, part: tuple[str, int] | None = None, unchecked: str | None = None
) -> Encoded:
    # Every Track kind must fit one v2 operation (32 KB), so batching never meets an oversize job.
    # `part` names a field with a looser limit of its own (event data: 100,000 bytes); it is
    # measured only when the operation is too big, so the common case encodes JSON once, and an
    # oversize field is still named in the error. `unchecked`: see `v.encode_checked`.
    encoded = v.encode_checked(payload, unchecked)
    if (size := len(encoded)) > v.MAX_OPERATION_BYTES:
        if part is not None:
            name, limit = part
            if (part_size := v.encoded_len(payload[name])) > limit:
                raise ValidationError(
                    name, f"must be at most {limit} bytes as JSON, got {part_size}"
                ) from None
        v.operation_size("payload", payload, size=size)  # raises: the operation is too big
    return payload, encoded


def identify(user_id: object, traits: object, timestamp: object) -> Encoded:
    return _track_op(
        {
            "user_id": v.identifier("user_id", user_id),
            "traits": v.attributes("traits", traits),
            "timestamp": v.timestamp("timestamp", timestamp),
        },
    )


def event(
    kind: Kind, id_field: str, person: object, name: object, properties: object, timestamp: object
) -> Encoded:
    """Person events, anonymous events and page views share one shape."""
    if kind is KIND_PAGE:
        name_field, name_value = "url", v.identifier("url", name, max_bytes=v.MAX_EVENT_NAME_BYTES)
    else:
        name_field, name_value = "event", v.event_name("event", name)
    # Flat properties (the common case) are checked by the encoder (v.encode_checked).
    flat = v.flat_json_object(properties)
    return _track_op(
        {
            id_field: v.identifier(id_field, person),
            name_field: name_value,
            "properties": v.json_object("properties", properties) if flat is None else flat,
            "timestamp": None if timestamp is None else v.timestamp("timestamp", timestamp),
        },
        part=_EVENT_PROPERTIES,
        unchecked=None if flat is None else "properties",
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
) -> Encoded:
    return _track_op(
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
    """A transactional email, push or SMS request body, validated field by field; a bulk send's
    common case the short way, deciding as the general one (tests/test_message_validation.py)."""
    message_id = transactional_message_id
    if type(message_id) is not int or not 0 < message_id <= MAX_OBJECT_ID:
        if isinstance(message_id, bool) or not isinstance(message_id, int | str):
            raise ValidationError("transactional_message_id", "must be an int id or a trigger name")
        if isinstance(message_id, str):
            if not message_id.strip():
                raise ValidationError("transactional_message_id", "must not be empty")
            v.text_size("transactional_message_id", message_id)
        elif not 0 < message_id <= MAX_OBJECT_ID:
            raise ValidationError("transactional_message_id", "must be a positive int (64 bits)")
    if identifiers is None or (not identifiers if type(identifiers) is dict else identifiers == {}):
        raise ValidationError(
            "identifiers", "is required: one of id, email, cio_id of the recipient"
        )
    extra: dict[str, object] = {}
    if fields:
        allowed = _MESSAGE_FIELDS.get(kind, SMS_FIELDS)
        extra = {("from" if key == "from_" else key): value for key, value in fields.items()}
        unknown = sorted(set(extra) - allowed)
        if unknown:
            raise ValidationError(
                unknown[0], f"is not a field of {kind.value}; allowed: {sorted(allowed)}"
            )
    body: dict[str, Any] = {
        "transactional_message_id": message_id,
        "identifiers": v.person_reference("identifiers", identifiers),
    }
    if to is not None:
        body["to"] = v.identifier("to", to, max_bytes=MAX_TO_BYTES)
    if message_data is not None:
        body["message_data"] = v.json_object("message_data", message_data)
    if extra:
        for key, value in extra.items():
            if value is not None:
                v.json_value(key, value)
                body[key] = value
        if "headers" in body:
            body["headers"] = email_headers(body["headers"])
    if kind is KIND_SEND_EMAIL:
        if "to" not in body:
            raise ValidationError("to", "is required for a transactional email (/v1/send/email)")
        _check_recipients(body)
    if extra or message_data is not None or type(message_id) is not int:
        size = v.encoded_len(body)
        if size > MAX_MESSAGE_BYTES:
            raise ValidationError(
                "payload", f"must be at most {MAX_MESSAGE_BYTES} bytes as JSON, got {size}"
            )
    return body


def email_headers(value: object) -> str:
    """An email's `headers` as Customer.io's schema asks: a JSON string of `[{name, value}]`.

    Accepts `{name: value}`, a list of `{"name", "value"}` objects, or that list already as a
    JSON string. Names and values must be non-empty ASCII strings without spaces (Customer.io's
    published rule for `/v1/send/email` `headers`).
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):  # RecursionError: `[[[[...` nested past the stack
            value = None
        if not isinstance(value, list):
            raise ValidationError(
                "headers", "a string must be a JSON array of {name, value} objects"
            )
    pairs: list[tuple[object, object]] = []
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if not isinstance(item, Mapping) or set(item) != {"name", "value"}:
                raise ValidationError(
                    f"headers[{index}]", "must be an object with exactly `name` and `value`"
                )
            pairs.append((item["name"], item["value"]))
    else:
        raise ValidationError(
            "headers", "must be a dict of header names to values (or a list of {name, value})"
        )
    for name, text in pairs:
        for part in (name, text):
            if not isinstance(part, str) or not part.isascii() or part.split() != [part]:
                raise ValidationError(
                    f"headers.{name}",
                    "header names and values must be non-empty ASCII strings without spaces",
                )
    return email_headers_json(pairs)


def _check_recipients(body: Mapping[str, Any]) -> None:
    to = body.get("to")
    if isinstance(to, str) and "," not in to and "cc" not in body and "bcc" not in body:
        return  # one recipient at most: the common case, without the count below
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
    if (
        isinstance(broadcast_id, bool)
        or not isinstance(broadcast_id, int)
        or not 0 < broadcast_id <= MAX_OBJECT_ID
    ):
        raise ValidationError("broadcast_id", "must be a positive int (64 bits)")
    given = {key: value for key, value in audience.items() if value is not None}
    if len(given) > 1:
        raise ValidationError(
            "/".join(sorted(given)), "a broadcast takes at most one audience key, got several"
        )
    body: dict[str, Any] = {}
    if data is not None:
        body["data"] = v.json_object("data", data, max_bytes=MAX_BROADCAST_DATA_BYTES)
    for key, value in given.items():
        if key in ("ids", "per_user_data", "emails"):
            if not isinstance(value, list | tuple) or not value:
                raise ValidationError(key, "must be a non-empty list")
            if len(value) > MAX_BROADCAST_AUDIENCE:
                raise ValidationError(
                    key, f"at most {MAX_BROADCAST_AUDIENCE} entries, got {len(value)}"
                )
            value = list(value)
            if key == "per_user_data":
                v.json_value(key, value)
                for index, item in enumerate(value):
                    _per_user_entry(f"per_user_data[{index}]", item)
            else:  # each one a person's id or email: the person id rules (150 bytes...)
                for index, item in enumerate(value):
                    v.identifier(f"{key}[{index}]", item)
        elif key == "recipients":
            if not isinstance(value, Mapping) or not value:
                raise ValidationError(
                    key, "must be a non-empty filter dict (and/or/not, segment, attribute)"
                )
            value = v.json_object(key, value)
        else:  # data_file_url: Customer.io fetches it
            value = v.http_url(key, value)
        body[key] = value
    for key, value in flags.items():
        if value is not None:
            if not isinstance(value, bool):
                raise ValidationError(key, "must be a bool")
            body[key] = value
    size = v.encoded_len(body)
    if size > MAX_BROADCAST_BYTES:
        raise ValidationError(
            "payload", f"must be at most {MAX_BROADCAST_BYTES} bytes as JSON, got {size}"
        )
    return {"broadcast_id": broadcast_id, "body": body}


def _per_user_entry(field: str, item: object) -> None:
    """One `per_user_data` entry: an object naming its person by `id` or `email`."""
    if isinstance(item, Mapping):
        present = [key for key in ("id", "email") if item.get(key) not in (None, "")]
        for key in present:
            v.identifier(f"{field}.{key}", item[key])
        if present:
            return
    raise ValidationError(field, "needs an id or an email")
