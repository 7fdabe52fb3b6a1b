"""Checks applied at enqueue time, so bad input fails in the caller's request, not at delivery.

Each check raises `ValidationError(field, rule)`. The limits are Customer.io's
(customerio-api.md §6).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cio_worker import jsonutil
from cio_worker.errors import ValidationError

#: Customer.io's limit on a person id, attribute name: 150 bytes of UTF-8.
MAX_ID_BYTES = 150
#: Event names: 100 bytes.
MAX_EVENT_NAME_BYTES = 100
#: One attribute value, JSON-encoded unless a string: 1000 bytes.
MAX_ATTRIBUTE_VALUE_BYTES = 1000
#: Attributes in one identify call.
MAX_ATTRIBUTES = 300
#: Event data (properties), JSON-encoded.
MAX_EVENT_DATA_BYTES = 100_000
#: One Track operation (v2 entity / batch item), JSON-encoded: 32 KB.
MAX_OPERATION_BYTES = 32 * 1024
#: Unix seconds beyond this are almost certainly milliseconds (year 2286).
MAX_UNIX_SECONDS = 9_999_999_999


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def encoded_len(value: Any) -> int:
    """Bytes of the compact JSON encoding Customer.io will receive."""
    return jsonutil.encoded_len(value)


def identifier(field: str, value: object, *, max_bytes: int = MAX_ID_BYTES) -> str:
    """A person (or device, object) id: a non-empty string or int, at most 150 bytes."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValidationError(field, f"must be a string or an int, got {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise ValidationError(field, "must not be empty")
    if utf8_len(text) > max_bytes:
        raise ValidationError(field, f"must be at most {max_bytes} bytes, got {utf8_len(text)}")
    return text


def event_name(field: str, value: object) -> str:
    """An event name: non-empty, at most 100 bytes, kept exactly as given (case-sensitive)."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValidationError(field, "must not be empty")
    if utf8_len(value) > MAX_EVENT_NAME_BYTES:
        raise ValidationError(
            field, f"must be at most {MAX_EVENT_NAME_BYTES} bytes, got {utf8_len(value)}"
        )
    return value


def timestamp(field: str, value: object) -> int | None:
    """Unix seconds from an int or an aware datetime; strings and naive datetimes are refused."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError(
                field, "datetime must be timezone-aware (naive times are ambiguous)"
            )
        return int(value.timestamp())
    if isinstance(value, str):
        raise ValidationError(
            field,
            "must be an int (Unix seconds) or an aware datetime; strings are refused because "
            "Customer.io silently mis-handles ISO timestamps",
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            field, f"must be an int (Unix seconds) or an aware datetime, got {type(value).__name__}"
        )
    if not 0 <= value <= MAX_UNIX_SECONDS:
        raise ValidationError(
            field, "must be Unix seconds (0..9999999999); milliseconds are refused"
        )
    return value


def json_value(field: str, value: object) -> None:
    """Refuse anything that is not plain JSON (sets, bytes, objects, NaN, non-string keys)."""
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(field, "must be a finite number (NaN and Infinity are not JSON)")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            json_value(f"{field}[{index}]", item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(field, f"keys must be strings, got {type(key).__name__}")
            # Fast path for the common flat case (bulk enqueue validates every job): exact
            # scalar types need no recursion and no field name built for them.
            if type(item) not in _PLAIN_SCALARS:
                json_value(f"{field}.{key}", item)
        return
    raise ValidationError(field, f"{type(value).__name__} is not a JSON value")


_PLAIN_SCALARS = frozenset({str, int, bool, type(None)})


def json_object(field: str, value: object, *, max_bytes: int | None = None) -> dict[str, Any]:
    """A JSON object (dict with string keys and JSON values), optionally size-capped."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(field, f"must be a dict, got {type(value).__name__}")
    result = dict(value)
    json_value(field, result)
    if max_bytes is not None and (size := encoded_len(result)) > max_bytes:
        raise ValidationError(field, f"must be at most {max_bytes} bytes as JSON, got {size}")
    return result


def attributes(field: str, value: object) -> dict[str, Any]:
    """Person attributes: at most 300, names up to 150 bytes, each value up to 1000 bytes."""
    result = json_object(field, value)
    if len(result) > MAX_ATTRIBUTES:
        raise ValidationError(
            field, f"must have at most {MAX_ATTRIBUTES} attributes, got {len(result)}"
        )
    for name, item in result.items():
        if not name:
            raise ValidationError(field, "attribute names must not be empty")
        if utf8_len(name) > MAX_ID_BYTES:
            raise ValidationError(
                f"{field}.{name[:40]}", f"attribute name over {MAX_ID_BYTES} bytes"
            )
        size = utf8_len(item) if isinstance(item, str) else encoded_len(item)
        if size > MAX_ATTRIBUTE_VALUE_BYTES:
            raise ValidationError(
                f"{field}.{name}",
                f"attribute value must be at most {MAX_ATTRIBUTE_VALUE_BYTES} bytes, got {size}",
            )
    return result


def operation_size(field: str, payload: object, *, max_bytes: int = MAX_OPERATION_BYTES) -> None:
    """The whole operation must fit Customer.io's per-operation limit (32 KB for Track)."""
    size = encoded_len(payload)
    if size > max_bytes:
        raise ValidationError(
            field, f"operation must be at most {max_bytes} bytes as JSON, got {size}"
        )


def choice(field: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValidationError(field, f"must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def person_reference(field: str, value: object) -> dict[str, str]:
    """`"id"` shorthand or a dict with exactly one of id, email, cio_id (merge, identifiers)."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        return {"id": identifier(field, value)}
    if not isinstance(value, Mapping):
        raise ValidationError(field, "must be an id or a dict with one of id, email, cio_id")
    keys = [key for key in ("id", "email", "cio_id") if value.get(key) not in (None, "")]
    extra = set(value) - {"id", "email", "cio_id"}
    if extra:
        raise ValidationError(field, f"unknown keys {sorted(extra)}; use one of id, email, cio_id")
    if len(keys) != 1:
        raise ValidationError(field, "must have exactly one of id, email, cio_id")
    key = keys[0]
    return {key: identifier(f"{field}.{key}", value[key])}
