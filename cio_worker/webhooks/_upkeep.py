"""What the receiver does besides answering: counting, telling whether Redis answers, trimming.

Retention: every append trims entries older than CIO_WORKER_WEBHOOK_RETENTION_DAYS (approximately,
whole stream nodes; see webhooks/_store_scripts.py), so the stream stays bounded with no reader
and no timer; the receiver also trims exactly every TRIM_INTERVAL_S, so old events leave on time
when no new ones come, and so that memory comes back on a `noeviction` Redis that refuses the
appends.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter

import anyio
import anyio.to_thread
import redis

from cio_worker import logs
from cio_worker.webhooks._store import WebhookStore

log = logs.get_logger(__name__)

#: How often the receiver trims the stream to its retention, seconds.
TRIM_INTERVAL_S = 60.0
#: How long /healthz reuses its last look at Redis, seconds (probes may come in bursts).
HEALTH_TTL_S = 1.0


class ReceiverCounters:
    """Receiver counters, added in memory and flushed to Redis by one flush at a time."""

    def __init__(self, store: WebhookStore) -> None:
        self._store = store
        self._pending: Counter[str] = Counter()
        self._flushing = False

    def add(self, name: str) -> None:
        self._pending[name] += 1

    async def flush(self) -> None:
        """Write what is pending, unless a flush is running already (it takes ours too)."""
        if self._flushing:
            return
        self._flushing = True
        try:
            while self._pending:
                batch = dict(self._pending)
                self._pending.clear()
                try:
                    await anyio.to_thread.run_sync(self._store.add_counts, batch)
                except redis.RedisError:
                    self._pending.update(batch)  # a few names: kept for the next flush
                    return  # a counter is not worth failing (or delaying) anything for
        finally:
            self._flushing = False


class RedisHealth:
    """Whether Redis answers, asked at most once per HEALTH_TTL_S however many probes come:
    probes arriving while a PING is out wait for its answer instead of sending their own."""

    def __init__(self, store: WebhookStore) -> None:
        self._store = store
        self._checked_at = -math.inf
        self._problem: str | None = None
        self._checking: asyncio.Event | None = None

    async def problem(self) -> str | None:
        """None while Redis answers, else the error's name."""
        if self._checking is not None:
            await self._checking.wait()
            return self._problem
        if time.monotonic() - self._checked_at < HEALTH_TTL_S:
            return self._problem
        self._checking = checking = asyncio.Event()
        try:
            await anyio.to_thread.run_sync(self._store.ping)
            self._problem = None
        except redis.RedisError as exc:
            self._problem = type(exc).__name__
        finally:
            self._checked_at = time.monotonic()
            self._checking = None
            checking.set()
        return self._problem


async def trim_forever(events: WebhookStore, interval_s: float) -> None:
    """Trim the stream to its retention now and every `interval_s`; say once when it fails and
    once when it works again."""
    failing = False
    while True:
        try:
            removed = await anyio.to_thread.run_sync(events.trim)
        except redis.RedisError as exc:
            if not failing:
                log.warning("webhook_trim_failed", error=type(exc).__name__)
            failing = True
        else:
            if removed or failing:
                log.info("webhook_trimmed", removed=removed, retention_s=events.retention_s)
            failing = False
        await asyncio.sleep(interval_s)
