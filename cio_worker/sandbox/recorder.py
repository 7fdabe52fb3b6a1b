"""The request log and the stats computed from it.

Every API request (accepted or not; control requests are not logged) becomes one record. Records
never hold the Authorization header or any key.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from cio_worker.sandbox.limits import FAMILIES, Family

Record = dict[str, Any]


def max_in_window(arrivals: Iterable[float], window_s: float) -> int:
    """Most arrivals in any window `(t - window_s, t]`, the half-open window the limiter uses."""
    ordered = sorted(arrivals)
    best = 0
    start = 0
    for end, arrival in enumerate(ordered):
        while ordered[start] <= arrival - window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


class Recorder:
    """An in-memory, append-only request log with per-family counters.

    `seq` numbers records in the order they are completed (a request delayed by a fault is logged
    when it answers), so `since` never skips one. It keeps counting across `reset`, so a poller's
    cursor stays valid.
    """

    def __init__(self, windows_s: Mapping[Family, float]) -> None:
        self._windows_s = dict(windows_s)
        self._seq = 0
        self._records: list[Record] = []
        self._arrivals: dict[Family, list[float]] = {family: [] for family in FAMILIES}
        self._rate_limited: Counter[Family] = Counter()
        # Records whose body may hold NaN or an infinity, which orjson would write as null.
        self._not_plain: set[int] = set()

    def add(
        self,
        record: Record,
        *,
        family: Family | None,
        accepted_at: float | None,
        rate_limited: bool,
        plain_json: bool = True,
    ) -> Record:
        """Log `record` (without `seq`); `accepted_at` is the limiter-clock time if admitted;
        `plain_json` False if its body may hold NaN or an infinity (see `json_bytes`)."""
        self._seq += 1
        stored = {"seq": self._seq, **record, "accepted": accepted_at is not None}
        self._records.append(stored)
        if not plain_json:
            self._not_plain.add(self._seq)
        if family is not None:
            if accepted_at is not None:
                self._arrivals[family].append(accepted_at)
            if rate_limited:
                self._rate_limited[family] += 1
        return stored

    def query(
        self,
        *,
        since: int = 0,
        limit: int | None = None,
        api: str | None = None,
        family: str | None = None,
    ) -> list[Record]:
        """Records with seq > `since`, oldest first, filtered by api and family."""
        found: list[Record] = []
        for record in _after(self._records, since):
            if api is not None and record["api"] != api:
                continue
            if family is not None and record["family"] != family:
                continue
            if limit is not None and len(found) >= limit:
                break
            found.append(record)
        return found

    def json_bytes(self, records: Sequence[Record]) -> bytes | None:
        """`records` as JSON, rendered fast by orjson; None where only the stdlib's rendering
        gives the same document: a body that may hold NaN or an infinity (orjson writes null),
        an integer beyond 64 bits or a lone surrogate (orjson refuses)."""
        if self._not_plain and any(record["seq"] in self._not_plain for record in records):
            return None
        try:
            return orjson.dumps(records)
        except orjson.JSONEncodeError:
            return None

    def stats(self) -> dict[str, object]:
        """Totals, counts per status and per family, and the busiest window of each family."""
        by_status = Counter(
            str(record["status"]) for record in self._records if record["status"] is not None
        )
        return {
            "requests": len(self._records),
            "accepted": sum(1 for record in self._records if record["accepted"]),
            "dropped": sum(1 for record in self._records if record["dropped"]),
            "connections_dropped": sum(1 for record in self._records if record["status"] is None),
            "by_status": dict(sorted(by_status.items())),
            "families": {
                family: {
                    "accepted": len(self._arrivals[family]),
                    "rate_limited": self._rate_limited[family],
                    "max_in_window": max_in_window(self._arrivals[family], self._windows_s[family]),
                    "window_s": self._windows_s[family],
                }
                for family in FAMILIES
            },
        }

    def reset(self) -> None:
        """Clear the log and counters (not `seq`)."""
        self._records.clear()
        self._rate_limited.clear()
        self._not_plain.clear()
        for arrivals in self._arrivals.values():
            arrivals.clear()


def _after(records: Sequence[Record], since: int) -> Sequence[Record]:
    # Records are in seq order: bisect rather than scan a long log on every poll.
    return records[bisect.bisect_right(records, since, key=lambda record: record["seq"]) :]
