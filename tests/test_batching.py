"""Batched delivery: the shard queue (real redis-server), the batch items (vs the published specs)
and the batcher's handling of each answer (a mock transport)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import openapi_contract as contract
import pytest
import redis

from cio_worker import keys
from cio_worker.config import Settings
from cio_worker.customerio._batch_items import (
    BATCHABLE,
    ITEM_SLACK_BYTES,
    REQUEST_LIMIT_BYTES,
    batch_body,
    batch_item,
    person_identifiers,
    records_body,
)
from cio_worker.customerio._http import CustomerIoClient
from cio_worker.errors import EnqueueError
from cio_worker.job import Job
from cio_worker.kinds import Kind
from cio_worker.limiter._limiter import Limiter
from cio_worker.produce._producer import Producer
from cio_worker.queue._deadletter import DeadLetterStore
from cio_worker.queue._ledger import stats
from cio_worker.queue._shards import SHARDS, BatchQueue, TakenBatch, shard_of
from cio_worker.worker._batcher import Batcher

TS = 1_700_000_000
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def producer(batch_settings: Settings, redis_client: redis.Redis) -> Producer:
    return Producer(batch_settings, redis_client=redis_client)


@pytest.fixture
def queue(redis_client: redis.Redis) -> BatchQueue:
    return BatchQueue(redis_client, "track")


def every_batchable_kind(p: Producer) -> list[str]:
    return [
        p.enqueue_identify("u-1", {"plan": "pro", "ltv": 99.5, "tags": ["a"]}, timestamp=TS),
        p.enqueue_track("u-1", "Signed Up", {"plan": "pro"}, timestamp=TS),
        p.enqueue_page("a@example.com", "https://x.test/pricing", {"ref": "ad"}),
        p.enqueue_delete("cio_a3000001"),
        p.enqueue_merge("u-1", {"email": "b@example.com"}),
        p.enqueue_suppress("u-2"),
        p.enqueue_unsuppress("u-2"),
        p.enqueue_add_device("u-1", "tok-1", "ios", last_used=TS, attributes={"os": "17"}),
        p.enqueue_remove_device("u-1", "tok-1"),
    ]


def batched(client: redis.Redis, job_id: str, api: str = "track") -> dict[str, Any]:
    """A batched job's records, wherever its shard keeps them ({} once it has ended)."""
    for shard in range(SHARDS):
        record = client.hget(keys.batch_jobs(api, shard), job_id)
        if record is not None:
            job = Job.from_record(job_id, json.loads(record))
            meta = client.hmget(
                keys.batch_meta(api, shard),
                [f"{job_id}:attempts", f"{job_id}:first_error", f"{job_id}:last_error"],
            )
            return {
                "shard": shard,
                "record": record,
                "job": job,
                "item": batch_item(job, api),
                "attempts": int(meta[0] or 0),
                "first_error": json.loads(meta[1]) if meta[1] else None,
                "last_error": json.loads(meta[2]) if meta[2] else None,
            }
    return {}


def take_all(queue: BatchQueue, owner: str = "w1", **kw: Any) -> TakenBatch:
    taken = queue.take(owner, max_bytes=450_000, linger_ms=kw.pop("linger_ms", 0), **kw)
    assert isinstance(taken, TakenBatch), taken
    return taken


