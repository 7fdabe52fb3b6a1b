"""Issue 18: idle workers wait on doorbells instead of polling Redis; queued Track events are one
record each; a shard left by the layout before that is adopted in order.

Real redis-server throughout (tests/conftest.py). Figures (commands/s, bytes) are bench/fleet.py's
to print; these tests check the mechanisms: who rings, who wakes, what is stored, what is moved.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from cio_worker import keys
from cio_worker.config import Settings
from cio_worker.customerio import CustomerIoClient
from cio_worker.job import Job
from cio_worker.kinds import Family, Kind
from cio_worker.limiter import Limiter
from cio_worker.produce import Producer
from cio_worker.queue import (
    IDLE_WAIT_S,
    SHARDS,
    BatchQueue,
    DeadLetterStore,
    Doorbell,
    JobLedger,
    ScheduledJobs,
    Sweeper,
    batch_bell,
    due_bell,
)
from cio_worker.queue._shards import shard_of
from cio_worker.worker._batcher import Batcher


@pytest.fixture
def producer(batch_settings: Settings, redis_client: redis.Redis) -> Producer:
    return Producer(batch_settings, redis_client=redis_client)


@pytest.fixture
def track_bell(batch_settings: Settings) -> Iterator[Doorbell]:
    bell = Doorbell(batch_settings, batch_bell("track"), owner="test-owner")
    yield bell
    bell.close()


def commands(client: redis.Redis) -> dict[str, int]:
    """Calls per command so far (INFO commandstats)."""
    raw: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in raw.items()}


class TestDoorbell:
    def test_an_enqueue_rings_the_bell_of_its_api(self, producer, track_bell) -> None:
        """A sender blocked on the bell wakes when a producer writes a batched job."""
        woke: list[bool] = []
        waiter = threading.Thread(target=lambda: woke.append(track_bell.wait(IDLE_WAIT_S)))
        waiter.start()
        time.sleep(0.2)  # let it block
        producer.enqueue_track("u-1", "Viewed")
        waiter.join(IDLE_WAIT_S + 2)
        assert woke == [True]  # rung, not timed out

    def test_a_ring_nobody_hears_waits_for_the_next_waiter_but_only_one(
        self, producer, track_bell, redis_client
    ) -> None:
        """No lost wake-up between "found nothing" and "started waiting"; and a thousand rings
        leave one token, not a thousand wake-ups."""
        for i in range(1000):
            producer.enqueue_track(f"u-{i}", "Viewed")
        assert redis_client.llen(batch_bell("track")) == 1
        assert track_bell.wait(IDLE_WAIT_S) is True
        assert track_bell.wait(0.05) is False

    def test_waking_a_process_wakes_only_its_own_waiters(
        self, batch_settings: Settings, track_bell
    ) -> None:
        other = Doorbell(batch_settings, batch_bell("track"), owner="someone-else")
        try:
            track_bell.wake(1)
            assert other.wait(0.05) is False
            assert track_bell.wait(0.05) is True
        finally:
            other.close()

    def test_retry_now_rings_the_due_bell(
        self, batch_settings: Settings, redis_client: redis.Redis
    ) -> None:
        ledger = JobLedger(redis_client)
        job = Job("01M8Q8C9EEXT51CFTDYGK4G8JP", Kind.SEND_EMAIL, {"to": "a@b.co"}, 0.0)
        ledger.enqueue(job)
        redis_client.zadd(keys.delayed(), {job.id: 9_999_999_999_999})
        redis_client.delete(due_bell())
        assert ScheduledJobs(redis_client).retry_now([job.id]) == 1
        assert redis_client.llen(due_bell()) == 1


@pytest.fixture
def batcher(batch_settings: Settings, redis_client: redis.Redis) -> Iterator[Batcher]:
    s = batch_settings.replace(batch_linger_ms=0)
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    batcher = Batcher(
        settings=s,
        redis=redis_client,
        client=CustomerIoClient(s, transport=httpx.MockTransport(answer)),
        limiter=Limiter(s, redis_client, sleep=lambda _: None),
        dead_letters=DeadLetterStore(redis_client),
        owner="w1",
    )
    batcher.sent = sent  # type: ignore[attr-defined]
    yield batcher
    batcher.stop(timeout=1)


class TestIdleSenders:
    def test_idle_senders_wait_in_redis_and_a_lone_event_still_goes_at_once(
        self, batcher: Batcher, producer, redis_client: redis.Redis
    ) -> None:
        batcher.start()
        time.sleep(0.5)  # both threads find nothing and block on the bell
        before = commands(redis_client)
        time.sleep(1.0)
        spent = sum(commands(redis_client).values()) - sum(before.values())
        # Polling every 50 ms over 16 shards was about 4,000 commands in that second (two
        # threads); blocked, the threads send none (INFO itself is one).
        assert spent <= 5, (before, commands(redis_client))
        producer.enqueue_track("u-1", "Viewed")
        deadline = time.monotonic() + IDLE_WAIT_S - 1  # sooner than any timeout would look
        while not batcher.sent and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.01)
        assert len(batcher.sent) == 1  # type: ignore[attr-defined]

    def test_stop_wakes_blocked_senders_at_once(self, batcher: Batcher) -> None:
        batcher.start()
        time.sleep(0.3)
        threads = list(batcher._workers)
        started = time.monotonic()
        batcher.stop(timeout=IDLE_WAIT_S + 1)
        assert not any(thread.is_alive() for thread in threads)
        assert time.monotonic() - started < IDLE_WAIT_S  # woken, not timed out


class TestIdleSweeper:
    def test_a_retry_scheduled_elsewhere_wakes_the_sleeping_sweeper(
        self, batch_settings: Settings, redis_client: redis.Redis
    ) -> None:
        """The sweeper sleeps on the due bell (nothing is due); a deferral by another process
        rings it, so the job is pushed at its time, not at the sweeper's next timeout."""
        ledger = JobLedger(redis_client)
        job = Job("01M8Q8C9EEXT51CFTDYGK4G8JP", Kind.SEND_EMAIL, {"to": "a@b.co"}, 0.0)
        ledger.enqueue(job)
        redis_client.delete("cio.transactional")
        bell = Doorbell(batch_settings, due_bell(), owner="sweeper-test")
        sweeper = Sweeper(redis_client, settings=batch_settings, sweep_interval_s=60, doorbell=bell)
        sweeper.start()
        try:
            time.sleep(0.5)  # nothing due: asleep on the bell for up to IDLE_WAIT_S
            assert ledger.claim(job.id, Family.TRANSACTIONAL, "other-worker", 30).outcome == "ok"
            assert ledger.defer(job.id, 0.2, "other-worker")
            deadline = time.monotonic() + IDLE_WAIT_S - 1.5
            while not redis_client.llen("cio.transactional") and time.monotonic() < deadline:
                time.sleep(0.02)
            assert redis_client.llen("cio.transactional") == 1
        finally:
            sweeper.stop(timeout=IDLE_WAIT_S + 1)
            bell.close()


