"""The shared GCRA limiter, against a real redis-server (its Lua must not be trusted to fakes)."""

from __future__ import annotations

import pytest
import redis

from cio_worker import keys
from cio_worker.config import Settings
from cio_worker.errors import RateLimitedError
from cio_worker.limiter import Limiter, workspace_of

T0 = 1_700_000_000_000_000  # a fixed "now" in microseconds


@pytest.fixture
def limiter(settings: Settings, redis_client: redis.Redis) -> Limiter:
    return Limiter(settings.replace(rate_margin=1.0), redis_client, max_wait_s=1.0)


class TestReserve:
    def test_first_request_goes_at_once(self, limiter: Limiter) -> None:
        """An idle bucket grants the first slot with no wait (burst of one)."""
        assert limiter.reserve("track", now_us=T0) == (True, 0.0)

    def test_slots_are_spaced_one_interval_apart(self, limiter: Limiter) -> None:
        """At 100/s, callers arriving together get slots 10 ms apart, in arrival order."""
        waits = [limiter.reserve("track", now_us=T0)[1] for _ in range(5)]
        assert waits == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.04])

    def test_margin_widens_the_interval(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """With a 0.97 margin the interval is 1 / (rate * 0.97)."""
        limiter = Limiter(settings.replace(rate_margin=0.97), redis_client)
        assert limiter.interval_us("track") == round(1_000_000 / 97)
        limiter.reserve("track", now_us=T0)
        assert limiter.reserve("track", now_us=T0)[1] == pytest.approx(1 / 97, abs=1e-6)

    def test_idle_time_does_not_build_a_burst(self, limiter: Limiter) -> None:
        """After a long idle spell only one request goes at once; the next waits an interval."""
        limiter.reserve("track", now_us=T0)
        later = T0 + 60_000_000
        assert limiter.reserve("track", now_us=later) == (True, 0.0)
        assert limiter.reserve("track", now_us=later)[1] == pytest.approx(0.01)

    def test_long_waits_are_refused_without_reserving(self, limiter: Limiter) -> None:
        """A broadcast slot ten seconds away is reported, not taken, so it is not wasted."""
        assert limiter.reserve("broadcast", now_us=T0) == (True, 0.0)
        granted, wait = limiter.reserve("broadcast", now_us=T0 + 1_000_000)
        assert not granted and wait == pytest.approx(9.0)
        granted_again, wait_again = limiter.reserve("broadcast", now_us=T0 + 1_000_000)
        assert not granted_again and wait_again == pytest.approx(9.0)

    def test_buckets_are_independent(self, limiter: Limiter) -> None:
        """A busy track bucket does not delay transactional sends."""
        for _ in range(50):
            limiter.reserve("track", now_us=T0)
        assert limiter.reserve("transactional", now_us=T0) == (True, 0.0)

    def test_keys_expire(
        self, limiter: Limiter, redis_client: redis.Redis, settings: Settings
    ) -> None:
        """Bucket keys carry a TTL and a cluster hash tag."""
        limiter.reserve("track", now_us=T0)
        key = keys.limiter(workspace_of(settings, "track"), "track", "tat")
        assert "{limiter:" in key
        assert 0 < redis_client.pttl(key) <= 3_600_000

    def test_uses_redis_time_when_no_clock_given(self, limiter: Limiter) -> None:
        """Without an explicit now the script reads Redis TIME and still spaces slots."""
        first = limiter.reserve("app")
        second = limiter.reserve("app")
        assert first == (True, 0.0)
        assert 0.05 < second[1] <= 0.1


class TestPause:
    def test_pause_delays_every_caller(self, limiter: Limiter) -> None:
        """A 429's pause holds the bucket for everyone until it ends."""
        limiter.pause("track", 0.5, now_us=T0)
        assert limiter.reserve("track", now_us=T0) == (True, pytest.approx(0.5))

    def test_pause_only_extends(self, limiter: Limiter) -> None:
        """A shorter concurrent pause never shortens a longer one."""
        end = limiter.pause("track", 5.0, now_us=T0)
        assert limiter.pause("track", 1.0, now_us=T0) == end
        assert limiter.pause("track", 8.0, now_us=T0) == pytest.approx(end + 3.0)

    def test_resume_is_paced(self, limiter: Limiter) -> None:
        """After a pause, waiting callers are released one interval apart, not in a burst."""
        limiter.pause("track", 0.5, now_us=T0)
        waits = [limiter.reserve("track", now_us=T0)[1] for _ in range(3)]
        assert waits == pytest.approx([0.5, 0.51, 0.52])


class TestAcquire:
    def test_sleeps_short_waits(self, settings: Settings, redis_client: redis.Redis) -> None:
        """acquire() sleeps out a short wait and returns it."""
        slept: list[float] = []
        limiter = Limiter(settings, redis_client, sleep=slept.append)
        limiter.acquire("app")
        waited = limiter.acquire("app")
        assert waited > 0.05
        assert slept and sum(slept) > 0

    def test_long_waits_raise_rate_limited(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """A wait beyond max_wait_s raises RateLimitedError carrying the delay."""
        limiter = Limiter(settings, redis_client, max_wait_s=1.0, sleep=lambda _: None)
        limiter.acquire("broadcast")
        with pytest.raises(RateLimitedError) as info:
            limiter.acquire("broadcast")
        assert info.value.retry_after_seconds is not None
        assert 9.0 < info.value.retry_after_seconds <= 10.4

    def test_fails_closed_when_redis_is_down(self, settings: Settings) -> None:
        """With Redis unreachable no slot is granted: the caller must retry later."""
        dead = redis.Redis(port=1, socket_connect_timeout=0.2)
        limiter = Limiter(settings, dead)
        with pytest.raises(RateLimitedError):
            limiter.acquire("track")
