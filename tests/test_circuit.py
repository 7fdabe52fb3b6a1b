"""The circuit breaker (limiter/_circuit.py) against a real Redis, with explicit times where they
matter."""

from __future__ import annotations

import pytest
import redis

from cio_worker import keys
from cio_worker.config import Settings
from cio_worker.connection import create_redis
from cio_worker.limiter._circuit import Circuit, Gate
from cio_worker.queue._ledger import stats

T0 = 1_000_000_000_000  # an explicit "now", ms


@pytest.fixture
def circuit(settings: Settings, redis_client: redis.Redis) -> Circuit:
    s = settings.replace(
        circuit_threshold=3, circuit_window_s=10, circuit_probe_min_s=1, circuit_probe_max_s=4
    )
    return Circuit(s, redis_client)


def open_it(circuit: Circuit, bucket: str = "track", now: int = T0) -> None:
    for _ in range(circuit.settings.circuit_threshold):
        circuit.failure(bucket, now_ms=now)
    assert circuit.state(bucket, now_ms=now).state == "open"


class TestOpening:
    def test_threshold_failures_in_a_row_open_it(self, circuit: Circuit, redis_client) -> None:
        assert circuit.failure("track", now_ms=T0).healthy
        assert circuit.failure("track", now_ms=T0 + 1).healthy
        third = circuit.failure("track", now_ms=T0 + 2)
        assert not third.healthy and third.opened
        assert circuit.admit("track", now_ms=T0 + 3).state == "open"
        assert stats(redis_client)["circuit:track:opened"] == 1

    def test_an_answer_resets_the_count(self, circuit: Circuit) -> None:
        """A job that fails while others succeed never opens the circuit: its failures are
        its own."""
        for i in range(10):
            assert circuit.failure("track", now_ms=T0 + i).healthy
            assert circuit.failure("track", now_ms=T0 + i).healthy
            circuit.success("track", now_ms=T0 + i)
        assert circuit.state("track", now_ms=T0 + 10).state == "closed"

    def test_failures_older_than_the_window_do_not_count(self, circuit: Circuit) -> None:
        circuit.failure("track", now_ms=T0)
        circuit.failure("track", now_ms=T0 + 1)
        assert circuit.failure("track", now_ms=T0 + 10_002).healthy  # the count started again
        assert circuit.state("track", now_ms=T0 + 10_003).failures == 1

    def test_buckets_are_independent(self, circuit: Circuit) -> None:
        open_it(circuit, "transactional")
        assert circuit.admit("track", now_ms=T0).state == "closed"
        assert circuit.admit("broadcast", now_ms=T0).state == "closed"
        assert circuit.admit("transactional", now_ms=T0).state == "open"

    def test_a_closed_circuit_with_failures_expires(self, circuit: Circuit, redis_client) -> None:
        """A closed circuit's counter carries a TTL, so idle buckets leave nothing behind."""
        circuit.failure("app", now_ms=T0)
        assert 0 < redis_client.pttl(keys.circuit("app")) <= 20_000