class TestCompactShards:
    def test_a_queued_event_is_one_record_and_one_id(
        self, producer, redis_client: redis.Redis
    ) -> None:
        job_id = producer.enqueue_track("u-1", "Viewed", {"n": 1})
        shard = next(
            s for s in range(SHARDS) if redis_client.hexists(keys.batch_jobs("track", s), job_id)
        )
        base = keys.batch_queue("track", shard)
        assert sorted(k.decode() for k in redis_client.keys(f"{base}*")) == [base, f"{base}:jobs"]
        record = json.loads(redis_client.hget(keys.batch_jobs("track", shard), job_id))
        assert record == {
            "kind": "track",
            "payload": {"user_id": "u-1", "event": "Viewed", "properties": {"n": 1},
                        "timestamp": None},
        }  # fmt: skip


def write_layout_1(client: redis.Redis, api: str, jobs: list[Job], *, attempts: int = 0) -> int:
    """Queue `jobs` the way cio_worker wrote shards before issue 18 (one person: one shard)."""
    shard = shard_of(jobs[0])
    base = keys.legacy_batch_shard(api, shard)
    for job in jobs:
        client.hset(f"{base}:jobs", job.id, job.to_json())
        client.hset(f"{base}:items", job.id, '{"stale":"item"}')
        client.lpush(base, job.id)
        if attempts:
            client.hset(f"{base}:meta", f"{job.id}:attempts", attempts)
    return shard


