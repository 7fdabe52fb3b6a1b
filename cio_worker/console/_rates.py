"""Rates for the overview: the change of the cumulative counters (`queue.stats`: delivered,
retried, rate_limited, dead per family) over the last minute, kept in the console's memory.

The console samples the counters every SAMPLE_S (one HGETALL) from its start, and each view of
the overview adds one more, so rates show from the first view.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

import anyio.to_thread
import redis

from cio_worker.queue import stats

#: Rates are the counters' change over about this long, seconds.
RATE_SPAN_S = 60.0
#: How often the counters are sampled between views, seconds.
SAMPLE_S = 5.0


class RateWindow:
    """Counter samples; a rate is the change since the sample about RATE_SPAN_S old (or the
    oldest kept, in the console's first minute)."""

    def __init__(self, span_s: float = RATE_SPAN_S) -> None:
        self.span_s = span_s
        self._samples: deque[tuple[float, dict[str, int]]] = deque()
        self._lock = threading.Lock()

    def add(self, counters: dict[str, int], now: float) -> tuple[dict[str, float], float]:
        """Record `counters` (name -> cumulative count); return per-minute rates and the span
        they cover, seconds (0 and no rates on the first sample)."""
        with self._lock:
            while len(self._samples) > 1 and now - self._samples[1][0] >= self.span_s:
                self._samples.popleft()
            base = self._samples[0] if self._samples else None
            self._samples.append((now, dict(counters)))
        if base is None or now - base[0] < 1:
            return {}, 0.0
        span = now - base[0]
        return {
            name: max(0, count - base[1].get(name, 0)) * 60 / span
            for name, count in counters.items()
        }, span


async def sample_forever(
    client: redis.Redis, window: RateWindow, interval_s: float = SAMPLE_S
) -> None:
    """Add a sample of the counters to `window` every `interval_s` until cancelled."""
    while True:
        try:
            counters = await anyio.to_thread.run_sync(stats, client)
            window.add(counters, time.time())
        except redis.RedisError:
            pass  # Redis away: the pages say so; the rates resume with it
        await asyncio.sleep(interval_s)
