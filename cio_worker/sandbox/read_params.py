"""What an App API read sees and asks: the `View` of the workspace it answers from, its query
and path parameters, and the cursor pages of long lists.

A parameter that breaks a rule raises `QueryError` (a 400 naming it); a path naming nothing
raises `NotFound` (a 404). reads.py turns both into answers.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from cio_worker.sandbox.appdata import AppData

T = TypeVar("T")

#: Customer.io's default and largest page of a people search or a delivery listing.
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000

Query = Mapping[str, str]


class QueryError(ValueError):
    """A query parameter breaks a rule; the message names it."""


class NotFound(LookupError):
    """The thing a read names does not exist: 404 with this message."""


@dataclass(frozen=True)
class View:
    """What one read sees: the workspace, and what decides which accepted sends show yet.

    Attributes:
        data: the workspace and what the sandbox accepted.
        clock_now: now on the sandbox clock (`SandboxConfig.clock`), for the listing lag.
        lag_s: the listing lag in force.
        missing_broadcast_ids: broadcasts that do not exist (404).
        wall_now: now in Unix seconds, for the default time window of delivery listings.
    """

    data: AppData
    clock_now: float = math.inf
    lag_s: float = 0.0
    missing_broadcast_ids: frozenset[int] = frozenset()
    wall_now: int = field(default_factory=lambda: int(time.time()))


def encode_cursor(offset: int) -> str:
    """An opaque `next` token for the page starting at `offset`."""
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def decode_cursor(token: str) -> int:
    """The offset inside a `start` token; QueryError if it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise QueryError("start is not a valid page token") from None
    prefix, _, number = text.partition(":")
    if prefix != "offset" or not number.isdigit():
        raise QueryError("start is not a valid page token")
    return int(number)


def page(found: Sequence[T], query: Query) -> tuple[list[T], str]:
    """The part of `found` the request's `limit` and `start` select, and the `next` token that
    continues it ("" after the last page)."""
    limit = int_param(query, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT) or DEFAULT_LIMIT
    offset = decode_cursor(query["start"]) if query.get("start") else 0
    more = offset + limit < len(found)
    return list(found[offset : offset + limit]), encode_cursor(offset + limit) if more else ""


def int_param(query: Query, name: str, low: int, high: int, default: int | None) -> int | None:
    """Query parameter `name` as an integer in [low, high]; `default` when absent or empty."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise QueryError(f"{name} must be an integer from {low} to {high}")
    return int(raw)


def choice_param(query: Query, name: str, allowed: tuple[str, ...]) -> str | None:
    """Query parameter `name`, one of `allowed`; None when absent or empty."""
    value = query.get(name) or None
    if value is not None and value not in allowed:
        raise QueryError(f"{name} must be one of {', '.join(allowed)}")
    return value


def path_int(value: str, name: str) -> int:
    """Path parameter `name` as a number."""
    if not value.isascii() or not value.isdigit():
        raise QueryError(f"{name} must be a number")
    return int(value)
