"""The shared GCRA limiter, against a real redis-server (its Lua must not be trusted to fakes)."""

from __future__ import annotations

import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from structlog.testing import capture_logs

from cio_worker import keys
from cio_worker.config import Settings
from cio_worker.errors import RateLimitedError
from cio_worker.limiter._limiter import (
    DEFAULT_PAUSE_S,
    MAX_PAUSE_S,
    MIN_FRACTION,
    BucketState,
    Limiter,
    workspace_of,
)

T0 = 1_700_000_000_000_000  # a fixed "now" in microseconds


@pytest.fixture
def limiter(settings: Settings, redis_client: redis.Redis) -> Limiter:
    return Limiter(settings.replace(rate_margin=1.0), redis_client, max_wait_s=1.0)


def _unreachable_redis() -> redis.Redis:
    """A client for a port nothing listens on, failing at once instead of retrying with backoff."""
    return redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))


def _slots(limiter: Limiter, bucket: str, now_us: int, count: int) -> list[float]:
    """Reserve `count` slots at one instant (all within max_wait_s); return their waits (s)."""
    slots = [limiter.reserve(bucket, now_us=now_us) for _ in range(count)]
    assert all(granted for granted, _wait in slots)
    return [wait for _granted, wait in slots]


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
        dead = _unreachable_redis()
        limiter = Limiter(settings, dead)
        with pytest.raises(RateLimitedError):
            limiter.acquire("track")


