"""One shared rate limiter per (workspace, bucket), in Redis, for every worker on every host.

Algorithm: GCRA (generic cell rate algorithm) in reservation form with a burst of one. Redis keeps
one number per bucket, the theoretical arrival time (TAT) of the next request. A caller's script
call reserves the slot `max(TAT, now, paused_until)` and moves TAT one emission interval later,
then the caller sleeps on its own monotonic clock until its slot. Consequences:

- Slots are handed out in arrival order and spaced exactly one interval apart, so callers never
  poll and a fleet of workers together sends at most `rate` requests in any rolling window.
- The emission interval is `1 / (rate * margin)`. The margin (CIO_WORKER_RATE_MARGIN, default 0.97)
  absorbs jitter between send time here and arrival time at Customer.io: a request that leaves on
  time but lands late cannot crowd the next window (measured here: ~20 ms of jitter; with no
  margin a strict server saw 429s, at 0.97 none).
- A wait longer than `max_wait_s` is not reserved: the script reports how far away the slot is and
  the job goes back to the queue with that delay, so a worker thread never idles for a broadcast
  ten seconds away.
- Redis `TIME` is the only clock (hosts' clocks may disagree); tests may pass "now" explicitly.
- A 429 sets `paused_until` for the whole bucket; pauses only ever extend.

Fail closed: if Redis cannot be reached, no request is sent unmetered; the caller gets
`RateLimitedError` and the job is retried later without using up an attempt.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import redis

from cio_worker import keys
from cio_worker.config import Settings
from cio_worker.errors import RateLimitedError

#: Waits up to this long are slept in the worker; longer ones go back to the queue.
DEFAULT_MAX_WAIT_S = 1.0
#: A pause after a 429 with no Retry-After: one second (one window of the Track/App limits).
DEFAULT_PAUSE_S = 1.0
#: How long a bucket's keys outlive their last use (they are recreated on demand).
KEY_TTL_MS = 3_600_000

# KEYS[1] = TAT key, KEYS[2] = pause key
# ARGV[1] = emission interval (µs), ARGV[2] = max wait (µs), ARGV[3] = key TTL (ms),
# ARGV[4] = now (µs) or "" to use Redis TIME
# Returns {granted (1|0), wait (µs)}: if granted, the caller may send after `wait`;
# if not, nothing was reserved and the slot is `wait` away.
_ACQUIRE = """
local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
local start = math.max(tat, now, paused)
local wait = start - now
if wait > tonumber(ARGV[2]) then
  return {0, string.format('%.0f', wait)}
end
redis.call('SET', KEYS[1], string.format('%.0f', start + tonumber(ARGV[1])), 'PX', ARGV[3])
return {1, string.format('%.0f', wait)}
"""

# KEYS[1] = pause key; ARGV[1] = pause length (µs), ARGV[2] = now (µs) or "".
# Extends the pause to now + length unless it already runs longer. Returns the pause end (µs).
_PAUSE = """
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local until_ = math.max(current, now + tonumber(ARGV[1]))
local ttl = math.ceil((until_ - now) / 1000) + 60000
redis.call('SET', KEYS[1], string.format('%.0f', until_), 'PX', ttl)
return string.format('%.0f', until_)
"""


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
        self._acquire = redis_client.register_script(_ACQUIRE)
        self._pause = redis_client.register_script(_PAUSE)

    def interval_us(self, bucket: str) -> int:
        return max(1, round(1_000_000 / (self._rates[bucket] * self.settings.rate_margin)))

    def _keys(self, bucket: str) -> list[str]:
        workspace = workspace_of(self.settings, bucket)
        return [keys.limiter(workspace, bucket, "tat"), keys.limiter(workspace, bucket, "pause")]

    def reserve(self, bucket: str, *, now_us: int | None = None) -> tuple[bool, float]:
        """One script call: (granted, seconds until the slot).

        Raises RateLimitedError when Redis cannot be reached.
        """
        args = [
            self.interval_us(bucket),
            self._max_wait_us,
            KEY_TTL_MS,
            "" if now_us is None else now_us,
        ]
        try:
            granted, wait_us = self._acquire(keys=self._keys(bucket), args=args)
        except redis.RedisError as exc:
            # Fail closed: without the shared bucket we cannot know the fleet's rate.
            raise RateLimitedError(
                f"limiter unavailable ({type(exc).__name__})", retry_after_seconds=1.0
            ) from exc
        return bool(int(granted)), int(wait_us) / 1_000_000

    def acquire(self, bucket: str) -> float:
        """Wait for a slot in `bucket`; return the seconds waited.

        Raises RateLimitedError (with `retry_after_seconds`) when the slot is further away than
        `max_wait_s` or the limiter cannot be reached: re-queue the job with that delay.
        """
        granted, wait_s = self.reserve(bucket)
        if not granted:
            raise RateLimitedError(
                f"{bucket} bucket busy for {wait_s:.3f}s", retry_after_seconds=wait_s
            )
        if wait_s > 0:
            deadline = time.monotonic() + wait_s
            while (remaining := deadline - time.monotonic()) > 0:
                self._sleep(remaining)
        return wait_s

    def pause(self, bucket: str, seconds: float | None, *, now_us: int | None = None) -> float:
        """Pause `bucket` for every worker (after a 429); return the pause end, Unix seconds."""
        length_us = int((seconds if seconds is not None else DEFAULT_PAUSE_S) * 1_000_000)
        try:
            until_us = self._pause(
                keys=[self._keys(bucket)[1]], args=[length_us, "" if now_us is None else now_us]
            )
        except redis.RedisError:
            return 0.0  # the retry of the job itself still waits; nothing is sent unmetered
        return int(until_us) / 1_000_000