def track_job(n: int, user: str = "u-1") -> Job:
    from cio_worker.produce._jobs import JobDraft, new_job

    payload = {"user_id": user, "event": f"e{n}", "properties": {}, "timestamp": None}
    return new_job(JobDraft(Kind.TRACK, payload))


class TestLegacyShards:
    def test_jobs_of_the_old_layout_go_first_and_in_order(
        self, producer, redis_client: redis.Redis
    ) -> None:
        old = [track_job(n) for n in range(3)]
        shard = write_layout_1(redis_client, "track", old, attempts=2)
        new_id = producer.enqueue_track("u-1", "after the upgrade")
        queue = BatchQueue(redis_client, "track")
        assert queue.adopt_legacy() == 3
        assert not redis_client.keys(f"{keys.legacy_batch_shard('track', shard)}*")
        taken = queue.take("w1", max_bytes=450_000, linger_ms=0)
        assert not isinstance(taken, float) and taken is not None
        assert [item.job_id for item in taken.items] == [job.id for job in old] + [new_id]
        assert [item.job() for item in taken.items[:3]] == old
        assert [item.attempts for item in taken.items] == [2, 2, 2, 0]
        assert queue.adopt_legacy() == 0

    def test_a_batch_an_old_worker_is_sending_is_left_to_it(
        self, redis_client: redis.Redis
    ) -> None:
        old = [track_job(n) for n in range(2)]
        shard = write_layout_1(redis_client, "track", old)
        inflight = f"{keys.legacy_batch_shard('track', shard)}:inflight"
        lease_until = int(time.time() * 1000) + 60_000
        redis_client.hset(inflight, mapping={"owner": "old", "lease_until": lease_until,
                                             "ids": json.dumps([old[0].id])})  # fmt: skip
        assert BatchQueue(redis_client, "track").adopt_legacy() == 0
        assert redis_client.llen(keys.legacy_batch_shard("track", shard)) == 2

    def test_a_dead_old_senders_batch_comes_back_first_with_an_attempt(
        self, redis_client: redis.Redis
    ) -> None:
        old = [track_job(n) for n in range(3)]
        shard = write_layout_1(redis_client, "track", old[1:])
        base = keys.legacy_batch_shard("track", shard)
        redis_client.hset(f"{base}:jobs", old[0].id, old[0].to_json())
        redis_client.hset(f"{base}:inflight", mapping={"owner": "dead", "lease_until": 1,
                                                       "ids": json.dumps([old[0].id])})  # fmt: skip
        queue = BatchQueue(redis_client, "track")
        assert queue.adopt_legacy() == 3
        taken = queue.take("w1", max_bytes=450_000, linger_ms=0)
        assert not isinstance(taken, float) and taken is not None
        # A suspect goes alone, with the attempt its lost batch cost.
        assert [(item.job_id, item.attempts) for item in taken.items] == [(old[0].id, 1)]

    def test_a_long_old_shard_moves_in_chunks_and_keeps_its_order(
        self, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from cio_worker.queue import _shards

        monkeypatch.setattr(_shards, "ADOPT_CHUNK", 7)
        old = [track_job(n) for n in range(20)]
        write_layout_1(redis_client, "track", old)
        queue = BatchQueue(redis_client, "track")
        assert queue.adopt_legacy() == 20
        redis_client.delete(*(keys.batch_hold("track", s) for s in range(SHARDS)))
        taken = queue.take("w1", max_bytes=450_000, linger_ms=0)
        assert not isinstance(taken, float) and taken is not None
        assert [item.job_id for item in taken.items] == [job.id for job in old]