class TestReport429:
    def test_without_retry_after_pauses_one_window_and_halves_the_rate(
        self, limiter: Limiter
    ) -> None:
        """No Retry-After: a one-second pause, then slots twice as far apart (100/s -> 50/s)."""
        end = limiter.report_429("track", None, now_us=T0)
        assert end == pytest.approx(T0 / 1e6 + DEFAULT_PAUSE_S)
        assert _slots(limiter, "track", T0 + 900_000, 3) == pytest.approx([0.1, 0.12, 0.14])

    def test_rate_recovers_gradually_to_full(self, limiter: Limiter) -> None:
        """After the pause window the fraction climbs 0.1 of the full rate per second to 1."""
        limiter.report_429("track", None, now_us=T0)
        fractions = [
            limiter.state("track", now_us=T0 + int(s * 1e6)).rate_fraction
            for s in (0.5, 1.0, 2.0, 3.5, 5.0, 6.0, 30.0)
        ]
        assert fractions == pytest.approx([0.5, 0.5, 0.6, 0.75, 0.9, 1.0, 1.0])
        later = T0 + 3_500_000  # fraction 0.75: one slot every 10 ms / 0.75
        assert _slots(limiter, "track", later, 2)[1] == pytest.approx(0.01 / 0.75, abs=1e-6)

    def test_concurrent_429s_in_one_window_halve_once(self, limiter: Limiter) -> None:
        """Many workers hit by the same burst slow the bucket once, not once each."""
        with capture_logs() as logs:
            for offset_ms in (0, 0, 100, 400, 999):
                limiter.report_429("track", None, now_us=T0 + offset_ms * 1000)
        assert limiter.state("track", now_us=T0 + 999_000).rate_fraction == pytest.approx(0.5)
        assert [e["rate_fraction"] for e in logs if e["event"] == "rate_slowed"] == [0.5]
        # A 429 a full window after the halving is new evidence: halve again.
        limiter.report_429("track", None, now_us=T0 + 1_000_000)
        assert limiter.state("track", now_us=T0 + 1_000_000).rate_fraction == pytest.approx(0.25)

    def test_floor_holds(self, limiter: Limiter) -> None:
        """However many windows keep answering 429, the rate stays at MIN_FRACTION or above."""
        for window in range(10):
            limiter.report_429("track", None, now_us=T0 + window * 1_000_000)
        now = T0 + 10_000_000
        assert limiter.state("track", now_us=now).rate_fraction == pytest.approx(MIN_FRACTION)
        waits = _slots(limiter, "track", now, 2)  # slots 10 ms / 0.1 = 100 ms apart
        assert waits[1] - waits[0] == pytest.approx(0.01 / MIN_FRACTION)

    def test_retry_after_pauses_without_slowing(self, limiter: Limiter) -> None:
        """A Retry-After says when to come back: pause that long, then resume at the full rate."""
        end = limiter.report_429("track", 3.0, now_us=T0)
        assert end == pytest.approx(T0 / 1e6 + 3.0)
        assert limiter.state("track", now_us=T0).rate_fraction == 1.0
        assert _slots(limiter, "track", T0 + 2_500_000, 3) == pytest.approx([0.5, 0.51, 0.52])

    def test_pause_never_shortens(self, limiter: Limiter) -> None:
        """Shorter concurrent 429s (with or without Retry-After) never shorten a pause."""
        end = limiter.report_429("track", 5.0, now_us=T0)
        assert limiter.report_429("track", None, now_us=T0 + 1_000_000) == end
        assert limiter.report_429("track", 2.0, now_us=T0 + 2_000_000) == end
        assert limiter.pause("track", 1.0, now_us=T0 + 2_000_000) == end
        assert limiter.report_429("track", 8.0, now_us=T0) == pytest.approx(end + 3.0)

    def test_resume_after_a_429_is_paced(self, limiter: Limiter) -> None:
        """Callers waiting out a pause are released one (slowed) interval apart, not at once."""
        limiter.report_429("track", None, now_us=T0)
        waits = _slots(limiter, "track", T0 + 500_000, 5)
        assert waits == pytest.approx([0.5, 0.52, 0.54, 0.56, 0.58])

    def test_broadcast_window_is_one_slot(self, limiter: Limiter) -> None:
        """Where slots are 10 s apart, one window is one slot: a 1 s pause would hold nothing."""
        end = limiter.report_429("broadcast", None, now_us=T0)
        assert end == pytest.approx(T0 / 1e6 + 10.0)

    def test_retry_after_is_capped_and_sanitised(self, limiter: Limiter) -> None:
        """Absurd Retry-After values are capped, past dates mean no pause, NaN counts as absent."""
        assert limiter.report_429("track", 1e9, now_us=T0) == pytest.approx(T0 / 1e6 + MAX_PAUSE_S)
        assert limiter.report_429("app", -5.0, now_us=T0) == pytest.approx(T0 / 1e6)
        assert limiter.state("app", now_us=T0).paused_for_s == 0.0
        limiter.report_429("transactional", float("nan"), now_us=T0)
        assert limiter.state("transactional", now_us=T0).rate_fraction == pytest.approx(0.5)

    def test_every_key_has_a_ttl_and_the_bucket_hash_tag(
        self, limiter: Limiter, redis_client: redis.Redis, settings: Settings
    ) -> None:
        """TAT, pause and slowdown keys all expire; the slowdown key when fully recovered."""
        limiter.reserve("track", now_us=T0)
        limiter.report_429("track", None, now_us=T0)
        names = sorted(k.decode() for k in redis_client.scan_iter(match="cio:*"))
        tag = "{limiter:" + workspace_of(settings, "track") + ":track}"
        assert names == [keys.limiter(workspace_of(settings, "track"), "track", p)
                         for p in ("pause", "slow", "tat")]  # fmt: skip
        assert all(tag in name for name in names)
        assert all(0 < redis_client.pttl(name) for name in names)
        slow_ttl_ms = redis_client.pttl(names[1])
        # One window of pause, then 5 s from half back to full, plus a second of slack.
        assert 6_000 < slow_ttl_ms <= 7_000

    def test_uses_redis_time_when_no_clock_given(self, limiter: Limiter) -> None:
        """Without an explicit now the pause is measured on Redis' clock (same host here)."""
        before = time.time()
        end = limiter.report_429("app", None)
        assert before + 0.9 < end < time.time() + 1.1
        state = limiter.state("app")
        assert 0.0 < state.paused_for_s <= 1.0
        assert state.rate_fraction == pytest.approx(0.5)

    def test_redis_down_returns_zero(self, settings: Settings) -> None:
        """With Redis unreachable nothing is recorded and the caller learns the end is unknown."""
        dead = _unreachable_redis()
        assert Limiter(settings, dead).report_429("track", None) == 0.0