class TestProducer:
    def test_batchable_kinds_skip_celery_and_land_in_their_persons_shard(
        self, producer, redis_client
    ) -> None:
        """No Celery message; the id is in the shard its person hashes to, with one record: the
        job's kind and payload (its id is the field, its time is in the id)."""
        job_id = producer.enqueue_track("u-1", "Viewed", {"n": 1})
        assert redis_client.llen("cio.track") == 0
        assert not redis_client.exists(keys.job(job_id))  # no per-job hash: per-shard ones
        record = batched(redis_client, job_id)
        job = record["job"]
        assert json.loads(record["record"]) == {"kind": "track", "payload": job.payload}
        assert record["shard"] == shard_of(job)
        assert redis_client.lrange(keys.batch_queue("track", shard_of(job)), 0, -1) == [
            job_id.encode()
        ]
        item = record["item"]
        assert item == {"type": "person", "identifiers": {"id": "u-1"}, "action": "event",
                        "name": "Viewed", "id": job_id, "attributes": {"n": 1}}  # fmt: skip
        assert stats(redis_client)["track:enqueued"] == 1

    def test_anonymous_events_and_messages_keep_one_request_per_job(
        self, producer, redis_client
    ) -> None:
        """Kinds without a batch operation still get their Celery message."""
        producer.enqueue_track_anonymous("anon-1", "Viewed")
        producer.enqueue_send_email(1, identifiers={"id": "u"}, to="a@example.com")
        assert redis_client.llen("cio.track") == 1
        assert redis_client.llen("cio.transactional") == 1

    def test_bulk_block_writes_everything_at_the_end(self, producer, redis_client) -> None:
        """Inside the block ids come back at once; Redis sees the jobs when the block ends."""
        with producer.pipeline() as bulk:
            ids = [bulk.enqueue_track(f"u-{i}", "Viewed") for i in range(2500)]
            ids.append(bulk.enqueue_send_email(1, identifiers={"id": "u"}, to="a@example.com"))
            assert redis_client.dbsize() == 0
        assert bulk.stored == 2501
        assert len(set(ids)) == 2501
        assert BatchQueue(redis_client, "track").depth() == 2500
        assert redis_client.llen("cio.transactional") == 1

    def test_an_exception_in_the_block_writes_nothing(self, producer, redis_client) -> None:
        """A failing block leaves no half-written jobs behind."""
        with pytest.raises(ZeroDivisionError), producer.pipeline() as bulk:
            bulk.enqueue_track("u-1", "Viewed")
            raise ZeroDivisionError
        assert redis_client.dbsize() == 0

    def test_bulk_validation_errors_name_the_field(self, producer, redis_client) -> None:
        """Bad input raises at the call, before anything is buffered."""
        with producer.pipeline() as bulk:
            with pytest.raises(ValueError, match="user_id"):
                bulk.enqueue_track("", "Viewed")
            bulk.enqueue_track("u-1", "Viewed")
        assert bulk.stored == 1

    def test_a_failed_flush_is_all_or_nothing(self, batch_settings: Settings) -> None:
        """Redis unreachable at flush: EnqueueError, and the count of what was stored."""
        client = redis.Redis(port=1, socket_connect_timeout=0.2)
        bulk = Producer(batch_settings, redis_client=client).pipeline()
        bulk.enqueue_track("u-1", "Viewed")
        with pytest.raises(EnqueueError, match="none of them stored"):
            bulk.flush()


