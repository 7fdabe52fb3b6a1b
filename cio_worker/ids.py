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
#: Crockford digits as the digits `int(text, 32)` reads; any other ASCII character as one it
#: refuses (non-ASCII text is refused before: `int` would read other scripts' decimal digits).
_TO_INT_DIGITS = {
    code: "0123456789abcdefghijklmnopqrstuv"[_CROCKFORD.index(chr(code))]
    if chr(code) in _CROCKFORD
    else "!"
    for code in range(128)
}

_RANDOM_MASK = (1 << 80) - 1
#: The random part's low 20 bits: its last 4 characters, the only ones most ids change.
_LOW_BITS = 20
_LOW_MASK = (1 << _LOW_BITS) - 1
_lock = threading.Lock()
_last_ms = -1
_last_random = 0
#: The first 22 characters of the ids being made: the millisecond and the random part's high
#: 60 bits, encoded once for every id that shares them.
_head = ""
#: The last time `ulid_time_ms` decoded, with its 10 characters: ids made together share it.
_last_time = ("", 0)


#: Random parts drawn per system call: one 10-byte draw per millisecond cost about as much as
#: enqueueing a hundred events (os.urandom is a slow system call in some sandboxes).
_POOL_DRAWS = 256
_pool = b""
_pool_at = 0


def _random_80() -> int:
    """80 fresh random bits (called under `_lock`)."""
    global _pool, _pool_at
    if _pool_at >= len(_pool):
        _pool, _pool_at = os.urandom(10 * _POOL_DRAWS), 0
    start = _pool_at
    _pool_at = start + 10
    return int.from_bytes(_pool[start:_pool_at], "big")


def _forget_after_fork() -> None:
    """A forked child must not reuse its parent's random bytes or last id: two processes would
    then make the same ids in the same millisecond."""
    global _pool, _pool_at, _last_ms, _lock
    _pool, _pool_at, _last_ms = b"", 0, -1
    _lock = threading.Lock()  # another thread of the parent may have held it


os.register_at_fork(after_in_child=_forget_after_fork)


def _encode(value: int, pairs: int) -> str:
    """`value`'s low `pairs` * 10 bits as 2 * `pairs` base32 digits."""
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(pairs * 10 - 10, -10, -10)])


def new_ulid(now_ms: int | None = None) -> str:
    """A new ULID: 48 bits of Unix milliseconds, then 80 random bits, in Crockford base32.

    Monotonic within a millisecond, as the ULID spec allows: the second and later ids of the
    same millisecond add one to the previous random part instead of drawing new randomness.
    Ids from one process then sort in creation order, and a bulk enqueue makes one system call
    for randomness per millisecond instead of one per job. Fresh randomness each millisecond
    keeps ids from different processes apart.
    """
    return new_ulid_ms(now_ms)[0]


def new_ulid_ms(now_ms: int | None = None) -> tuple[str, int]:
    """A new ULID (see `new_ulid`) and the millisecond inside it, read without decoding it."""
    global _last_ms, _last_random, _head
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms == _last_ms and _last_random < _RANDOM_MASK:
            _last_random += 1
            if not _last_random & _LOW_MASK:  # carried into the high bits
                _head = _encode(ms, 5) + _encode(_last_random >> _LOW_BITS, 6)
        else:
            _last_ms, _last_random = ms, _random_80()
            _head = _encode(ms, 5) + _encode(_last_random >> _LOW_BITS, 6)
        head, low = _head, _last_random & _LOW_MASK
    return head + _PAIRS[low >> 10] + _PAIRS[low & 1023], ms


def is_ulid(value: str) -> bool:
    """True if `value` has the shape of a ULID."""
    return bool(ULID_PATTERN.fullmatch(value))


def ulid_time_ms(value: str) -> int:
    """The millisecond timestamp inside a ULID (ValueError if its first 10 characters are not
    Crockford base32)."""
    global _last_time
    head = value[:10]
    last = _last_time  # one read: another thread may replace it
    if head == last[0]:
        return last[1]
    digits = head.translate(_TO_INT_DIGITS)
    if not head.isascii() or "!" in digits:
        raise ValueError(f"not a ULID's time: {head!r}")
    ms = int(digits, 32) if digits else 0
    _last_time = (head, ms)
    return ms
