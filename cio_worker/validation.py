"""Checks applied at enqueue time, so bad input fails in the caller's request, not at delivery.

Each check raises `ValidationError(field, rule)`. The limits are Customer.io's
(docs/customerio-api.md §6).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from cio_worker.errors import ValidationError

# The JSON checks live in json_checks.py; re-exported so a builder reads every check as `v.<x>`.
from cio_worker.json_checks import MAX_INT_DIGITS as MAX_INT_DIGITS
from cio_worker.json_checks import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from cio_worker.json_checks import encode_checked as encode_checked
from cio_worker.json_checks import encoded_len as encoded_len
from cio_worker.json_checks import flat_json_object as flat_json_object
from cio_worker.json_checks import int_fits as int_fits
from cio_worker.json_checks import integer as integer
from cio_worker.json_checks import json_object as json_object
from cio_worker.json_checks import json_value as json_value
from cio_worker.json_checks import shown as shown
from cio_worker.json_checks import text_size as text_size

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
#: Control characters (Unicode category Cc: C0, DEL, C1), refused in ids: a newline or NUL in an
#: id, an address or a URL path is never intended and breaks logs, headers and paths.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: What cannot stand in a URL as typed: whitespace and control characters.
_URL_BREAKERS = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
#: Fields whose value may become one URL path segment: a person id (Track v1
#: `/api/v1/customers/{id}`, App `/v1/customers/{id}/...`), a device token (`.../devices/{token}`),
#: a delivery id (`/v1/messages/{id}`). Which API carries a job is decided at delivery (batching
#: and the data API can change, a dead letter can be replayed), so these are refused whatever the
#: current mode.
PATH_BOUND_FIELDS = frozenset({"user_id", "device_id", "person_id", "delivery_id"})
#: `.` and `..` as a whole segment mean "this" and "the parent" (RFC 3986 §5.2.4): HTTP clients
#: and servers remove them, and percent-encoding them (`%2E%2E`) is no cure, since decoding
#: unreserved characters is a normalization any proxy or router may apply first (§6.2.2.2).
DOT_SEGMENTS = frozenset({".", ".."})


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def identifier(field: str, value: object, *, max_bytes: int = MAX_ID_BYTES) -> str:
    """A person (or device, object) id: a non-empty string or int, at most 150 bytes."""
    if type(value) is str:  # the common case, without the checks below
        text = value
    else:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValidationError(field, f"must be a string or an int, got {type(value).__name__}")
        if isinstance(value, int) and not int_fits(value):  # str() would raise
            raise ValidationError(field, f"must be at most {max_bytes} bytes")
        text = str(value)
    if not text.strip():
        raise ValidationError(field, "must not be empty")
    size = len(text) if text.isascii() else text_size(field, text)  # ASCII: 1 byte a character
    if size > max_bytes:
        raise ValidationError(field, f"must be at most {max_bytes} bytes, got {size}")
    if not text.isprintable() and _CONTROL.search(text):  # isprintable: C speed, common case
        raise ValidationError(field, "must not contain control characters (newline, tab, NUL...)")
    if text in DOT_SEGMENTS and field in PATH_BOUND_FIELDS:
        raise ValidationError(
            field,
            f"must not be {text!r}: it is sent as a URL path segment, where '.' and '..' "
            "are dot segments that would address another resource, even percent-encoded",
        )
    return text


def event_name(field: str, value: object) -> str:
    """An event name: non-empty, at most 100 bytes, kept exactly as given (case-sensitive)."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValidationError(field, "must not be empty")
    size = len(value) if value.isascii() else text_size(field, value)
    if size > MAX_EVENT_NAME_BYTES:
        raise ValidationError(field, f"must be at most {MAX_EVENT_NAME_BYTES} bytes, got {size}")
    return value


def timestamp(field: str, value: object) -> int | None:
    """Unix seconds from an int or an aware datetime; strings and naive datetimes are refused."""
    if value is None:
        return None
    if isinstance(value, datetime):
        try:
            aware = value.tzinfo is not None and value.utcoffset() is not None
            seconds = value.timestamp() if aware else 0.0
        except Exception as exc:  # the caller's tzinfo misbehaved (offset out of range...)
            raise ValidationError(
                field, f"datetime cannot be converted to Unix seconds: {type(exc).__name__}"
            ) from None
        if not aware:
            raise ValidationError(
                field, "datetime must be timezone-aware (naive times are ambiguous)"
            )
        # The same range as an int: an aware datetime is no way around it.
        if not 0 <= seconds < MAX_UNIX_SECONDS + 1:
            raise ValidationError(
                field,
                "datetime must be within 1970-01-01..2286-11-20 UTC (Unix seconds 0..9999999999)",
            )
        return int(seconds)
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


def operation_size(
    field: str, payload: object, *, max_bytes: int = MAX_OPERATION_BYTES, size: int | None = None
) -> None:
    """The whole operation must fit Customer.io's per-operation limit (32 KB for Track);
    `size`: its encoded length, if the caller has it."""
    if size is None:
        size = encoded_len(payload)
    if size > max_bytes:
        raise ValidationError(
            field, f"operation must be at most {max_bytes} bytes as JSON, got {size}"
        )


def choice(field: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValidationError(field, f"must be one of {', '.join(allowed)}, got {shown(value)}")
    return str(value)


def person_reference(field: str, value: object) -> dict[str, str]:
    """`"id"` shorthand or a dict with exactly one of id, email, cio_id (merge, identifiers)."""
    if type(value) is dict and len(value) == 1:  # the common case, without the checks below
        ((key, item),) = value.items()
        if (
            type(key) is str
            and key in ("id", "email", "cio_id")
            and (type(item) is int or (type(item) is str and item != ""))
        ):
            return {key: identifier(f"{field}.{key}", item)}
    if isinstance(value, str | int) and not isinstance(value, bool):
        return {"id": identifier(field, value)}
    if not isinstance(value, Mapping):
        raise ValidationError(field, "must be an id or a dict with one of id, email, cio_id")
    keys = [key for key in ("id", "email", "cio_id") if value.get(key) not in (None, "")]
    extra = set(value) - {"id", "email", "cio_id"}
    if extra:  # keys of any type: shown as text, so mixed types still sort
        names = ", ".join(sorted(shown(key) for key in extra))
        raise ValidationError(field, f"unknown keys [{names}]; use one of id, email, cio_id")
    if len(keys) != 1:
        raise ValidationError(field, "must have exactly one of id, email, cio_id")
    key = keys[0]
    return {key: identifier(f"{field}.{key}", value[key])}


def http_url(field: str, value: object) -> str:
    """An absolute http(s) URL with a host: what Customer.io can fetch (a broadcast's data file)."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    text_size(field, value)
    # urlsplit silently drops tabs and newlines, so look for them (and spaces) first.
    if _URL_BREAKERS.search(value):
        raise ValidationError(field, "must be a URL without spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ValidationError(field, f"must be a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValidationError(field, f"must be an http:// or https:// URL, got {shown(value)}")
    return value