class TestState:
    def test_idle_bucket(self, settings: Settings, redis_client: redis.Redis) -> None:
        """An untouched bucket: not paused, full fraction, configured x margin."""
        limiter = Limiter(settings.replace(rate_margin=0.97), redis_client)
        state = limiter.state("app", now_us=T0)
        assert state == BucketState(
            bucket="app",
            paused_for_s=0.0,
            rate_fraction=1.0,
            configured_rps=10.0,
            effective_rps=pytest.approx(9.7),
        )

    def test_reports_pause_and_slowdown(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """After a 429: the pause left, the halved fraction and the rate the fleet now aims for."""
        limiter = Limiter(settings.replace(rate_margin=0.97), redis_client)
        limiter.report_429("track", None, now_us=T0)
        state = limiter.state("track", now_us=T0 + 250_000)
        assert state.paused_for_s == pytest.approx(0.75)
        assert state.rate_fraction == pytest.approx(0.5)
        assert state.configured_rps == 100.0
        assert state.effective_rps == pytest.approx(100 * 0.97 * 0.5)

    def test_raises_when_redis_is_down(self, settings: Settings) -> None:
        """A status read cannot fail closed: it says Redis is unreachable."""
        dead = _unreachable_redis()
        with pytest.raises(redis.RedisError):
            Limiter(settings, dead).state("track")


class TestAcquireAfter429:
    def test_slot_reserved_before_a_429_is_not_sent_into_the_pause(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """A caller already waiting for its slot when another worker's 429 lands re-queues."""
        other = Limiter(settings, redis_client)

        def sleep_while_another_worker_meets_a_429(_seconds: float) -> None:
            if limiter.state("track").paused_for_s == 0:
                other.report_429("track", 2.0)

        limiter = Limiter(settings, redis_client, sleep=sleep_while_another_worker_meets_a_429)
        limiter.acquire("track")  # the first slot goes at once, without sleeping
        with pytest.raises(RateLimitedError) as info:
            limiter.acquire("track")
        assert info.value.status_code is None  # not a 429 of its own: no count, no attempt
        assert info.value.retry_after_seconds is not None
        assert 1.5 < info.value.retry_after_seconds <= 2.0

    def test_pause_known_at_reservation_is_waited_out(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """A pause that already existed only delays the slot; the request then goes."""
        limiter = Limiter(settings, redis_client, sleep=lambda _: None)
        limiter.report_429("track", 0.05)
        assert 0.04 < limiter.acquire("track") < 0.5  # time actually waited, Redis included


class TestLateWakeUp:
    def _counting(self, limiter: Limiter) -> list[int]:
        calls: list[int] = []
        original = limiter._reserve

        def counted(bucket: str, now_us: int | None) -> tuple[bool, int, int]:
            calls.append(1)
            return original(bucket, now_us)

        limiter._reserve = counted  # type: ignore[method-assign]
        return calls

    def test_a_caller_that_wakes_late_takes_a_fresh_slot(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """Woken 50 ms after its slot (tolerance 15 ms at 100/s): it gives the slot up and takes
        a fresh one, instead of sending late into the next requests' window."""
        limiter = Limiter(settings, redis_client, sleep=lambda s: time.sleep(s + 0.05))
        limiter.reserve("track")  # someone else's slot: this caller must wait ~10 ms
        calls = self._counting(limiter)
        limiter.acquire("track")
        assert len(calls) == 2

    def test_an_on_time_caller_takes_one_slot(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        limiter = Limiter(settings, redis_client)
        limiter.reserve("track")
        calls = self._counting(limiter)
        limiter.acquire("track")
        assert len(calls) == 1

    def test_a_caller_that_is_always_late_still_sends(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """On a host that never wakes on time, lateness is given up on after MAX_LATE_RETRIES:
        the request goes rather than looping."""
        from cio_worker.limiter._limiter import MAX_LATE_RETRIES

        limiter = Limiter(settings, redis_client)
        limiter._late_tolerance_s = lambda bucket: -1.0  # type: ignore[method-assign]
        calls = self._counting(limiter)
        limiter.acquire("track")
        assert len(calls) == MAX_LATE_RETRIES + 1
