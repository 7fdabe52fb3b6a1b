"""Tests for cio_worker.ids: job ids are ULIDs that embed their creation time."""

from __future__ import annotations

import re
import time

import pytest

from cio_worker.ids import is_ulid, new_ulid, ulid_time_ms

# Written out from the ULID spec, independently of cio_worker.ids: 26 Crockford base32 characters
# (no I, L, O, U), the first at most 7 because a ULID is 128 bits.
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
SPEC_PATTERN = re.compile(r"[0-7][0-9ABCDEFGHJKMNPQRSTVWXYZ]{25}")


def decode_time(ulid: str) -> int:
    """The 48-bit millisecond timestamp in the first 10 characters, decoded by hand."""
    value = 0
    for char in ulid[:10]:
        value = value * 32 + CROCKFORD.index(char)
    return value


class TestNewUlid:
    def test_shape(self) -> None:
        """A new ULID is 26 Crockford base32 characters whose first is 0-7."""
        ulid = new_ulid()
        assert len(ulid) == 26
        assert SPEC_PATTERN.fullmatch(ulid)
        assert not set(ulid) & set("ILOU")

    def test_unique_over_ten_thousand(self) -> None:
        """10,000 ULIDs made back to back are all different."""
        ulids = [new_ulid() for _ in range(10_000)]
        assert len(set(ulids)) == 10_000
        assert all(SPEC_PATTERN.fullmatch(ulid) for ulid in ulids)

    def test_unique_within_one_millisecond(self) -> None:
        """ULIDs sharing a millisecond differ in their 80 random bits."""
        ulids = {new_ulid(now_ms=1_700_000_000_000) for _ in range(1000)}
        assert len(ulids) == 1000
        assert len({ulid[:10] for ulid in ulids}) == 1

    @pytest.mark.parametrize("now_ms", [0, 1, 1_700_000_000_123, 2**48 - 1])
    def test_embeds_given_time(self, now_ms: int) -> None:
        """The first 10 characters encode `now_ms`, from zero up to the 48-bit maximum."""
        ulid = new_ulid(now_ms=now_ms)
        assert SPEC_PATTERN.fullmatch(ulid)
        assert decode_time(ulid) == now_ms
        assert ulid_time_ms(ulid) == now_ms

    def test_embeds_current_time_by_default(self) -> None:
        """Without `now_ms`, the embedded time is the wall clock at creation."""
        before = int(time.time() * 1000)
        ulid = new_ulid()
        after = int(time.time() * 1000)
        assert before <= decode_time(ulid) <= after

    def test_sorts_by_time(self) -> None:
        """ULIDs from later milliseconds sort after earlier ones as plain strings."""
        times = [1_600_000_000_000, 1_600_000_000_001, 1_650_000_000_000, 1_700_000_000_000]
        ulids = [new_ulid(now_ms=ms) for ms in times]
        assert sorted(ulids) == ulids


class TestUlidTimeMs:
    def test_reads_hand_encoded_ulid(self) -> None:
        """`ulid_time_ms` decodes a ULID built by hand from the spec's alphabet."""
        ms = 1_469_918_176_385
        prefix = ""
        value = ms
        for _ in range(10):
            prefix = CROCKFORD[value % 32] + prefix
            value //= 32
        assert ulid_time_ms(prefix + "Z" * 16) == ms


class TestIsUlid:
    def test_accepts_new_ulids(self) -> None:
        """Every id new_ulid makes passes is_ulid."""
        assert all(is_ulid(new_ulid()) for _ in range(100))

    def test_accepts_spec_example(self) -> None:
        """The example from the ULID spec is accepted."""
        assert is_ulid("01ARZ3NDEKTSV4RRFFQ69G5FAV")

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "01ARZ3NDEKTSV4RRFFQ69G5FA",  # 25 characters
            "01ARZ3NDEKTSV4RRFFQ69G5FAVX",  # 27 characters
            "81ARZ3NDEKTSV4RRFFQ69G5FAV",  # over 128 bits
            "01ARZ3NDEKTSV4RRFFQ69G5FAI",  # I is not Crockford
            "01ARZ3NDEKTSV4RRFFQ69G5FAL",  # L is not Crockford
            "01ARZ3NDEKTSV4RRFFQ69G5FAO",  # O is not Crockford
            "01ARZ3NDEKTSV4RRFFQ69G5FAU",  # U is not Crockford
            "01ARZ3NDEK-SV4RRFFQ69G5FAV",
            " 01ARZ3NDEKTSV4RRFFQ69G5FA",
        ],
    )
    def test_rejects_non_ulids(self, value: str) -> None:
        """Wrong length, an overflowing first character or a non-Crockford character is refused."""
        assert not is_ulid(value)

    def test_rejects_trailing_newline(self) -> None:
        """A valid ULID followed by a newline (27 characters) is not a ULID."""
        assert not is_ulid(new_ulid() + "\n")


class TestRandomness:
    def test_ids_of_one_millisecond_in_a_forked_child_differ_from_the_parents(self) -> None:
        """Celery and web servers fork after import: a child that reused its parent's last id
        or pooled random bytes would make the parent's ids in the same millisecond."""
        import os

        ms = int(time.time() * 1000)
        new_ulid(ms)  # the parent has an id of this millisecond, and random bytes pooled
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its next id of the same millisecond, to the parent
            try:
                os.write(write, new_ulid(ms).encode())
            finally:
                os._exit(0)
        os.close(write)
        child = os.read(read, 26).decode()
        os.close(read)
        os.waitpid(pid, 0)
        parent = new_ulid(ms)
        assert is_ulid(child) and child[:10] == parent[:10]  # the same millisecond
        assert child != parent
        assert child[10:] != new_ulid(ms)[10:]  # nor any next one the parent makes

    def test_pooled_random_parts_are_not_repeated(self) -> None:
        """Random parts come from a pool of bytes drawn at once: each millisecond still gets
        its own (far more milliseconds than one pool holds)."""
        start = int(time.time() * 1000)
        randoms = {new_ulid(start + n)[10:] for n in range(2000)}
        assert len(randoms) == 2000
