"""Job ids: ULIDs, which Customer.io also accepts as event dedup ids (customerio-api.md §7)."""

from __future__ import annotations

import os
import re
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_PATTERN = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")


def new_ulid(now_ms: int | None = None) -> str:
    """A new ULID: 48 bits of Unix milliseconds, then 80 random bits, in Crockford base32."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_ulid(value: str) -> bool:
    """True if `value` has the shape of a ULID."""
    return bool(ULID_PATTERN.fullmatch(value))


def ulid_time_ms(value: str) -> int:
    """The millisecond timestamp inside a ULID."""
    number = 0
    for char in value[:10]:
        number = number * 32 + _CROCKFORD.index(char)
    return number
