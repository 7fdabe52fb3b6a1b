"""Compact JSON, fast: orjson where it can, the standard library where it cannot.

Bulk enqueue encodes two or three JSON documents per job; with the standard encoder that alone
capped one process near 25,000 jobs/s. orjson writes the same compact, UTF-8 JSON about 15 times
faster. It refuses a few things `json` accepts (integers beyond 64 bits, non-string keys); those
fall back to `json`, so the output is always what `json.dumps(..., separators=(",", ":"),
ensure_ascii=False)` would give for valid input.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> str:
    """`value` as compact JSON text."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def dumps_bytes(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON bytes (a request body: no detour through `str`)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def encoded_len(value: Any) -> int:
    """Bytes of the compact UTF-8 JSON encoding of `value`."""
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
