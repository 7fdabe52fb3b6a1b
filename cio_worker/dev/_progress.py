"""Live per-family progress for the demo, read from the shared counters in Redis."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import redis
from rich.table import Table

from cio_worker.kinds import Family
from cio_worker.queue import stats

OUTCOMES = ("enqueued", "delivered", "retried", "rate_limited", "dead")


@dataclass
class FamilyProgress:
    expected: int
    counts: dict[str, int] = field(default_factory=dict)
    history: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=16))
    finished_at: float | None = None

    @property
    def ended(self) -> int:
        return self.counts.get("delivered", 0) + self.counts.get("dead", 0)

    def rate(self) -> float:
        """Deliveries per second over the last few seconds."""
        if len(self.history) < 2:
            return 0.0
        (t0, d0), (t1, d1) = self.history[0], self.history[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0


class Progress:
    """Counter deltas since the demo started, per family, against what the demo enqueued."""

    def __init__(self, client: redis.Redis, expected: dict[Family, int]) -> None:
        self.client = client
        self.baseline = stats(client)
        self.started = time.monotonic()
        self.families = {family: FamilyProgress(n) for family, n in expected.items() if n}

    def refresh(self) -> None:
        now_stats = stats(self.client)
        now = time.monotonic()
        for family, progress in self.families.items():
            for outcome in OUTCOMES:
                key = f"{family.value}:{outcome}"
                progress.counts[outcome] = now_stats.get(key, 0) - self.baseline.get(key, 0)
            progress.history.append((now, progress.counts["delivered"]))
            if progress.finished_at is None and progress.ended >= progress.expected:
                progress.finished_at = now

    def done(self) -> bool:
        return all(p.ended >= p.expected for p in self.families.values())

    def table(self, title: str = "cio_worker demo") -> Table:
        elapsed = time.monotonic() - self.started
        table = Table(title=f"{title} - {elapsed:5.1f}s")
        for column in ("family", "queued", "delivered", "retrying", "429s", "dead", "rate/s"):
            table.add_column(column, justify="left" if column == "family" else "right")
        for family, p in self.families.items():
            queued = max(0, p.expected - p.ended)
            table.add_row(
                family.value,
                str(queued),
                f"{p.counts.get('delivered', 0)}/{p.expected}",
                str(p.counts.get("retried", 0)),
                str(p.counts.get("rate_limited", 0)),
                str(p.counts.get("dead", 0)),
                f"{p.rate():.1f}",
            )
        return table

    def summary(self) -> Table:
        table = Table(title="summary")
        for column in (
            "family",
            "jobs",
            "delivered",
            "dead",
            "retries",
            "429s",
            "seconds",
            "jobs/s",
        ):
            table.add_column(column, justify="left" if column == "family" else "right")
        for family, p in self.families.items():
            seconds = (p.finished_at or time.monotonic()) - self.started
            delivered = p.counts.get("delivered", 0)
            table.add_row(
                family.value,
                str(p.expected),
                str(delivered),
                str(p.counts.get("dead", 0)),
                str(p.counts.get("retried", 0)),
                str(p.counts.get("rate_limited", 0)),
                f"{seconds:.1f}",
                f"{delivered / seconds:.1f}" if seconds > 0 else "-",
            )
        return table
