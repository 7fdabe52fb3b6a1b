"""One shared rate limiter per (workspace, bucket), in Redis, for every worker on every host.

Algorithm: GCRA (generic cell rate algorithm) in reservation form with a burst of one. Redis keeps
one number per bucket, the theoretical arrival time (TAT) of the next request. A caller's script
call reserves the slot `max(TAT, now, paused_until)` and moves TAT one emission interval later,
then the caller sleeps on its own monotonic clock until its slot. Consequences:

- Slots are handed out in arrival order and spaced exactly one interval apart, so callers never
  poll and a fleet of workers together sends at most `rate` requests in any rolling window.
- The emission interval is `1 / (rate * margin * fraction)`. The margin (CIO_WORKER_RATE_MARGIN,
  default 0.97) absorbs jitter between send time here and arrival time at Customer.io: a request
  that leaves on time but lands late cannot crowd the next window (measured here: ~20 ms of
  jitter; with no margin a strict server saw 429s, at 0.97 none). The fraction is 1 unless 429s
  slowed the bucket down (below).
- A wait longer than `max_wait_s` is not reserved: the script reports how far away the slot is and
  the job goes back to the queue with that delay, so a worker thread never idles for a broadcast
  ten seconds away.
- Redis `TIME` is the only clock (hosts' clocks may disagree); tests may pass "now" explicitly.

429 feedback (`report_429`), shared by the fleet because every worker reads the same keys:

- Every 429 pauses the bucket: until Retry-After if the server sent one, else for one window
  (`DEFAULT_PAUSE_S`, or one emission interval if that is longer, e.g. broadcasts). Pauses only
  ever extend. A caller that reserved a slot before the pause checks again after sleeping and
  goes back to the queue instead of sending into the pause. After the pause, slots are handed out
  one interval apart from its end: traffic resumes paced, not in a burst.
- A 429 *with* Retry-After only pauses: the server said exactly when to come back, and slowing
  down on top would cost throughput for nothing.
- A 429 *without* Retry-After also means our configured rate is above what the server grants
  right now (a lower limit than configured, or another client spending the same workspace's
  quota). Pausing alone would meet the same wall every window, a pause/burst cycle. So the
  bucket's fraction of its rate is halved (multiplicative decrease, floor `MIN_FRACTION`) and
  climbs back linearly by `RECOVERY_PER_S` of the full rate per second once the pause window is
  over (additive increase). This is TCP's AIMD: halving finds the available rate in a few
  windows, the slow linear climb probes back without tripping the limit again at once, and a
  single stray 429 costs little (from 0.5 back to 1 in 5 s). The 429s of one burst are one
  signal, not N: the bucket halves at most once per window, however many workers report.

The slowdown's state (fraction, time of the last halving) lives in a hash next to the TAT and
pause keys, all under the bucket's cluster hash tag and all with TTLs; the slowdown key expires
exactly when it would have recovered to the full rate, so an expired key and a recovered one mean
the same thing. Every script is one atomic call.

Fail closed: if Redis cannot be reached, no request is sent unmetered; the caller gets
`RateLimitedError` and the job is retried later without using up an attempt.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from cio_worker import keys, logs
from cio_worker.config import Settings
from cio_worker.errors import RateLimitedError
from cio_worker.limiter import _limiter_scripts as scripts

log = logs.get_logger(__name__)

#: Waits up to this long are slept in the worker; longer ones go back to the queue.
DEFAULT_MAX_WAIT_S = 1.0
#: A pause after a 429 with no Retry-After: one second (one window of the Track/App limits).
DEFAULT_PAUSE_S = 1.0
#: A Retry-After longer than this (seconds) is capped: Customer.io's limits have windows of 1-10 s,
#: so an hour is a broken header, not advice; the cap costs at most one probe per 5 min (the Node
#: client ignores Retry-After above 300 s too).
MAX_PAUSE_S = 300.0
#: A 429 without Retry-After multiplies the bucket's rate fraction by this (AIMD's decrease).
SLOWDOWN_FACTOR = 0.5
#: The fraction never drops below this: repeated 429s at a tenth of the limit are not ours to fix
#: by slowing further (an incident, or someone else using the quota); the pauses still protect.
MIN_FRACTION = 0.1
#: After the pause window, the fraction regains this much of the full rate per second: back from
#: half in 5 s and from the floor in 9 s, slow enough that a real limit is met again gently.
RECOVERY_PER_S = 0.1
#: Fresh slots a caller that woke up too late may take before it sends anyway.
MAX_LATE_RETRIES = 2
#: Lateness always tolerated, seconds (a thread's wake-up is never exact).
MIN_LATE_TOLERANCE_S = 0.002
#: How long a bucket's keys outlive their last use (they are recreated on demand).
KEY_TTL_MS = 3_600_000

_RECOVERY_PER_US = RECOVERY_PER_S / 1_000_000


@dataclass(frozen=True)
class BucketState:
    """A bucket as every worker sees it now (for `cio-worker status` and metrics)."""

    bucket: str
    #: Seconds until the bucket's pause ends; 0 if it is not paused.
    paused_for_s: float
    #: Share of the configured rate in use after 429 slowdowns, in (0, 1].
    rate_fraction: float
    #: The configured limit, requests per second, all workers together.
    configured_rps: float
    #: What the fleet aims for: configured x margin x fraction, requests per second.
    effective_rps: float


def bucket_rates(settings: Settings) -> dict[str, float]:
    """Requests per second allowed for each bucket (before the margin)."""
    return {
        "track": settings.track_rps,
        "pipelines": settings.track_rps,
        "app": settings.app_rps,
        "transactional": settings.transactional_rps,
        "broadcast": 1.0 / settings.broadcast_interval_s,
    }


def workspace_of(settings: Settings, bucket: str) -> str:
    """Which workspace a bucket belongs to: limits are per workspace, not per process.

    Track is named by its site id; App and Pipelines by a short hash of their key, never the key.
    """
    if bucket == "track" and settings.site_id:
        return settings.site_id
    secret = settings.pipelines_api_key if bucket == "pipelines" else settings.app_api_key
    if bucket == "track":
        secret = settings.track_api_key
    return hashlib.sha256((secret or "").encode()).hexdigest()[:12]


def _now_arg(now_us: int | None) -> int | str:
    return "" if now_us is None else now_us


class Limiter:
    """Take a slot from a shared bucket right before each request to Customer.io."""

    def __init__(
        self,
        settings: Settings,
        redis_client: redis.Redis,
        *,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._redis = redis_client
        self._rates = bucket_rates(settings)
        self._max_wait_us = int(max_wait_s * 1_000_000)
        self._sleep = sleep
        self._acquire = redis_client.register_script(scripts.ACQUIRE)
        self._report = redis_client.register_script(scripts.REPORT)
        self._state = redis_client.register_script(scripts.STATE)

    def interval_us(self, bucket: str) -> int:
        """The bucket's emission interval at its full rate (after the margin), µs."""
        return max(1, round(1_000_000 / (self._rates[bucket] * self.settings.rate_margin)))

    def _window_us(self, bucket: str) -> int:
        # One window of the server's limit: a second, or one slot where slots are further apart
        # (a broadcast's 10 s), since a shorter pause would not hold back even one request.
        return max(int(DEFAULT_PAUSE_S * 1_000_000), self.interval_us(bucket))

    def _keys(self, bucket: str) -> list[str]:
        workspace = workspace_of(self.settings, bucket)
        return [keys.limiter(workspace, bucket, part) for part in ("tat", "pause", "slow")]

    def _reserve(self, bucket: str, now_us: int | None) -> tuple[bool, int, int]:
        args = [
            self.interval_us(bucket),
            self._max_wait_us,
            KEY_TTL_MS,
            _now_arg(now_us),
            self._window_us(bucket),
            _RECOVERY_PER_US,
        ]
        try:
            granted, wait_us, slot_us = self._acquire(keys=self._keys(bucket), args=args)
        except redis.RedisError as exc:
            # Fail closed: without the shared bucket we cannot know the fleet's rate.
            raise RateLimitedError(
                f"limiter unavailable ({type(exc).__name__})", retry_after_seconds=1.0
            ) from exc
        return bool(int(granted)), int(wait_us), int(slot_us)

    def reserve(self, bucket: str, *, now_us: int | None = None) -> tuple[bool, float]:
        """One script call: (granted, seconds until the slot).

        Raises RateLimitedError when Redis cannot be reached.
        """
        granted, wait_us, _slot_us = self._reserve(bucket, now_us)
        return granted, wait_us / 1_000_000

    def acquire(self, bucket: str) -> float:
        """Wait for a slot in `bucket`; return the seconds waited.

        Raises RateLimitedError (with `retry_after_seconds`) when the slot is further away than
        `max_wait_s`, a 429 paused the bucket while this caller waited for its slot, or the
        limiter cannot be reached: re-queue the job with that delay.

        A caller that wakes up well after its slot (a descheduled process, a busy GIL) does not
        send late: late sends bunch up behind on-time ones and can crowd a window at the server.
        It takes a fresh slot instead (at most MAX_LATE_RETRIES times), wasting the old one.
        """
        started = time.monotonic()
        tolerance_s = self._late_tolerance_s(bucket)
        for attempt in range(MAX_LATE_RETRIES + 1):
            granted, wait_us, slot_us = self._reserve(bucket, None)
            wait_s = wait_us / 1_000_000
            if not granted:
                raise RateLimitedError(
                    f"{bucket} bucket busy for {wait_s:.3f}s", retry_after_seconds=wait_s
                )
            deadline = time.monotonic() + wait_s
            if wait_s > 0:
                while (remaining := deadline - time.monotonic()) > 0:
                    self._sleep(remaining)
                self._check_not_paused(bucket, slot_us)
            if time.monotonic() - deadline <= tolerance_s or attempt == MAX_LATE_RETRIES:
                break
            log.info("limiter_slot_missed", bucket=bucket, late_ms=round(
                (time.monotonic() - deadline) * 1000, 1))  # fmt: skip
        return time.monotonic() - started

    def _late_tolerance_s(self, bucket: str) -> float:
        # Half of the margin's room in one window goes to lateness here, half to the network:
        # 100/s at 0.97 leaves 30 ms a second, so a send may trail its slot by 15 ms.
        room = self._window_us(bucket) / 1_000_000 * (1 - self.settings.rate_margin) / 2
        return max(MIN_LATE_TOLERANCE_S, room)

    def _check_not_paused(self, bucket: str, slot_us: int) -> None:
        """Raise if a pause set after this slot was reserved covers it.

        Slots are reserved up to `max_wait_s` ahead; without this check every slot handed out
        before a 429 would still be sent during the pause. No clock is needed: both numbers are
        on Redis' clock, and a pause that existed at reservation time ends at or before the slot.
        """
        try:
            raw = self._redis.get(self._keys(bucket)[1])
        except redis.RedisError as exc:
            raise RateLimitedError(
                f"limiter unavailable ({type(exc).__name__})", retry_after_seconds=1.0
            ) from exc
        paused_until_us = int(raw) if raw is not None else 0
        if paused_until_us > slot_us:
            raise RateLimitedError(
                f"{bucket} bucket paused by a 429",
                retry_after_seconds=(paused_until_us - slot_us) / 1_000_000,
            )

    def pause(self, bucket: str, seconds: float | None, *, now_us: int | None = None) -> float:
        """Pause `bucket` for every worker (extend-only, no slowdown); return the end, Unix seconds.

        `seconds=None` pauses for `DEFAULT_PAUSE_S`. Returns 0.0 if Redis is down. After a 429,
        call `report_429` instead: it also slows the bucket when there is no Retry-After.
        """
        length_s = seconds if seconds is not None else DEFAULT_PAUSE_S
        until_s, _halved, _fraction = self._report_call(bucket, length_s, False, now_us)
        return until_s

    def report_429(
        self, bucket: str, retry_after_s: float | None, *, now_us: int | None = None
    ) -> float:
        """Feed a 429 back to the whole fleet; return the pause end (Unix seconds).

        With a Retry-After (seconds, already converted from an HTTP-date by the caller) the bucket
        pauses that long, capped at `MAX_PAUSE_S`; a negative value (a date in the past) means no
        pause and a NaN one counts as absent. Without one, it pauses one window and halves the
        bucket's rate (at most once per window; see the module docstring). Pauses only extend.
        Returns 0.0 if Redis is down: the job's own retry still waits, and acquire() fails closed.
        """
        if retry_after_s is not None and math.isnan(retry_after_s):
            retry_after_s = None
        if retry_after_s is None:
            until_s, halved, fraction = self._report_call(
                bucket, self._window_us(bucket) / 1_000_000, True, now_us
            )
            if halved:
                log.warning("rate_slowed", bucket=bucket, rate_fraction=round(fraction, 4))
            return until_s
        length_s = min(max(0.0, retry_after_s), MAX_PAUSE_S)
        return self._report_call(bucket, length_s, False, now_us)[0]

    def _report_call(
        self, bucket: str, length_s: float, slow: bool, now_us: int | None
    ) -> tuple[float, bool, float]:
        _tat_key, pause_key, slow_key = self._keys(bucket)
        args = [
            int(length_s * 1_000_000),
            _now_arg(now_us),
            "1" if slow else "0",
            self._window_us(bucket),
            _RECOVERY_PER_US,
            SLOWDOWN_FACTOR,
            MIN_FRACTION,
        ]
        try:
            until_us, halved, fraction = self._report(keys=[pause_key, slow_key], args=args)
        except redis.RedisError:
            return 0.0, False, 1.0  # the retry of the job itself still waits; nothing unmetered
        return int(until_us) / 1_000_000, bool(int(halved)), float(fraction)

    def state(self, bucket: str, *, now_us: int | None = None) -> BucketState:
        """The bucket's pause and rate as every worker sees them now, in one round trip.

        Raises redis.RedisError when Redis cannot be reached (a status read, not a send).
        """
        _tat_key, pause_key, slow_key = self._keys(bucket)
        args = [_now_arg(now_us), self._window_us(bucket), _RECOVERY_PER_US]
        paused_us, fraction_raw = self._state(keys=[pause_key, slow_key], args=args)
        fraction = float(fraction_raw)
        configured = self._rates[bucket]
        return BucketState(
            bucket=bucket,
            paused_for_s=int(paused_us) / 1_000_000,
            rate_fraction=fraction,
            configured_rps=configured,
            effective_rps=configured * self.settings.rate_margin * fraction,
        )
