"""delivery.Deliverer without Celery: each answer from Customer.io leads to one fate for the job."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
import redis

from cio_worker import keys
from cio_worker.config import Settings
from cio_worker.customerio._http import CustomerIoClient
from cio_worker.kinds import Kind
from cio_worker.limiter._limiter import Limiter
from cio_worker.produce._producer import Producer
from cio_worker.queue._deadletter import DeadLetterStore
from cio_worker.queue._leases import LeaseKeeper
from cio_worker.queue._ledger import JobLedger, stats
from cio_worker.worker._deliverer import Deliverer, Outcome

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def make_deliverer(
    settings: Settings, redis_client: redis.Redis
) -> Callable[..., tuple[Deliverer, list[httpx.Request]]]:
    def make(handler: Handler, **changes: object) -> tuple[Deliverer, list[httpx.Request]]:
        seen: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        s = settings.replace(**changes) if changes else settings
        deliverer = Deliverer(
            settings=s,
            ledger=JobLedger(redis_client),
            dead_letters=DeadLetterStore(redis_client),
            limiter=Limiter(s, redis_client, sleep=lambda _: None),
            client=CustomerIoClient(s, transport=httpx.MockTransport(record)),
            leases=LeaseKeeper(JobLedger(redis_client), "test-owner"),
        )
        return deliverer, seen

    return make


@pytest.fixture
def producer(settings: Settings, redis_client: redis.Redis) -> Producer:
    return Producer(settings, redis_client=redis_client)


_kinds: dict[str, Kind] = {}


def run(deliverer: Deliverer, job_id: str) -> Outcome:
    """Deliver `job_id` as its task would, first making a deferred job due (as the sweeper does)."""
    ledger = deliverer.ledger
    raw = ledger.redis.hget(keys.job(job_id), "kind")
    if raw:
        _kinds[job_id] = Kind(raw.decode())
    if ledger.redis.zscore(keys.delayed(), job_id) is not None:
        ledger.redis.zadd(keys.delayed(), {job_id: 0})
        assert ledger.push_again(job_id, _kinds[job_id].value, "due")
    return deliverer.run(job_id, _kinds[job_id])


def answer(status: int, body: object = None, headers: dict[str, str] | None = None) -> Handler:
    return lambda _: httpx.Response(status, json=body if body is not None else {}, headers=headers)


class TestSuccess:
    def test_delivered_job_is_forgotten_and_counted(
        self, make_deliverer, producer, redis_client
    ) -> None:
        """A 200 ends the job: its record is deleted and `track:delivered` counts it."""
        job_id = producer.enqueue_track("u1", "Signed Up", {"plan": "pro"})
        deliverer, seen = make_deliverer(answer(200))
        outcome = run(deliverer, job_id)
        assert outcome.state == "delivered" and outcome.status == 200
        assert not redis_client.exists(keys.job(job_id))
        assert stats(redis_client)["track:delivered"] == 1
        assert seen[0].url.path == "/api/v1/customers/u1/events"
        assert json.loads(seen[0].content)["id"] == job_id

    def test_redelivered_message_sends_nothing(self, make_deliverer, producer) -> None:
        """A message whose job already ended (crash after 2xx, before ack) sends nothing."""
        job_id = producer.enqueue_send_email(3, identifiers={"id": "u1"}, to="a@example.com")
        deliverer, seen = make_deliverer(answer(200, {"delivery_id": "d1"}))
        assert run(deliverer, job_id).state == "delivered"
        assert run(deliverer, job_id).state == "gone"
        assert len(seen) == 1


class TestRetry:
    def test_server_error_schedules_a_backoff(self, make_deliverer, producer, redis_client) -> None:
        """A 503 counts one attempt, keeps the job and asks for a retry within the backoff cap."""
        job_id = producer.enqueue_identify("u1", {"plan": "pro"})
        deliverer, _ = make_deliverer(answer(503), backoff_base_s=2.0)
        outcome = run(deliverer, job_id)
        assert outcome.state == "retry" and 0 <= outcome.delay_s <= 2.0
        assert int(redis_client.hget(keys.job(job_id), "attempts")) == 1
        assert stats(redis_client)["track:retried"] == 1

    def test_attempts_run_out_into_the_dead_letter_queue(self, make_deliverer, producer) -> None:
        """After max_attempts retryable failures the job is dead-lettered with the last status."""
        job_id = producer.enqueue_identify("u1")
        deliverer, seen = make_deliverer(answer(500), max_attempts=3)
        states = [run(deliverer, job_id).state for _ in range(3)]
        assert states == ["retry", "retry", "dead"]
        letter = deliverer.dead_letters.get(job_id)
        assert letter is not None and letter.attempts == 3 and letter.status == 500
        assert "gave up after 3 attempts" in letter.reason
        assert len(seen) == 3

    def test_429_pauses_the_bucket_without_using_an_attempt(
        self, make_deliverer, producer, redis_client
    ) -> None:
        """A 429 honours Retry-After, pauses the family and leaves attempts untouched."""
        job_id = producer.enqueue_track("u1", "Viewed")
        deliverer, _ = make_deliverer(answer(429, headers={"Retry-After": "3"}))
        outcome = run(deliverer, job_id)
        assert outcome.state == "retry" and outcome.delay_s == pytest.approx(3.0)
        assert int(redis_client.hget(keys.job(job_id), "attempts")) == 0
        assert stats(redis_client)["track:rate_limited"] == 1
        granted, wait = deliverer.limiter.reserve("track")
        assert wait > 2.0  # every worker now waits for the pause

    def test_ambiguous_message_timeout_is_dead_lettered(self, make_deliverer, producer) -> None:
        """A read timeout on an email (no dedup key) dead-letters under `dead`: no resend."""

        def timeout(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("slow", request=request)

        job_id = producer.enqueue_send_email(3, identifiers={"id": "u1"}, to="a@example.com")
        deliverer, _ = make_deliverer(timeout, ambiguous_messages="dead")
        assert run(deliverer, job_id).state == "dead"
        letter = deliverer.dead_letters.get(job_id)
        assert letter is not None and "ambiguous" in letter.reason

    def test_ambiguous_policy_retry_retries(self, make_deliverer, producer) -> None:
        """With CIO_WORKER_AMBIGUOUS_MESSAGES=retry the same timeout is retried."""

        def timeout(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("slow", request=request)

        job_id = producer.enqueue_send_email(3, identifiers={"id": "u1"}, to="a@example.com")
        deliverer, _ = make_deliverer(timeout, ambiguous_messages="retry")
        assert run(deliverer, job_id).state == "retry"

    def test_event_timeout_is_retried(self, make_deliverer, producer) -> None:
        """An event has a dedup id, so a timeout is simply retried."""

        def timeout(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("slow", request=request)

        job_id = producer.enqueue_track("u1", "Viewed")
        deliverer, _ = make_deliverer(timeout)
        assert run(deliverer, job_id).state == "retry"


class TestDeadLetter:
    def test_400_is_dead_lettered_at_once_with_the_body(self, make_deliverer, producer) -> None:
        """A 400 is permanent: one request, then a dead letter keeping status and body excerpt."""
        job_id = producer.enqueue_send_email(3, identifiers={"id": "u1"}, to="a@example.com")
        deliverer, seen = make_deliverer(answer(400, {"meta": {"error": "bad template"}}))
        assert run(deliverer, job_id).state == "dead"
        letter = deliverer.dead_letters.get(job_id)
        assert letter is not None and letter.status == 400
        assert "bad template" in (letter.last_error.get("body") or "")
        assert letter.summary()["kind"] == "send_email" and len(seen) == 1

    def test_401_names_the_credential_family(self, make_deliverer, producer) -> None:
        """A refused App key dead-letters with a reason naming the App credential."""
        job_id = producer.enqueue_broadcast(9)
        deliverer, _ = make_deliverer(answer(401))
        run(deliverer, job_id)
        letter = deliverer.dead_letters.get(job_id)
        assert letter is not None and "CUSTOMERIO_APP_API_KEY" in letter.reason

    def test_unexpected_exception_keeps_the_job(self, make_deliverer, producer) -> None:
        """A bug while delivering dead-letters the job instead of losing it."""

        def boom(request: httpx.Request) -> httpx.Response:
            raise RuntimeError("bug")

        job_id = producer.enqueue_identify("u1")
        deliverer, _ = make_deliverer(boom)
        assert run(deliverer, job_id).state == "dead"
        assert deliverer.dead_letters.get(job_id) is not None

    def test_replay_requeues_with_the_same_id(self, make_deliverer, producer, redis_client) -> None:
        """Replay puts the job back with attempts reset and the same id (dedup id kept)."""
        job_id = producer.enqueue_track("u1", "Viewed")
        deliverer, _ = make_deliverer(answer(422))
        run(deliverer, job_id)
        redis_client.delete("cio.track")
        assert deliverer.dead_letters.replay([job_id], settings=deliverer.settings) == [job_id]
        assert deliverer.dead_letters.get(job_id) is None
        assert int(redis_client.hget(keys.job(job_id), "attempts")) == 0
        message = json.loads(redis_client.lpop("cio.track"))
        assert message["headers"]["id"] == job_id
        fixed, _ = make_deliverer(answer(200))
        assert run(fixed, job_id).state == "delivered"

    def test_retention_trims_old_entries(self, make_deliverer, producer, redis_client) -> None:
        """Entries older than the retention are dropped when a new one arrives."""
        old = producer.enqueue_identify("u1")
        deliverer, _ = make_deliverer(answer(400))
        run(deliverer, old)
        redis_client.zadd(keys.dead_letter_index(), {old: 1.0})  # pretend it is from 1970
        run(deliverer, producer.enqueue_identify("u2"))
        assert deliverer.dead_letters.get(old) is None
        assert deliverer.dead_letters.count() == 1


class TestSlowdown:
    def test_429_without_retry_after_halves_the_bucket_for_everyone(
        self, make_deliverer, producer, redis_client
    ) -> None:
        """No Retry-After: one window's pause and the family's rate halved, attempts untouched."""
        job_id = producer.enqueue_track("u1", "Viewed")
        deliverer, _ = make_deliverer(answer(429))
        outcome = run(deliverer, job_id)
        assert outcome.state == "retry" and 0.5 < outcome.delay_s <= 1.5
        state = deliverer.limiter.state("track")
        assert state.rate_fraction == pytest.approx(0.5, abs=0.01)
        assert state.paused_for_s > 0.5
        assert int(redis_client.hget(keys.job(job_id), "attempts")) == 0
        assert redis_client.zscore(keys.delayed(), job_id) is not None


class TestMetrics:
    def test_each_outcome_is_counted_for_the_fleet(self, make_deliverer, producer) -> None:
        """Delivered, retry, 429 and dead outcomes land in the shared metrics with their labels."""
        from cio_worker.ops._metrics import collect

        delivered = producer.enqueue_track("u1", "A")
        ok, _ = make_deliverer(answer(200))
        run(ok, delivered)
        failing = producer.enqueue_identify("u2")
        run(make_deliverer(answer(503))[0], failing)
        limited = producer.enqueue_page("u3", "https://x.test/")
        run(make_deliverer(answer(429, headers={"Retry-After": "1"}))[0], limited)
        dead = producer.enqueue_delete("u4")
        run(make_deliverer(answer(400))[0], dead)
        snapshot = collect(ok.ledger.redis, ok.settings)
        assert snapshot.deliveries[("track", "track", "delivered")] == 1
        assert snapshot.deliveries[("track", "identify", "retry")] == 1
        assert snapshot.deliveries[("track", "page", "rate_limited")] == 1
        assert snapshot.deliveries[("track", "delete", "dead")] == 1
        assert snapshot.latency["track"].count == 1


class TestWorkerDiedWhileSending:
    def _died_mid_request(self, deliverer: Deliverer, redis_client, job_id: str) -> None:
        """A previous worker claimed the job, marked the request as sent, and was SIGKILLed."""
        deliverer.ledger.claim(job_id, Kind.SEND_EMAIL.family, "dead-worker", 20)
        deliverer.ledger.mark_sending(job_id)
        redis_client.hset(keys.job(job_id), "lease_until", 0)

    def test_an_email_that_may_have_been_sent_is_dead_lettered_under_dead(
        self, make_deliverer, producer, redis_client
    ) -> None:
        """No second email: the dead letter says why, and nothing is sent."""
        job_id = producer.enqueue_send_email(3, identifiers={"id": "u1"}, to="a@example.com")
        deliverer, seen = make_deliverer(
            answer(200, {"delivery_id": "d1"}), ambiguous_messages="dead"
        )
        self._died_mid_request(deliverer, redis_client, job_id)
        assert run(deliverer, job_id).state == "dead"
        letter = deliverer.dead_letters.get(job_id)
        assert letter is not None and "worker died while the request was in flight" in letter.reason
        assert seen == []

    def test_with_the_retry_policy_it_is_sent_again(
        self, make_deliverer, producer, redis_client
    ) -> None:
        """CIO_WORKER_AMBIGUOUS_MESSAGES=retry accepts a possible duplicate and delivers."""
        job_id = producer.enqueue_send_email(3, identifiers={"id": "u1"}, to="a@example.com")
        deliverer, seen = make_deliverer(
            answer(200, {"delivery_id": "d1"}), ambiguous_messages="retry"
        )
        self._died_mid_request(deliverer, redis_client, job_id)
        assert run(deliverer, job_id).state == "delivered"
        assert len(seen) == 1

    def test_a_failed_attempt_clears_the_mark(self, make_deliverer, producer, redis_client) -> None:
        """An answered request (here a 503) is not ambiguous: the retry is sent normally."""
        job_id = producer.enqueue_send_email(3, identifiers={"id": "u1"}, to="a@example.com")
        failing, _ = make_deliverer(answer(503))
        assert run(failing, job_id).state == "retry"
        assert redis_client.hget(keys.job(job_id), "sending") is None
        ok, seen = make_deliverer(answer(200, {"delivery_id": "d1"}))
        assert run(ok, job_id).state == "delivered" and len(seen) == 1


class TestRecordingASuccessDuringARedisOutage:
    def test_the_write_is_retried_until_redis_answers(self) -> None:
        """A 2xx is never thrown away because Redis blinked while it was being recorded."""
        from cio_worker.worker._deliverer import complete_despite_outage

        calls: list[int] = []

        def record() -> str:
            calls.append(1)
            if len(calls) < 3:
                raise redis.ConnectionError("Redis restarting")
            return "recorded"

        slept: list[float] = []
        assert complete_despite_outage(record, job_id="j", sleep=slept.append) == "recorded"
        assert len(calls) == 3 and slept == [0.1, 0.2]

    def test_it_gives_up_only_after_its_patience(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from cio_worker.worker import _deliverer as delivery

        monkeypatch.setattr(delivery, "COMPLETE_PATIENCE_S", 0.05)

        def record() -> None:
            raise redis.ConnectionError("still down")

        with pytest.raises(redis.ConnectionError):
            delivery.complete_despite_outage(record, job_id="j", sleep=lambda _: None)