class TestShardQueue:
    def test_take_returns_jobs_oldest_first_and_marks_them_in_flight(
        self, producer, queue, redis_client
    ) -> None:
        """One person's jobs come out in enqueue order, and the shard records its sender."""
        ids = [producer.enqueue_identify("u-1", {"n": i}) for i in range(5)]
        batch = take_all(queue)
        assert [item.job_id for item in batch.items] == ids
        inflight = redis_client.hgetall(keys.batch_inflight("track", batch.shard))
        assert inflight[b"owner"] == b"w1"
        assert json.loads(inflight[b"ids"]) == ids
        # The shard is busy and the rest empty: nothing to take until its lease (30 s) ends.
        wait = queue.take("w2", max_bytes=450_000, linger_ms=0)
        assert isinstance(wait, float) and 29 < wait <= 30

    def test_a_batch_closes_at_the_byte_limit(self, producer, queue) -> None:
        """Items are taken until the next would pass the request limit."""
        for i in range(30):
            producer.enqueue_track("u-1", "Viewed", {"blob": "x" * 1000, "i": i})
        batch = queue.take("w1", max_bytes=10_000, linger_ms=10_000)
        assert isinstance(batch, TakenBatch)
        assert 5 <= len(batch.items) < 10
        assert len(batch_body([item.job() for item in batch.items], "track")) <= 10_000

    def test_a_small_batch_lingers_then_goes(self, producer, queue) -> None:
        """Fewer jobs than a full batch wait up to the linger time for company."""
        producer.enqueue_track("u-1", "Viewed")
        wait = queue.take("w1", max_bytes=450_000, linger_ms=300)
        assert isinstance(wait, float) and 0 < wait <= 0.3
        time.sleep(wait + 0.02)
        assert isinstance(queue.take("w1", max_bytes=450_000, linger_ms=300), TakenBatch)

    def test_a_partial_batch_past_the_eager_size_goes_at_once(self, producer, queue) -> None:
        """A burst need not linger: a partial batch already past `eager_bytes` is taken at
        once, whole; one below it still waits for company."""
        for i in range(20):
            producer.enqueue_track("u-1", "Viewed", {"blob": "x" * 500, "i": i})
        take = {"max_bytes": 450_000, "linger_ms": 10_000}
        assert isinstance(queue.take("w1", **take, eager_bytes=20_000), float)  # ~11 KB: lingers
        batch = queue.take("w1", **take, eager_bytes=5_000)
        assert isinstance(batch, TakenBatch) and len(batch.items) == 20

    def test_complete_forgets_the_jobs_and_counts_them(self, producer, queue, redis_client) -> None:
        ids = [producer.enqueue_track("u-1", "Viewed") for _ in range(3)]
        batch = take_all(queue)
        assert queue.complete(batch, "w1") == 3
        assert not any(batched(redis_client, i) for i in ids)
        assert stats(redis_client)["track:delivered"] == 3
        assert queue.complete(batch, "w1") == -1  # the shard is no longer ours

    def test_restore_puts_the_batch_back_in_front_and_holds_the_shard(
        self, producer, queue, redis_client
    ) -> None:
        """A failed batch keeps its place before the person's later jobs; the shard waits."""
        first = [producer.enqueue_identify("u-1", {"n": i}) for i in range(3)]
        batch = take_all(queue)
        later = producer.enqueue_track("u-1", "Purchased")
        assert (
            queue.restore(batch, "w1", hold_s=0.3, attempt=True, error_json='{"reason":"503"}') == 3
        )
        assert isinstance(queue.take("w1", max_bytes=450_000, linger_ms=0), float)  # held
        time.sleep(0.35)
        again = take_all(queue)
        assert [item.job_id for item in again.items] == [*first, later]
        assert [item.attempts for item in again.items] == [1, 1, 1, 0]
        assert batched(redis_client, first[0])["last_error"] == {"reason": "503"}

    def test_restore_can_keep_the_oldest_in_flight(self, producer, queue, redis_client) -> None:
        """`keep`: the first jobs stay this owner's to send, the rest go back in front of the
        person's later jobs with no attempt and no hold; completing forgets only those kept."""
        first = [producer.enqueue_identify("u-1", {"n": i}) for i in range(5)]
        batch = take_all(queue)
        later = producer.enqueue_track("u-1", "Purchased")
        assert queue.restore(batch, "w2", hold_s=0, attempt=False, keep=2) == -1  # not w2's
        assert queue.restore(batch, "w1", hold_s=0, attempt=False, keep=2) == 3
        inflight = redis_client.hgetall(keys.batch_inflight("track", batch.shard))
        assert inflight[b"owner"] == b"w1" and json.loads(inflight[b"ids"]) == first[:2]
        assert isinstance(queue.take("w2", max_bytes=450_000, linger_ms=0), float)  # still ours
        assert queue.complete(batch, "w1") == 2
        assert not batched(redis_client, first[0]) and not batched(redis_client, first[1])
        again = take_all(queue)
        assert [item.job_id for item in again.items] == [*first[2:], later]
        assert [item.attempts for item in again.items] == [0, 0, 0, 0]
        assert not redis_client.exists(keys.batch_suspects("track", batch.shard))
        with pytest.raises(ValueError, match="keep"):  # kept jobs are being sent: no hold
            queue.restore(again, "w1", hold_s=1.0, attempt=False, keep=1)

    def test_a_dead_senders_batch_returns_first_with_an_attempt(
        self, producer, queue, redis_client
    ) -> None:
        """Lease expired: the lost batch comes back before newer jobs, in order, one attempt
        counted, and each of its jobs is sent alone until it goes through (a suspect)."""
        lost = [producer.enqueue_identify("u-1", {"n": i}) for i in range(2)]
        batch = take_all(queue, "dead-worker")
        later = producer.enqueue_track("u-1", "Purchased")
        redis_client.hset(keys.batch_inflight("track", batch.shard), "lease_until", 0)
        first = take_all(queue, "w2")
        assert [(item.job_id, item.attempts) for item in first.items] == [(lost[0], 1)]
        assert "worker lost" in batched(redis_client, lost[0])["last_error"]["reason"]
        assert queue.complete(first, "w2") == 1
        second = take_all(queue, "w2")
        assert [(item.job_id, item.attempts) for item in second.items] == [(lost[1], 1)]
        queue.complete(second, "w2")
        third = take_all(queue, "w2")  # suspects cleared: a normal batch again
        assert [item.job_id for item in third.items] == [later]

    def test_a_poison_job_runs_out_of_attempts_alone(self, producer, queue, redis_client) -> None:
        """A job that kills every sender is isolated; its healthy neighbours lose one attempt."""
        healthy = [producer.enqueue_track("u-1", f"E{i}") for i in range(4)]
        poison = producer.enqueue_track("u-1", "Poison")
        more = [producer.enqueue_track("u-1", f"F{i}") for i in range(2)]
        batch = take_all(queue, "w1")
        assert len(batch.items) == 7
        redis_client.hset(keys.batch_inflight("track", batch.shard), "lease_until", 0)
        delivered: list[str] = []
        for _ in range(20):
            taken = queue.take("w", max_bytes=450_000, linger_ms=0)
            if not isinstance(taken, TakenBatch):
                break
            if any(item.job_id == poison for item in taken.items):
                assert len(taken.items) == 1  # alone
                if taken.items[0].attempts >= 3:  # what the batcher does: dead-letter it
                    assert batched(redis_client, poison)["attempts"] == 3
                    pipe = redis_client.pipeline(transaction=True)
                    queue.forget(taken.shard, poison, pipe=pipe)
                    pipe.execute()
                    queue.complete(taken, "w")
                    continue
                redis_client.hset(keys.batch_inflight("track", taken.shard), "lease_until", 0)
                continue
            delivered += [item.job_id for item in taken.items]
            queue.complete(taken, "w")
        assert delivered == healthy + more
        assert all(not batched(redis_client, job_id) for job_id in healthy + more)

    def test_people_spread_over_every_shard(self) -> None:
        """The person hash uses all shards (so senders run in parallel)."""
        jobs = [
            Job(id="x", kind=Kind.TRACK, payload={"user_id": f"u{i}"}, created_at=0)
            for i in range(500)
        ]
        assert {shard_of(job) for job in jobs} == set(range(SHARDS))


