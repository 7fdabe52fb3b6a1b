"""Outages through the delivery code (no Celery): a real Redis, Customer.io as an httpx mock.

The circuit's own rules are in test_circuit.py and fate's in test_fate.py; these check that both
delivery paths (one job per request, batches) carry them out: an outage spends no attempt and
sends only probes, the backlog drains once a probe succeeds, a job that fails alone still runs
out of attempts, and the retry budget ends everything eventually.
"""

from __future__ import annotations

import time
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
from cio_worker.queue._shards import SHARDS
from cio_worker.queue._sweeper import Sweeper
from cio_worker.worker._batcher import Batcher
from cio_worker.worker._deliverer import Deliverer, Outcome

Handler = Callable[[httpx.Request], httpx.Response]

#: Probes are made due by the test (`probe_due`), never by the clock: no timing can flake.
OUTAGE_SETTINGS = {
    "circuit_threshold": 3,
    "circuit_probe_min_s": 60,
    "circuit_probe_max_s": 120,
    "backoff_base_s": 0.001,
    "backoff_max_s": 0.001,
    "max_attempts": 3,
}


class Api:
    """Customer.io as seen by the client: up, down (a status), or partitioned (refused)."""

    def __init__(self) -> None:
        self.down: int | None = None
        self.refused = False
        self.requests: list[httpx.Request] = []
        self.fail_when: Callable[[httpx.Request], bool] = lambda _: False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.refused:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if self.down is not None:
            return httpx.Response(self.down, json={"meta": {"error": "down"}})
        if self.fail_when(request):
            return httpx.Response(500, json={"meta": {"error": "this one"}})
        return httpx.Response(200, json={"delivery_id": "d"})


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.fixture
def outage_settings(settings: Settings) -> Settings:
    return settings.replace(**OUTAGE_SETTINGS)


@pytest.fixture
def deliverer(outage_settings: Settings, redis_client: redis.Redis, api: Api) -> Deliverer:
    return Deliverer(
        settings=outage_settings,
        ledger=JobLedger(redis_client),
        dead_letters=DeadLetterStore(redis_client),
        limiter=Limiter(outage_settings, redis_client, sleep=lambda _: None),
        client=CustomerIoClient(outage_settings, transport=httpx.MockTransport(api)),
        leases=LeaseKeeper(JobLedger(redis_client), "test-owner"),
    )


@pytest.fixture
def producer(outage_settings: Settings, redis_client: redis.Redis) -> Producer:
    return Producer(outage_settings, redis_client=redis_client)


@pytest.fixture
def sweeper(outage_settings: Settings, redis_client: redis.Redis) -> Sweeper:
    return Sweeper(redis_client, settings=outage_settings)


def run_due(deliverer: Deliverer, sweeper: Sweeper) -> list[Outcome]:
    """What the workers would do now: the sweeper pushes what is due (parked jobs released
    included), and each pushed message is delivered."""
    redis_client = deliverer.ledger.redis
    sweeper.move_due()
    outcomes = []
    while True:
        ready = redis_client.zrange(keys.unclaimed("transactional"), 0, -1)
        ready += redis_client.zrange(keys.unclaimed("track"), 0, -1)
        if not ready:
            return outcomes
        for raw in ready:
            job_id = raw.decode()
            kind = Kind(redis_client.hget(keys.job(job_id), "kind").decode())
            outcomes.append(deliverer.run(job_id, kind))
        sweeper.move_due()


def probe_due(redis_client: redis.Redis, bucket: str) -> None:
    """Travel to the next probe time of an open circuit."""
    assert redis_client.hget(keys.circuit(bucket), "state") == b"open"
    redis_client.hset(keys.circuit(bucket), "next_probe", 0)


def attempts(redis_client: redis.Redis, job_id: str) -> int:
    return int(redis_client.hget(keys.job(job_id), "attempts") or 0)


def send(producer: Producer, n: int) -> list[str]:
    return [
        producer.enqueue_send_email(7, identifiers={"id": f"u{i}"}, to=f"u{i}@example.com")
        for i in range(n)
    ]


