"""Job ids: ULIDs, which Customer.io accepts as event dedup ids (docs/customerio-api.md §7)."""

from __future__ import annotations

import os
import re
import threading
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_PATTERN = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")


#: Every pair of base32 digits, so a ULID takes 13 lookups, not 26 (bulk enqueue makes many).
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]


_RANDOM_MASK = (1 << 80) - 1
_lock = threading.Lock()
_last_ms = -1
_last_random = 0


def new_ulid(now_ms: int | None = None) -> str:
    """A new ULID: 48 bits of Unix milliseconds, then 80 random bits, in Crockford base32.

    Monotonic within a millisecond, as the ULID spec allows: the second and later ids of the
    same millisecond add one to the previous random part instead of drawing new randomness.
    Ids from one process then sort in creation order, and a bulk enqueue makes one system call
    for randomness per millisecond instead of one per job. Fresh randomness each millisecond
    keeps ids from different processes apart.
    """
    global _last_ms, _last_random
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms == _last_ms and _last_random < _RANDOM_MASK:
            _last_random += 1
        else:
            _last_ms, _last_random = ms, int.from_bytes(os.urandom(10), "big")
        value = (ms << 80) | _last_random
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in range(120, -10, -10)])


def is_ulid(value: str) -> bool:
    """True if `value` has the shape of a ULID."""
    return bool(ULID_PATTERN.fullmatch(value))


def ulid_time_ms(value: str) -> int:
    """The millisecond timestamp inside a ULID."""
    number = 0
    for char in value[:10]:
        number = number * 32 + _CROCKFORD.index(char)
    return number
