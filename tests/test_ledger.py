"""The job ledger's state machine against a real redis-server: claim, renew, defer, end, re-push."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from cio_worker import keys
from cio_worker.kinds import Family
from cio_worker.produce._producer import Producer
from cio_worker.queue._deadletter import DeadLetterStore
from cio_worker.queue._ledger import ErrorRecord, JobLedger
from cio_worker.queue._sweeper import Sweeper

TRACK = Family.TRACK


@pytest.fixture
def ledger(redis_client: redis.Redis) -> JobLedger:
    return JobLedger(redis_client)


@pytest.fixture
def producer(settings, redis_client: redis.Redis) -> Producer:
    return Producer(settings, redis_client=redis_client)


def field(client: redis.Redis, job_id: str, name: str) -> str | None:
    raw = client.hget(keys.job(job_id), name)
    return raw.decode() if raw is not None else None


def expire_lease(client: redis.Redis, job_id: str) -> None:
    """Make a running job's lease look a minute old, as if its worker died."""
    past = int(time.time() * 1000) - 60_000
    client.hset(keys.job(job_id), "lease_until", past)
    client.zadd(keys.leases(), {job_id: past})


class TestClaim:
    def test_claim_takes_the_job_and_leaves_the_unclaimed_index(
        self, ledger, producer, redis_client
    ) -> None:
        """A claim marks the job running for its owner, with a lease, and records its seq."""
        job_id = producer.enqueue_track("u1", "Viewed")
        claim = ledger.claim(job_id, TRACK, "w1", 20)
        assert (claim.outcome, claim.attempts) == ("ok", 0)
        assert field(redis_client, job_id, "state") == "running"
        assert field(redis_client, job_id, "owner") == "w1"
        lease = redis_client.zscore(keys.leases(), job_id)
        assert lease is not None and lease > time.time() * 1000 + 15_000
        assert redis_client.zscore(keys.unclaimed("track"), job_id) is None
        assert redis_client.get(keys.claimed_seq("track")) == b"1"

    def test_a_live_lease_makes_a_second_copy_busy(self, ledger, producer) -> None:
        """A duplicate message for a job another live worker holds is not delivered again."""
        job_id = producer.enqueue_send_email(1, identifiers={"id": "u1"}, to="a@example.com")
        assert ledger.claim(job_id, Family.TRANSACTIONAL, "w1", 20).outcome == "ok"
        assert ledger.claim(job_id, Family.TRANSACTIONAL, "w2", 20).outcome == "busy"

    def test_an_ended_job_is_gone(self, ledger, producer) -> None:
        """After completion a redelivered message finds nothing to send."""
        job_id = producer.enqueue_track("u1", "Viewed")
        ledger.claim(job_id, TRACK, "w1", 20)
        entry = ledger.load(job_id)
        assert entry is not None
        ledger.complete(entry.job)
        assert ledger.claim(job_id, TRACK, "w1", 20).outcome == "gone"

    def test_a_deferred_job_is_not_claimed_by_a_stray_message(self, ledger, producer) -> None:
        """While a job waits in the delayed set, a duplicate message cannot run it early."""
        job_id = producer.enqueue_track("u1", "Viewed")
        ledger.claim(job_id, TRACK, "w1", 20)
        assert ledger.defer(job_id, 30, "w1")
        assert ledger.claim(job_id, TRACK, "w2", 20).outcome == "delayed"

    def test_taking_over_an_expired_lease_counts_the_lost_attempt(
        self, ledger, producer, redis_client
    ) -> None:
        """A worker that died mid-job used an attempt; the reason says so."""
        job_id = producer.enqueue_track("u1", "Viewed")
        ledger.claim(job_id, TRACK, "dead-worker", 20)
        expire_lease(redis_client, job_id)
        claim = ledger.claim(job_id, TRACK, "w2", 20)
        assert (claim.outcome, claim.attempts) == ("ok", 1)
        entry = ledger.load(job_id)
        assert entry is not None and entry.last_error is not None
        assert "worker lost" in entry.last_error["reason"]