class TestProbing:
    def test_one_probe_at_a_time_after_the_interval(self, circuit: Circuit) -> None:
        open_it(circuit)
        early = circuit.admit("track", now_ms=T0 + 500)
        assert early.state == "open" and early.wait_s == pytest.approx(0.5)
        probe = circuit.admit("track", now_ms=T0 + 1000)
        assert probe.state == "probe" and probe.token
        other = circuit.admit("track", now_ms=T0 + 1001)
        assert other.state == "open"  # the probe holds the turn
        assert circuit.state("track", now_ms=T0 + 1001).probing

    def test_a_failed_probe_doubles_the_interval_up_to_the_cap(self, circuit: Circuit) -> None:
        open_it(circuit)
        now = T0
        intervals = []
        for _ in range(5):
            wait = circuit.admit("track", now_ms=now).wait_s
            now += int(wait * 1000)
            gate = circuit.admit("track", now_ms=now)
            assert gate.state == "probe"
            assert not circuit.failure("track", gate.token, now_ms=now).healthy
            intervals.append(circuit.state("track", now_ms=now).probe_interval_s)
        assert intervals == [2, 4, 4, 4, 4]

    def test_a_straggler_failure_changes_nothing(self, circuit: Circuit) -> None:
        """A request sent before the circuit opened fails late: no new probe timing."""
        open_it(circuit)
        before = circuit.state("track", now_ms=T0 + 10)
        assert not circuit.failure("track", now_ms=T0 + 10).healthy
        assert circuit.state("track", now_ms=T0 + 10) == before

    def test_a_successful_probe_closes_it(self, circuit: Circuit, redis_client) -> None:
        open_it(circuit)
        gate = circuit.admit("track", now_ms=T0 + 1000)
        assert gate.state == "probe"
        circuit.success("track", now_ms=T0 + 1200)
        assert circuit.admit("track", now_ms=T0 + 1201).state == "closed"
        assert circuit.state("track").state == "closed"
        assert stats(redis_client)["circuit:track:closed"] == 1

    def test_an_abandoned_probe_gives_the_turn_back(self, circuit: Circuit) -> None:
        open_it(circuit)
        gate = circuit.admit("track", now_ms=T0 + 1000)
        circuit.abandon(gate, "track")
        assert circuit.admit("track", now_ms=T0 + 1001).state == "probe"

    def test_a_dead_probe_is_retried_after_its_lease(self, circuit: Circuit) -> None:
        open_it(circuit)
        assert circuit.admit("track", now_ms=T0 + 1000).state == "probe"
        lease = circuit.probe_lease_ms
        assert circuit.admit("track", now_ms=T0 + 1000 + lease - 1).state == "open"
        assert circuit.admit("track", now_ms=T0 + 1000 + lease + 1).state == "probe"

    def test_abandoning_a_closed_gate_is_harmless(self, circuit: Circuit) -> None:
        circuit.abandon(Gate("closed"), "track")
        assert circuit.admit("track").state == "closed"


class TestReleasingParkedJobs:
    def park(self, redis_client: redis.Redis, bucket: str, *ids: str) -> None:
        redis_client.zadd(keys.parked(bucket), {job_id: i for i, job_id in enumerate(ids)})

    def test_closed_releases_everything_due_now(self, circuit: Circuit, redis_client) -> None:
        self.park(redis_client, "transactional", "a", "b", "c")
        assert circuit.release_parked(now_ms=T0) == 3
        assert redis_client.zcard(keys.parked("transactional")) == 0
        assert redis_client.zrange(keys.delayed(), 0, -1, withscores=True) == [
            (b"a", T0),
            (b"b", T0),
            (b"c", T0),
        ]

    def test_open_releases_one_probe_when_due(self, circuit: Circuit, redis_client) -> None:
        open_it(circuit, "transactional")
        self.park(redis_client, "transactional", "a", "b", "c")
        assert circuit.release_parked(now_ms=T0 + 999) == 0  # no probe due yet
        assert circuit.release_parked(now_ms=T0 + 1000) == 1
        assert redis_client.zrange(keys.delayed(), 0, -1) == [b"a"]  # the longest parked
        assert circuit.release_parked(now_ms=T0 + 1500) == 0  # the first may not be claimed yet
        circuit.admit("transactional", now_ms=T0 + 1600)  # a worker took it and probes
        assert circuit.release_parked(now_ms=T0 + 3100) == 0  # nobody else while it probes
        assert redis_client.zcard(keys.parked("transactional")) == 2

    def test_nothing_parked_nothing_released(self, circuit: Circuit) -> None:
        open_it(circuit)
        assert circuit.release_parked(now_ms=T0 + 5000) == 0
        assert circuit.state("track", now_ms=T0 + 5000).state == "open"


class TestRedisAway:
    def test_admit_lets_through_and_reports_are_quiet(self, settings: Settings) -> None:
        """Without Redis the breaker steps aside: the limiter, taken next, fails closed."""
        dead = create_redis("redis://127.0.0.1:1/0", timeout_s=0.05, retries=0)
        circuit = Circuit(settings, dead)
        assert circuit.admit("track").state == "closed"
        assert circuit.failure("track").healthy
        circuit.success("track")
        circuit.abandon(Gate("probe", token="t"), "track")
        with pytest.raises(redis.RedisError):
            circuit.state("track")
