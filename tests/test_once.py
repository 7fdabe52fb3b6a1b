"""A message is sent once: duplicate task messages in one worker, and concurrent replays.

Both were seen in review: two threads of one worker each claimed a job whose message was
duplicated (the claim told processes apart, not threads), so 4 of 50 people were emailed twice;
two concurrent `dlq replay` runs over the same 400 ids queued 85 of them twice.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from cio_worker import keys
from cio_worker.config import Settings
from cio_worker.customerio._http import CustomerIoClient
from cio_worker.kinds import Family, Kind, queue_name
from cio_worker.limiter._limiter import Limiter
from cio_worker.produce._producer import Producer
from cio_worker.queue._deadletter import DeadLetterStore
from cio_worker.queue._leases import LeaseKeeper
from cio_worker.queue._ledger import ErrorRecord, JobLedger, stats
from cio_worker.worker._deliverer import Deliverer


def test_duplicate_messages_in_one_worker_send_once(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Eight threads of one worker each get a message of the same job while the first send
    is on the wire: exactly one request goes out."""
    on_the_wire = threading.Event()
    let_go = threading.Event()
    sent: list[httpx.Request] = []

    def slow_api(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        on_the_wire.set()
        let_go.wait(5)
        return httpx.Response(200, json={"delivery_id": "d1"})

    ledger = JobLedger(redis_client)
    deliverer = Deliverer(
        settings=settings,
        ledger=ledger,
        dead_letters=DeadLetterStore(redis_client),
        limiter=Limiter(settings, redis_client, sleep=lambda _: None),
        client=CustomerIoClient(settings, transport=httpx.MockTransport(slow_api)),
        leases=LeaseKeeper(ledger, "one-process"),
    )
    job_id = Producer(settings, redis_client=redis_client).enqueue_send_email(
        3, identifiers={"id": "u1"}, to="u1@example.com"
    )
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(deliverer.run, job_id, Kind.SEND_EMAIL)
        assert on_the_wire.wait(5)
        duplicates = [pool.submit(deliverer.run, job_id, Kind.SEND_EMAIL) for _ in range(7)]
        states = [future.result(5).state for future in duplicates]
        let_go.set()
        assert first.result(5).state == "delivered"
    assert states == ["busy"] * 7
    assert len(sent) == 1
    # Once the delivery ended, a late duplicate finds the job gone, and sends nothing either.
    assert deliverer.run(job_id, Kind.SEND_EMAIL).state == "gone"
    assert len(sent) == 1


@pytest.mark.parametrize("batch", [False, True])
def test_concurrent_replays_move_each_letter_once(
    settings: Settings, redis_client: redis.Redis, batch: bool
) -> None:
    """Four replays over the same 200 dead letters at once: each is queued once (to a batch
    shard or a Celery queue), the `replayed` counter is exact, and the queue ends empty."""
    producer = Producer(settings.replace(batch=False), redis_client=redis_client)
    if batch:
        ids = [producer.enqueue_track(f"u{i}", "Viewed") for i in range(200)]
    else:
        ids = [
            producer.enqueue_send_email(3, identifiers={"id": f"u{i}"}, to=f"u{i}@example.com")
            for i in range(200)
        ]
    ledger, store = JobLedger(redis_client), DeadLetterStore(redis_client)
    for job_id in ids:
        entry = ledger.load(job_id)
        assert entry is not None
        store.add(entry.job, 3, ErrorRecord("400: bad", 400, None, 1.0), None)
    family = Family.TRACK if batch else Family.TRANSACTIONAL
    redis_client.delete(queue_name(family))  # only what replays queue counts below
    assert store.count() == 200

    replay_settings = settings.replace(batch=batch)
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: store.replay(ids, settings=replay_settings), range(4)))
    replayed = [job_id for run in runs for job_id in run]
    assert sorted(replayed) == sorted(ids)  # each id by exactly one of the runs
    assert stats(redis_client)[f"{family.value}:replayed"] == 200
    assert store.count() == 0
    if batch:
        queued = sum(int(redis_client.llen(keys.batch_queue("track", n))) for n in range(16))
    else:
        queued = int(redis_client.llen(queue_name(family)))
    assert queued == 200
