"""Checks that a caller's value is plain JSON that every encoder on the way can write: the
JSON half of validation.py (which re-exports these names), shared by every kind's builder.

Each check raises `ValidationError(field, rule)`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from cio_worker import jsonutil
from cio_worker.errors import ValidationError

#: JSON nesting: containers one inside another, the argument's own included. Customer.io
#: documents no limit; no real data comes near it, while a deep value breaks every encoder on
#: the way (orjson stops at 255 levels, Python's json and these checks at the recursion limit).
MAX_JSON_DEPTH = 64
#: Digits of an integer: Python's default limit on int <-> text (sys.int_info); past it neither
#: the producer can encode the job nor a worker decode it.
MAX_INT_DIGITS = 4300
_INT_MAX: int = 10**MAX_INT_DIGITS  # exclusive bounds, both precomputed: -_INT_MAX would build a
_INT_MIN = -_INT_MAX  # new 4300-digit int on every comparison


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


def int_fits(value: int) -> bool:
    """Whether `value` has at most MAX_INT_DIGITS digits (so `str` and JSON can write it)."""
    return _INT_MIN < value < _INT_MAX


def integer(field: str, value: int) -> int:
    """An int that can become JSON text: at most MAX_INT_DIGITS digits."""
    if not _INT_MIN < value < _INT_MAX:
        raise ValidationError(field, f"integers must have at most {MAX_INT_DIGITS} digits")
    return value


#: Bytes of the compact JSON encoding Customer.io will receive (jsonutil's own function: no
#: wrapper call on every job).
encoded_len = jsonutil.encoded_len


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


#: The value types of a flat object whose JSON checks orjson makes while encoding it: it refuses
#: a lone surrogate, an int past 64 bits and a key that is not a string, and writes the rest
#: as `json` would. Floats are not among them (orjson writes NaN and Infinity as `null`).
_ENCODER_CHECKED = frozenset({str, int, bool, type(None)})


def flat_json_object(value: object) -> dict[str, Any] | None:
    """`value` as a new dict if it is None or a dict of str, int, bool and None values, whose
    checks are then left to `encode_checked` (bulk enqueue skips a walk per event); else None:
    `json_object` must check it."""
    if type(value) is dict:
        result: dict[str, Any] = value.copy()
        return result if _ENCODER_CHECKED.issuperset(map(type, result.values())) else None
    return {} if value is None else None


def encode_checked(payload: Mapping[str, Any], unchecked: str | None = None) -> bytes:
    """`payload` as compact JSON. If orjson refuses it, the field `unchecked` (which
    `flat_json_object` let through) gets `json_object`'s checks: they name the problem, or
    accept it (an int past 64 bits, which `json` then writes)."""
    try:
        return orjson.dumps(payload)
    except TypeError:
        if unchecked is not None:
            json_object(unchecked, payload[unchecked])
        return jsonutil.dumps_bytes(payload)