class TestItemsAgainstTheSpecs:
    def test_every_batchable_kind_makes_a_valid_track_v2_batch(
        self, producer, redis_client
    ) -> None:
        """A batch of every kind validates against the published `/api/v2/batch` schema."""
        ids = every_batchable_kind(producer)
        jobs = [batched(redis_client, i)["job"] for i in ids]
        assert {job.kind for job in jobs} == set(BATCHABLE)
        spec = contract.track_spec()
        problems = spec.operation("POST", "/api/v2/batch").body_errors(
            json.loads(batch_body(jobs, "track"))
        )
        assert problems == []

    def test_every_batchable_kind_makes_a_valid_pipelines_batch(
        self, batch_settings: Settings, redis_client
    ) -> None:
        """With CIO_WORKER_DATA_API=pipelines the items validate against `/v1/batch`."""
        p = Producer(batch_settings.replace(data_api="pipelines"), redis_client=redis_client)
        ids = every_batchable_kind(p)
        jobs = [batched(redis_client, i, "pipelines")["job"] for i in ids]
        body = json.loads(batch_body(jobs, "pipelines"))
        spec = contract.pipelines_spec()
        # The whole body against the published `/v1/batch` schema (alias items: see the patch
        # in openapi_contract.py), and each item as the single call its `type` names.
        problems = spec.operation("POST", "/v1/batch").body_errors(body)
        for item in body["batch"]:
            problems += spec.operation("POST", f"/v1/{item['type']}").body_errors(item)
        assert problems == []
        assert {item["type"] for item in body["batch"]} == {"identify", "track", "page", "alias"}
        assert all(
            item["messageId"] == job_id for item, job_id in zip(body["batch"], ids, strict=True)
        )
        assert BatchQueue(redis_client, "pipelines").depth() == len(ids)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [("42", {"id": "42"}), ("a@b.co", {"email": "a@b.co"}), ("cio_a1", {"cio_id": "a1"})],
    )
    def test_identifiers_follow_track_v1s_inference(
        self, value: str, expected: dict[str, str]
    ) -> None:
        assert person_identifiers(value) == expected

    def test_item_json_is_compact(self) -> None:
        job = Job(id="01ARZ3NDEKTSV4RRFFQ69G5FAV", kind=Kind.TRACK,
                  payload={"user_id": "u", "event": "e", "properties": {}, "timestamp": None},
                  created_at=0)  # fmt: skip
        assert b" " not in batch_body([job], "track")

    @pytest.mark.parametrize("api", ["track", "pipelines"])
    def test_a_sender_builds_from_records_what_batch_body_builds_from_jobs(
        self, batch_settings: Settings, redis_client, api: str
    ) -> None:
        """The sender's fast path (no Job per record) makes the very same body."""
        p = Producer(batch_settings.replace(data_api=api), redis_client=redis_client)
        ids = every_batchable_kind(p) + [
            p.enqueue_track("cio_1", "e", timestamp=1),
            p.enqueue_track("a@b.co", "e", {"x": [1.5, None]}),
        ]
        stored = [batched(redis_client, job_id, api) for job_id in ids]
        assert records_body(
            [(job_id, record["record"]) for job_id, record in zip(ids, stored, strict=True)], api
        ) == batch_body([record["job"] for record in stored], api)

    def test_a_record_that_is_not_one_json_text_is_refused_not_misread(
        self, batch_settings: Settings, redis_client
    ) -> None:
        """The sender reads a batch's records in one parse of them joined by commas; a record
        holding two texts would pass that parse as two items: it is read alone and refused."""
        job_id = Producer(batch_settings, redis_client=redis_client).enqueue_track("u", "e")
        record = batched(redis_client, job_id)["record"]
        with pytest.raises(ValueError):
            records_body([(job_id, record + b"," + record)], "track")
        assert records_body([(job_id, record)], "track").count(b'"action":"event"') == 1

    @pytest.mark.parametrize("api", ["track", "pipelines"])
    def test_an_integer_beyond_64_bits_reaches_the_body_exact(
        self, batch_settings: Settings, redis_client, api: str
    ) -> None:
        p = Producer(batch_settings.replace(data_api=api), redis_client=redis_client)
        job_id = p.enqueue_track("u-1", "e", {"big": -(2**63) - 1})
        record = batched(redis_client, job_id, api)["record"]
        assert b'"big":-9223372036854775809' in records_body([(job_id, record)], api)

    def test_an_item_past_64_bits_leaves_the_other_items_to_orjson(
        self, batch_settings: Settings, redis_client
    ) -> None:
        """orjson refuses an integer past 64 bits, so that item is written by the standard
        library, alone: the others keep orjson's floats (`1e-7`, as in their records, where the
        standard library writes `1e-07`), so none outgrows its record by more than the slack."""
        p = Producer(batch_settings, redis_client=redis_client)
        ids = [p.enqueue_track("u-1", "e", {"big": 2**64})]
        ids += [p.enqueue_track("u-1", "e", {"f": [1e-7] * 50}) for _ in range(3)]
        records = [(i, batched(redis_client, i)["record"]) for i in ids]
        alone = [records_body([record], "track")[len(b'{"batch":[') : -2] for record in records]
        assert records_body(records, "track") == b'{"batch":[' + b",".join(alone) + b"]}"
        assert b"1e-07" not in alone[1] and b'"big":18446744073709551616' in alone[0]
        for item, (_, record) in zip(alone, records, strict=True):
            assert len(item) - len(record) <= ITEM_SLACK_BYTES["track"]

    @pytest.mark.parametrize("api", ["track", "pipelines"])
    def test_no_item_outgrows_its_record_by_more_than_the_slack(
        self, batch_settings: Settings, redis_client, api: str
    ) -> None:
        """A take fills a batch by stored bytes plus ITEM_SLACK_BYTES[api] per job; a body stays
        under Customer.io's limit when no item is longer than its record plus that. Every
        batchable kind, for every form of person id (each is written differently in an item),
        with and without a timestamp. A Pipelines page is the one exception: it also copies its
        URL, so it may grow by the URL's length more (the sender trims such a batch)."""
        p = Producer(batch_settings.replace(data_api=api), redis_client=redis_client)
        url = 'https://x.test/?q="' + "e" * 60
        grown: dict[str, int] = {}
        for user in ["u-1", 7, -(2**40), "a@b.co", "cio_a3", "x" * 150, 'q"\\\u00e9\u2028']:
            ids = [p.enqueue_delete(user), p.enqueue_merge(user, {"email": "b@c.co"})]
            ids += [p.enqueue_suppress(user), p.enqueue_unsuppress(user)]
            ids += [p.enqueue_remove_device(user, "t")]
            for ts in (None, TS):
                ids += [
                    p.enqueue_identify(user, {"plan": "pro"}, timestamp=ts),
                    p.enqueue_identify(user, timestamp=ts),
                    p.enqueue_track(user, "e", {"a": 1.5}, timestamp=ts),
                    p.enqueue_track(user, "e", timestamp=ts),
                    p.enqueue_page(user, url, {"ref": "ad"}, timestamp=ts),
                    p.enqueue_add_device(user, "t", "ios", last_used=ts),
                    p.enqueue_add_device(user, "t", "ios", last_used=ts, attributes={"a": "b"}),
                ]
            for job_id in ids:
                record = batched(redis_client, job_id, api)
                kind = record["job"].kind.value
                growth = len(batch_body([record["job"]], api)) - len(b'{"batch":[]}')
                growth -= len(record["record"])
                grown[kind] = max(grown.get(kind, growth), growth)
        assert len(grown) == len(BATCHABLE)
        if api == "pipelines":
            assert grown.pop("page") <= ITEM_SLACK_BYTES[api] + len(json.dumps(url))
        assert max(grown.values()) <= ITEM_SLACK_BYTES[api], grown
        if api == "track":
            assert max(grown.values()) == 55  # a page for an email address: the bound's reason