class TestLeases:
    def test_heartbeat_renews_only_the_owners_leases(self, ledger, producer, redis_client) -> None:
        """Renewal extends the caller's own leases and leaves another owner's alone."""
        mine = producer.enqueue_track("u1", "A")
        theirs = producer.enqueue_track("u2", "B")
        ledger.claim(mine, TRACK, "w1", 1)
        ledger.claim(theirs, TRACK, "w2", 1)
        before = redis_client.zscore(keys.leases(), theirs)
        assert ledger.heartbeat("w1", [mine, theirs], 60) == 1
        assert redis_client.zscore(keys.leases(), mine) > time.time() * 1000 + 50_000
        assert redis_client.zscore(keys.leases(), theirs) == before


class TestDeferAndDue:
    def test_defer_parks_the_job_until_its_time(self, ledger, producer, redis_client) -> None:
        """A deferred job leaves the leases and waits in keys.delayed, scored by its due time."""
        job_id = producer.enqueue_identify("u1")
        redis_client.rpop("cio.track")  # the worker took the message
        ledger.claim(job_id, TRACK, "w1", 20)
        assert ledger.defer(job_id, 5.0, "w1")
        due = redis_client.zscore(keys.delayed(), job_id)
        assert due == pytest.approx(time.time() * 1000 + 5000, abs=1000)
        assert redis_client.zscore(keys.leases(), job_id) is None
        assert ledger.due() == []
        redis_client.zadd(keys.delayed(), {job_id: 0})
        assert ledger.due() == [(job_id, "identify")]

    def test_a_due_job_is_pushed_once_by_concurrent_sweepers(
        self, ledger, producer, redis_client
    ) -> None:
        """Ten sweepers racing for one due job push exactly one message."""
        job_id = producer.enqueue_identify("u1")
        redis_client.rpop("cio.track")
        ledger.claim(job_id, TRACK, "w1", 20)
        ledger.defer(job_id, 0, "w1")
        with ThreadPoolExecutor(10) as pool:
            racers = [pool.submit(ledger.push_again, job_id, "identify", "due") for _ in range(10)]
            pushed = [racer.result() for racer in racers]
        assert pushed.count(True) == 1
        assert redis_client.llen("cio.track") == 1
        assert field(redis_client, job_id, "state") == "queued"
        assert redis_client.zscore(keys.unclaimed("track"), job_id) == 2


class TestEnd:
    def test_complete_clears_every_index(self, ledger, producer, redis_client) -> None:
        """Delivery leaves no trace of the job but the counter."""
        job_id = producer.enqueue_identify("u1")
        ledger.claim(job_id, TRACK, "w1", 20)
        entry = ledger.load(job_id)
        assert entry is not None
        ledger.complete(entry.job)
        assert not redis_client.exists(keys.job(job_id))
        for index in (keys.leases(), keys.delayed(), keys.unclaimed("track")):
            assert redis_client.zscore(index, job_id) is None

    def test_dead_letter_clears_every_index(self, ledger, producer, redis_client) -> None:
        """A dead-lettered job is in no index the sweeper reads."""
        job_id = producer.enqueue_identify("u1")
        ledger.claim(job_id, TRACK, "w1", 20)
        entry = ledger.load(job_id)
        assert entry is not None
        error = ErrorRecord(reason="400: bad", status=400, body_excerpt=None, at=time.time())
        DeadLetterStore(redis_client).add(entry.job, 1, error, None)
        for index in (keys.leases(), keys.delayed(), keys.unclaimed("track")):
            assert redis_client.zscore(index, job_id) is None


