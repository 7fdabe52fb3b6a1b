"""Checks applied at enqueue time, so bad input fails in the caller's request, not at delivery.

Each check raises `ValidationError(field, rule)`. The limits are Customer.io's
(docs/customerio-api.md §6).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

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
#: JSON nesting: containers one inside another, the argument's own included. Customer.io
#: documents no limit; no real data comes near it, while a deep value breaks every encoder on
#: the way (orjson stops at 255 levels, Python's json and these checks at the recursion limit).
MAX_JSON_DEPTH = 64
#: Digits of an integer: Python's default limit on int <-> text (sys.int_info); past it neither
#: the producer can encode the job nor a worker decode it.
MAX_INT_DIGITS = 4300
_INT_MAX = 10**MAX_INT_DIGITS  # exclusive bounds, both precomputed: -_INT_MAX would build a
_INT_MIN = -_INT_MAX  # new 4300-digit int on every comparison
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


def text_size(field: str, value: str) -> int:
    """UTF-8 bytes of `value`; a lone surrogate (not encodable, not JSON) is refused."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValidationError(
            field, f"must be valid Unicode: lone surrogate {value[exc.start]!r} at {exc.start}"
        ) from None


def shown(value: object, limit: int = 60) -> str:
    """A short repr of a caller's value for an error message (never raises)."""
    try:
        text = repr(value)
    except Exception:  # e.g. an int past MAX_INT_DIGITS, a broken __repr__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def integer(field: str, value: int) -> int:
    """An int that can become JSON text: at most MAX_INT_DIGITS digits."""
    if not _INT_MIN < value < _INT_MAX:
        raise ValidationError(field, f"integers must have at most {MAX_INT_DIGITS} digits")
    return value


#: Bytes of the compact JSON encoding Customer.io will receive (jsonutil's own function: no
#: wrapper call on every job).
encoded_len = jsonutil.encoded_len


def identifier(field: str, value: object, *, max_bytes: int = MAX_ID_BYTES) -> str:
    """A person (or device, object) id: a non-empty string or int, at most 150 bytes."""
    if type(value) is str:  # the common case, without the checks below
        text = value
    else:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValidationError(field, f"must be a string or an int, got {type(value).__name__}")
        if isinstance(value, int) and not _INT_MIN < value < _INT_MAX:  # str() would raise
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


def json_value(field: str, value: object) -> None:
    """Refuse anything that is not plain JSON (sets, bytes, objects, NaN, non-string keys), or
    that no encoder can write: lone surrogates, ints past MAX_INT_DIGITS, nesting past
    MAX_JSON_DEPTH (cycles included)."""
    _json_value(field, value, 0)


def _json_value(field: str, value: object, depth: int) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        if not value.isascii():  # O(1): only non-ASCII text can hold a surrogate
            text_size(field, value)
        return
    if isinstance(value, int):
        integer(field, value)
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(field, "must be a finite number (NaN and Infinity are not JSON)")
        return
    if not isinstance(value, list | tuple | dict):
        raise ValidationError(field, f"{type(value).__name__} is not a JSON value")
    if depth >= MAX_JSON_DEPTH:
        raise ValidationError(field, f"must not be nested deeper than {MAX_JSON_DEPTH} levels")
    _json_members(field, value, depth)


def _json_members(
    field: str, value: list[Any] | tuple[Any, ...] | dict[Any, Any], depth: int
) -> None:
    """The keys and items of a container at `depth` (its own type and depth already checked)."""
    pairs: Iterable[tuple[Any, Any]]
    if isinstance(value, dict):
        is_dict, pairs = True, value.items()
    else:
        is_dict, pairs = False, enumerate(value)
    for key, item in pairs:
        if is_dict and (not isinstance(key, str) or not key.isascii()):
            _check_key(field, key)
        # Fast path (bulk enqueue validates every job): plain scalars that are certainly
        # encodable need no recursion and no field name built for them.
        kind = type(item)
        if kind is str:
            if item.isascii():  # O(1): only non-ASCII text can hold a lone surrogate
                continue
            try:
                item.encode("utf-8")
                continue
            except UnicodeEncodeError:
                pass
        elif kind is int:
            if _INT_MIN < item < _INT_MAX:
                continue
        elif kind is float:
            if math.isfinite(item):
                continue
        elif kind is bool or item is None:
            continue
        _json_value(f"{field}.{key}" if is_dict else f"{field}[{key}]", item, depth + 1)


def _check_key(field: str, key: object) -> None:
    if not isinstance(key, str):
        raise ValidationError(field, f"keys must be strings, got {type(key).__name__}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(field, f"keys must be valid Unicode, got {shown(key)}") from None


def json_object(field: str, value: object, *, max_bytes: int | None = None) -> dict[str, Any]:
    """A JSON object (dict with string keys and JSON values), optionally size-capped."""
    if value is None:
        return {}
    if type(value) is not dict and not isinstance(value, Mapping):  # a dict skips the ABC
        raise ValidationError(field, f"must be a dict, got {type(value).__name__}")
    result = dict(value)
    _json_members(field, result, 0)  # what json_value does for a dict, minus its type checks
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