# -- the batcher -------------------------------------------------------------------------------
@pytest.fixture
def make_batcher(
    batch_settings: Settings, redis_client: redis.Redis
) -> Callable[..., tuple[Batcher, list[httpx.Request]]]:
    def make(handler: Handler, **changes: Any) -> tuple[Batcher, list[httpx.Request]]:
        seen: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        s = batch_settings.replace(batch_linger_ms=0, **changes)
        batcher = Batcher(
            settings=s,
            redis=redis_client,
            client=CustomerIoClient(s, transport=httpx.MockTransport(record)),
            limiter=Limiter(s, redis_client, sleep=lambda _: None),
            dead_letters=DeadLetterStore(redis_client),
            owner="w1",
        )
        return batcher, seen

    return make


def answer(status: int, body: object = None, headers: dict[str, str] | None = None) -> Handler:
    return lambda _: httpx.Response(status, json=body if body is not None else {}, headers=headers)


def drain(batcher: Batcher) -> None:
    for _ in range(SHARDS * 2):
        batcher.step()


class TestBatcher:
    def test_one_request_carries_the_batch_and_completes_it(
        self, make_batcher, producer, redis_client
    ) -> None:
        """200: one POST /api/v2/batch with Basic auth; every job forgotten and counted."""
        ids = [producer.enqueue_track("u-1", "Viewed", {"i": i}) for i in range(50)]
        batcher, seen = make_batcher(answer(200))
        drain(batcher)
        assert len(seen) == 1
        request = seen[0]
        assert request.url.path == "/api/v2/batch"
        assert request.headers["authorization"].startswith("Basic ")
        assert [op["id"] for op in json.loads(request.content)["batch"]] == ids
        assert stats(redis_client)["track:delivered"] == 50
        assert not any(batched(redis_client, i) for i in ids)

    def test_207_dead_letters_only_the_listed_items(
        self, make_batcher, producer, redis_client
    ) -> None:
        ids = [producer.enqueue_track("u-1", "Viewed", {"i": i}) for i in range(4)]
        refused = {
            "errors": [{"batch_index": 2, "reason": "invalid", "field": "name", "message": "bad"}]
        }
        batcher, _ = make_batcher(answer(207, refused))
        drain(batcher)
        letters = DeadLetterStore(redis_client)
        assert letters.all_ids() == [ids[2]]
        letter = letters.get(ids[2])
        assert letter is not None and letter.status == 207 and "invalid" in letter.reason
        assert stats(redis_client)["track:delivered"] == 3

    def test_503_keeps_the_batch_in_place_and_splits_it(
        self, make_batcher, producer, queue, redis_client
    ) -> None:
        """Transient while the family is healthy: the failure is no single job's, so no
        attempt is spent; the batch keeps its place, the shard is held for the backoff, and its
        jobs are next sent one per request (where a failure is their own)."""
        ids = [producer.enqueue_identify("u-1", {"i": i}) for i in range(3)]
        batcher, seen = make_batcher(answer(503), backoff_base_s=5.0, backoff_max_s=5.0)
        batcher.step()
        assert len(seen) == 1
        shard = batched(redis_client, ids[0])["shard"]
        assert redis_client.lrange(keys.batch_queue("track", shard), 0, -1)[::-1] == [
            i.encode() for i in ids
        ]
        assert [batched(redis_client, i)["attempts"] for i in ids] == [0, 0, 0]
        assert batched(redis_client, ids[0])["last_error"]["status"] == 503
        assert redis_client.smembers(keys.batch_suspects("track", shard)) == {
            i.encode() for i in ids
        }
        assert stats(redis_client)["track:retried"] == 3
        assert float(redis_client.get(keys.batch_hold("track", shard)) or 0) > 0
        redis_client.delete(keys.batch_hold("track", shard))
        solo = queue.take("w2", max_bytes=450_000, linger_ms=0)
        assert isinstance(solo, TakenBatch) and [item.job_id for item in solo.items] == ids[:1]

    def test_429_pauses_without_using_attempts(self, make_batcher, producer, redis_client) -> None:
        ids = [producer.enqueue_track("u-1", "Viewed") for _ in range(3)]
        batcher, _ = make_batcher(answer(429, headers={"Retry-After": "2"}))
        batcher.step()
        assert [batched(redis_client, i)["attempts"] for i in ids] == [0, 0, 0]
        assert batcher.limiter.state("track").paused_for_s > 1.0
        assert stats(redis_client)["track:rate_limited"] == 1

    def test_a_refused_key_dead_letters_the_batch_naming_the_credential(
        self, make_batcher, producer, redis_client
    ) -> None:
        ids = [producer.enqueue_track("u-1", "Viewed") for _ in range(2)]
        batcher, _ = make_batcher(answer(401))
        drain(batcher)
        letters = DeadLetterStore(redis_client)
        assert sorted(letters.all_ids()) == sorted(ids)
        letter = letters.get(ids[0])
        assert letter is not None and "CUSTOMERIO_TRACK_API_KEY" in letter.reason

    def test_attempts_run_out_into_the_dead_letter_queue(
        self, make_batcher, producer, redis_client
    ) -> None:
        """After max_attempts failed batches, the jobs are dead-lettered, not sent again."""
        job_id = producer.enqueue_track("u-1", "Viewed")
        batcher, seen = make_batcher(
            answer(500), max_attempts=2, backoff_base_s=0.001, backoff_max_s=0.001
        )
        for _ in range(3):
            time.sleep(0.01)
            drain(batcher)
        assert len(seen) == 2
        letter = DeadLetterStore(redis_client).get(job_id)
        assert letter is not None and "gave up after 2 attempts" in letter.reason

    def test_pipelines_batches_go_to_v1_batch_with_strict_mode(
        self, make_batcher, batch_settings, redis_client
    ) -> None:
        """CIO_WORKER_DATA_API=pipelines: /v1/batch, Basic key-as-user, X-Strict-Mode: 1."""
        p = Producer(batch_settings.replace(data_api="pipelines"), redis_client=redis_client)
        first = p.enqueue_identify("u-1", {"plan": "pro"})
        second = p.enqueue_track("u-1", "Viewed")
        batcher, seen = make_batcher(answer(200), data_api="pipelines")
        drain(batcher)
        (request,) = seen
        assert request.url.path == "/v1/batch"
        assert request.headers["x-strict-mode"] == "1"
        body = json.loads(request.content)["batch"]
        assert [(op["type"], op["messageId"]) for op in body] == [
            ("identify", first),
            ("track", second),
        ]

    def test_a_batch_whose_items_outgrew_the_take_is_trimmed_not_split(
        self, make_batcher, batch_settings, redis_client
    ) -> None:
        """A Pipelines page copies its URL into its item, so a take of pages with long, escaped
        URLs builds a body over the request limit: the sender sends the oldest that fit and puts
        the rest back first in line (no attempt, not one per request), in as few requests."""
        p = Producer(batch_settings.replace(data_api="pipelines"), redis_client=redis_client)
        url = "https://x.test/?q=" + '"' * 80
        with p.pipeline() as bulk:
            ids = [bulk.enqueue_page("u-1", url, {"i": i}) for i in range(1_500)]
        shard = batched(redis_client, ids[0], "pipelines")["shard"]
        batcher, seen = make_batcher(answer(200), data_api="pipelines")
        drain(batcher)
        assert len(seen) == 2  # split one per request, it would have taken 1,500
        assert all(len(request.content) <= REQUEST_LIMIT_BYTES for request in seen)
        sent = [op["messageId"] for r in seen for op in json.loads(r.content)["batch"]]
        assert sent == ids
        assert stats(redis_client)["track:delivered"] == 1_500
        assert not redis_client.exists(keys.batch_meta("pipelines", shard))
        assert not redis_client.exists(keys.batch_suspects("pipelines", shard))