class TestOneJobPerRequest:
    @pytest.mark.parametrize("failure", ["503", "refused"])
    def test_an_outage_spends_no_attempt_and_sends_only_probes(
        self, deliverer, producer, sweeper, api, redis_client, failure
    ) -> None:
        """Threshold failures open the circuit; every later job is parked unsent; probes go
        one at a time; the first success releases every parked job, delivered at once."""
        if failure == "503":
            api.down = 503
        else:
            api.refused = True
        ids = send(producer, 20)
        outcomes = run_due(deliverer, sweeper)
        assert [o.state for o in outcomes].count("retry") == 2  # healthy until the 3rd failure
        assert len(api.requests) == 3
        assert {o.state for o in outcomes[2:]} == {"parked"}  # the two retried ones too
        assert redis_client.zcard(keys.parked("transactional")) == 20
        run_due(deliverer, sweeper)
        assert len(api.requests) == 3  # no probe before its time
        for _ in range(3):  # the outage goes on: one probe per interval, each re-parked
            probe_due(redis_client, "transactional")
            run_due(deliverer, sweeper)
        assert len(api.requests) == 3 + 3
        assert redis_client.zcard(keys.parked("transactional")) == 20
        api.down, api.refused = None, False
        probe_due(redis_client, "transactional")
        outcomes = run_due(deliverer, sweeper)
        assert sum(o.state == "delivered" for o in outcomes) == 20
        assert deliverer.circuit is not None
        assert deliverer.circuit.state("transactional").state == "closed"
        assert DeadLetterStore(redis_client).count() == 0
        assert redis_client.zcard(keys.parked("transactional")) == 0
        assert stats(redis_client)["transactional:delivered"] == 20
        assert not any(redis_client.exists(keys.job(i)) for i in ids)

    def test_parked_jobs_keep_their_attempts(
        self, deliverer, producer, sweeper, api, redis_client
    ) -> None:
        api.down = 502
        ids = send(producer, 6)
        run_due(deliverer, sweeper)
        spent = [attempts(redis_client, i) for i in ids]
        assert sorted(spent) == [0, 0, 0, 0, 1, 1]  # only the two failures before it opened
        last = redis_client.hget(keys.job(ids[-1]), "last_error")
        assert last is None or b"502" in last

    def test_a_job_that_fails_alone_still_runs_out_of_attempts(
        self, deliverer, producer, sweeper, api, redis_client
    ) -> None:
        """Others succeed, so the family is healthy and the failures are the job's own."""
        poison = producer.enqueue_send_email(7, identifiers={"id": "bad"}, to="bad@example.com")
        api.fail_when = lambda request: b"bad@example.com" in request.content
        for _ in range(4):
            send(producer, 3)
            run_due(deliverer, sweeper)
        letter = DeadLetterStore(redis_client).get(poison)
        assert letter is not None and letter.attempts == 3
        assert letter.reason.startswith("gave up after 3 attempts: 500")
        assert stats(redis_client).get("circuit:transactional:opened", 0) == 0

    def test_the_retry_budget_ends_it_and_a_replay_starts_it_again(
        self, deliverer, producer, sweeper, api, redis_client, outage_settings
    ) -> None:
        deliverer.settings = outage_settings.replace(retry_for_s=1)
        deliverer.judge.settings = deliverer.settings
        job_id = producer.enqueue_identify("u1", {"a": 1})
        api.down = 503
        time.sleep(1.05)
        run_due(deliverer, sweeper)
        store = DeadLetterStore(redis_client)
        letter = store.get(job_id)
        assert letter is not None
        assert letter.reason.startswith("not delivered within 1 s of its enqueue")
        store.replay([job_id], settings=deliverer.settings)
        assert run_due(deliverer, sweeper)[0].state == "retry"  # a fresh budget
        assert store.get(job_id) is None


@pytest.fixture
def batcher(outage_settings: Settings, redis_client: redis.Redis, api: Api) -> Batcher:
    s = outage_settings.replace(batch=True, batch_linger_ms=0)
    return Batcher(
        settings=s,
        redis=redis_client,
        client=CustomerIoClient(s, transport=httpx.MockTransport(api)),
        limiter=Limiter(s, redis_client, sleep=lambda _: None),
        dead_letters=DeadLetterStore(redis_client),
        owner="w1",
    )


def drain(batcher: Batcher, rounds: int = 3) -> None:
    for _ in range(rounds):
        for start in range(SHARDS):
            batcher.step(start)


class TestBatches:
    def test_an_outage_leaves_batches_untouched_and_sends_only_probes(
        self, batcher, outage_settings, redis_client, api
    ) -> None:
        producer = Producer(outage_settings.replace(batch=True), redis_client=redis_client)
        ids = [producer.enqueue_track(f"u{i % 40}", "Viewed", {"i": i}) for i in range(400)]
        api.down = 503
        drain(batcher)
        assert batcher.circuit.state("track").state == "open"
        sent_while_opening = len(api.requests)
        assert sent_while_opening == 3  # two batches, then the first of one split batch
        drain(batcher)  # open and no probe due: nothing is sent
        assert len(api.requests) == sent_while_opening
        probe_due(redis_client, "track")
        drain(batcher)  # one probe, which fails
        assert len(api.requests) == sent_while_opening + 1
        waiting = batcher.queue.depth()
        assert waiting == 400
        attempts_spent = [
            int(redis_client.hget(keys.batch_meta("track", s), f"{i}:attempts") or 0)
            for i in ids
            for s in range(SHARDS)
            if redis_client.hexists(keys.batch_jobs("track", s), i)
        ]
        assert max(attempts_spent) == 0  # a batch's failure is no job's attempt
        api.down = None
        probe_due(redis_client, "track")
        drain(batcher, rounds=6)
        assert batcher.queue.depth() == 0
        assert stats(redis_client)["track:delivered"] == 400
        assert DeadLetterStore(redis_client).count() == 0
        assert batcher.circuit.state("track").state == "closed"