class TestSweeper:
    def test_expired_lease_is_pushed_again_with_an_attempt(
        self, ledger, producer, redis_client
    ) -> None:
        """A dead worker's job goes back to its queue, one attempt used."""
        job_id = producer.enqueue_track("u1", "Viewed")
        redis_client.rpop("cio.track")
        ledger.claim(job_id, TRACK, "dead-worker", 20)
        sweeper = Sweeper(redis_client)
        assert sweeper.reclaim_expired() == 0  # lease still valid
        expire_lease(redis_client, job_id)
        assert sweeper.reclaim_expired() == 1
        assert redis_client.llen("cio.track") == 1
        assert field(redis_client, job_id, "attempts") == "1"
        assert field(redis_client, job_id, "state") == "queued"
        assert redis_client.zscore(keys.unclaimed("track"), job_id) == 2

    def test_a_message_lost_after_pop_is_found_once_a_later_job_is_claimed(
        self, ledger, producer, redis_client
    ) -> None:
        """Kombu popped job A and died before recording it; B was claimed after it: A returns."""
        lost = producer.enqueue_track("u1", "A")
        later = producer.enqueue_track("u1", "B")
        redis_client.rpop("cio.track")  # A's message, lost in the gap
        redis_client.rpop("cio.track")
        ledger.claim(later, TRACK, "w1", 20)
        sweeper = Sweeper(redis_client, stray_grace_s=0.3)
        assert sweeper.recover_strays() == 0  # first sighting only marks it
        time.sleep(0.35)
        assert sweeper.recover_strays() == 1
        assert redis_client.llen("cio.track") == 1
        assert ledger.claim(lost, TRACK, "w2", 20).outcome == "ok"

    def test_a_waiting_message_is_not_a_stray(self, producer, redis_client) -> None:
        """Jobs still in a non-empty queue behind every claim are left alone."""
        producer.enqueue_track("u1", "A")
        producer.enqueue_track("u1", "B")
        sweeper = Sweeper(redis_client, stray_grace_s=0)
        assert sweeper.recover_strays() == 0
        assert redis_client.llen("cio.track") == 2

    def test_the_last_message_lost_is_found_when_the_queue_is_empty(
        self, producer, redis_client
    ) -> None:
        """With no later claim to compare, an empty queue shows the unclaimed job is lost."""
        producer.enqueue_send_email(1, identifiers={"id": "u1"}, to="a@example.com")
        redis_client.rpop("cio.transactional")
        sweeper = Sweeper(redis_client, stray_grace_s=0.2)
        assert sweeper.recover_strays() == 0  # marks
        time.sleep(0.25)
        assert sweeper.recover_strays() == 1
        assert redis_client.llen("cio.transactional") == 1

    def test_only_one_sweeper_in_the_fleet_sweeps_at_a_time(
        self, ledger, producer, redis_client
    ) -> None:
        """The sweep lock keeps two workers from sweeping in the same interval."""
        job_id = producer.enqueue_track("u1", "Viewed")
        redis_client.rpop("cio.track")
        ledger.claim(job_id, TRACK, "dead-worker", 20)
        expire_lease(redis_client, job_id)
        first, second = Sweeper(redis_client), Sweeper(redis_client)
        second.sweep()
        assert redis_client.llen("cio.track") == 1
        redis_client.rpop("cio.track")
        ledger.claim(job_id, TRACK, "dead-again", 20)
        expire_lease(redis_client, job_id)
        first.sweep()  # within the interval: locked out
        assert redis_client.llen("cio.track") == 0

    def test_the_thread_moves_due_jobs(self, ledger, producer, redis_client) -> None:
        """Started as a thread, the sweeper pushes a deferred job at its due time."""
        job_id = producer.enqueue_identify("u1")
        redis_client.rpop("cio.track")
        ledger.claim(job_id, TRACK, "w1", 20)
        ledger.defer(job_id, 0.3, "w1")
        sweeper = Sweeper(redis_client, due_interval_s=0.05)
        sweeper.start()
        try:
            deadline = time.monotonic() + 5
            while redis_client.llen("cio.track") == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            sweeper.stop()
        assert redis_client.llen("cio.track") == 1
        assert field(redis_client, job_id, "state") == "queued"