class TestVisibility:
    def test_status_and_metrics_count_jobs_waiting_in_shards(
        self, producer, batch_settings: Settings, redis_client
    ) -> None:
        """Batched jobs are not in cio.track, yet status and metrics show them as waiting."""
        from cio_worker.ops._metrics import collect
        from cio_worker.ops._status import collect_status

        for i in range(7):
            producer.enqueue_track(f"u-{i}", "Viewed")
        report = collect_status(batch_settings)
        assert report["queues"]["track"]["waiting"] == 7
        snapshot = collect(redis_client, batch_settings, now_s=time.time() + 60)
        assert snapshot.queue_depth["track"] == 7
        assert 59 <= (snapshot.oldest_job_age_s["track"] or 0) <= 62
        # One rule (ops/_backlog.py): status adds only the jobs parked for Customer.io.
        producer.enqueue_send_email(1, identifiers={"id": "u-1"}, to="a@example.com")
        report = collect_status(batch_settings)
        snapshot = collect(redis_client, batch_settings)
        assert (
            {family: row["waiting"] - row["parked"] for family, row in report["queues"].items()}
            == snapshot.queue_depth
            == {"track": 7, "transactional": 1, "broadcast": 0, "app": 0}
        )


class TestBatchEvents:
    def test_each_batch_is_reported_as_a_celery_task_for_flower(
        self, make_batcher, producer
    ) -> None:
        """received, started, succeeded: with counts only, never a job's data."""
        producer.enqueue_identify("u-1", {"email": "ada@example.com"})
        producer.enqueue_track("u-1", "Viewed")
        batcher, _ = make_batcher(answer(200))
        sent: list[tuple[str, dict[str, Any]]] = []
        batcher.events = lambda event_type, **fields: sent.append((event_type, fields))
        drain(batcher)
        assert [event for event, _ in sent] == ["task-received", "task-started", "task-succeeded"]
        received = sent[0][1]
        assert received["name"] == "cio_worker.track_batch"
        assert received["args"].startswith("(2 jobs, shard ")
        assert len({fields["uuid"] for _, fields in sent}) == 1
        assert "ada@example.com" not in json.dumps(sent)
        assert "2 delivered" in sent[2][1]["result"]


def test_anonymous_events_ride_pipelines_batches_but_not_track_v2() -> None:
    """Track v2 has no anonymous person operation, so there an anonymous event keeps its own
    request; Pipelines takes it inside /v1/batch, as Customer.io's own SDK sends it, in order
    with that visitor's other events (one shard per anonymous id)."""
    from cio_worker.queue._routing import is_batched
    from cio_worker.queue._shards import person_key

    job = Job(
        id="01J0000000000000000000000A",
        kind=Kind.TRACK_ANONYMOUS,
        payload={"anonymous_id": "anon-1", "event": "Visited", "properties": {}},
        created_at=time.time(),
    )
    assert not is_batched(job, Settings(batch=True, data_api="track"))
    assert is_batched(job, Settings(batch=True, data_api="pipelines"))
    assert not is_batched(job, Settings(batch=False, data_api="pipelines"))
    # Ordered per visitor, and never confused with a known person whose id is the same text.
    assert person_key(job.payload) == "anonymous:anon-1"
