"""Tests for the producer: jobs land durably in Redis as Celery messages, or raise."""

from __future__ import annotations

import inspect
import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis

import cio_worker
from cio_worker import jsonutil
from cio_worker.config import Settings
from cio_worker.errors import CioWorkerError, EnqueueError, ValidationError
from cio_worker.job import Job
from cio_worker.kinds import Kind
from cio_worker.produce import _defaults as producer_module
from cio_worker.produce._jobs import JobDraft
from cio_worker.produce._producer import Producer

EMAIL = "ada.lovelace@example.com"
ULID = re.compile(r"[0-7][0-9ABCDEFGHJKMNPQRSTVWXYZ]{25}")
QUEUES = ["cio.track", "cio.transactional", "cio.broadcast", "cio.app"]

# kind, family, args, kwargs: one call per job kind, each carrying EMAIL somewhere personal.
CASES: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = [
    ("identify", "track", ("u-1", {"email": EMAIL, "plan": "pro"}), {"timestamp": 1_700_000_000}),
    ("track", "track", ("u-1", "Signed Up", {"email": EMAIL}), {}),
    ("track_anonymous", "track", ("anon-1", "Viewed Pricing", {"email": EMAIL}), {}),
    ("page", "track", ("u-1", "https://example.com/pricing", {"referrer_email": EMAIL}), {}),
    ("delete", "track", (EMAIL,), {}),
    ("merge", "track", ({"email": EMAIL}, {"id": "u-2"}), {}),
    ("suppress", "track", (EMAIL,), {}),
    ("unsuppress", "track", (EMAIL,), {}),
    ("add_device", "track", (EMAIL, "device-token-1", "ios"), {"attributes": {"owner": EMAIL}}),
    ("remove_device", "track", (EMAIL, "device-token-1"), {}),
    ("send_email", "transactional", (7,), {"identifiers": {"email": EMAIL}, "to": EMAIL}),
    ("send_push", "transactional", (8,), {"identifiers": {"email": EMAIL}, "title": "Hi"}),
    ("send_sms", "transactional", (9,), {"identifiers": {"email": EMAIL}}),
    ("broadcast", "broadcast", (42,), {"emails": [EMAIL], "data": {"promo": "spring"}}),
]
CASE_IDS = [case[0] for case in CASES]


@pytest.fixture(params=["real", "fake"])
def store(request: pytest.FixtureRequest, settings: Settings) -> Iterator[tuple[Producer, Any]]:
    """A producer and the Redis it writes to: the real test server, or fakeredis."""
    if request.param == "real":
        client = redis.Redis.from_url(settings.redis_url)
        yield Producer(settings), client
        client.close()
    else:
        fake = fakeredis.FakeRedis()
        yield Producer(settings, redis_client=fake), fake
        fake.close()


@pytest.fixture
def restore_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo any change a test makes to the module-level default producer."""
    monkeypatch.setattr(producer_module, "_default", None)


def decode_message(raw: bytes) -> tuple[dict[str, Any], list[Any]]:
    message = json.loads(raw)
    return message, json.loads(message["body"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def blackhole_port() -> Iterator[int]:
    """A port whose kernel accepts TCP connections that no one ever reads or answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield int(server.getsockname()[1])


class TestStore:
    @pytest.mark.parametrize(("kind", "family", "args", "kwargs"), CASES, ids=CASE_IDS)
    def test_job_record(
        self,
        store: tuple[Producer, Any],
        kind: str,
        family: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """Each kind returns a ULID and stores `cio:job:<id>` (job JSON, attempts 0, queued)
        and indexes it as unclaimed under the family's first sequence number (kept there
        only: a hash field would cost a queued job about 100 bytes)."""
        producer, client = store
        job_id = getattr(producer, f"enqueue_{kind}")(*args, **kwargs)
        assert ULID.fullmatch(job_id)
        record = client.hgetall(f"cio:job:{job_id}")
        assert set(record) == {b"job", b"kind", b"attempts", b"state"}
        assert record[b"attempts"] == b"0"
        assert record[b"kind"] == kind.encode()
        assert record[b"state"] == b"queued"
        assert client.zscore(f"cio:unclaimed:{family}", job_id) == 1.0
        job = json.loads(record[b"job"])
        assert job["id"] == job_id
        assert job["kind"] == kind
        assert EMAIL in record[b"job"].decode()

    @pytest.mark.parametrize(("kind", "family", "args", "kwargs"), CASES, ids=CASE_IDS)
    def test_task_message(
        self,
        store: tuple[Producer, Any],
        kind: str,
        family: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """Exactly one Celery message goes to `cio.<family>`, carrying the job id and no PII."""
        producer, client = store
        job_id = getattr(producer, f"enqueue_{kind}")(*args, **kwargs)
        for queue in QUEUES:
            assert client.llen(queue) == (1 if queue == f"cio.{family}" else 0), queue
        raw = client.lindex(f"cio.{family}", 0)
        message, body = decode_message(raw)
        headers = message["headers"]
        assert headers["task"] == f"cio_worker.{kind}"
        assert headers["id"] == job_id
        assert job_id in headers["argsrepr"]
        assert body[0] == [job_id]
        assert body[1] == {}
        assert isinstance(body[2], dict)
        assert "body_encoding" not in message["properties"]  # the body is plain JSON
        assert message["properties"]["delivery_info"]["routing_key"] == f"cio.{family}"
        assert EMAIL not in raw.decode()
        assert EMAIL not in json.dumps(body)

    @pytest.mark.parametrize(("kind", "family", "args", "kwargs"), CASES, ids=CASE_IDS)
    def test_stats_and_no_other_keys(
        self,
        store: tuple[Producer, Any],
        kind: str,
        family: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """The family's enqueued counter goes up by one; only the ledger's keys are written."""
        producer, client = store
        job_id = getattr(producer, f"enqueue_{kind}")(*args, **kwargs)
        assert client.hgetall("cio:stats") == {f"{family}:enqueued".encode(): b"1"}
        assert set(client.keys("*")) == {
            f"cio:job:{job_id}".encode(),
            f"cio.{family}".encode(),
            f"cio:unclaimed:{family}".encode(),
            f"cio:seq:{family}".encode(),
            b"cio:stats",
        }

    def test_counts_accumulate(self, store: tuple[Producer, Any]) -> None:
        """Several jobs of two families each add a message and bump their own counter."""
        producer, client = store
        ids = [producer.enqueue_track("u-1", f"Event {n}") for n in range(3)]
        ids.append(producer.enqueue_send_sms(5, identifiers={"id": "u-1"}))
        assert len(set(ids)) == 4
        assert client.llen("cio.track") == 3
        assert client.llen("cio.transactional") == 1
        assert client.hget("cio:stats", "track:enqueued") == b"3"
        assert client.hget("cio:stats", "transactional:enqueued") == b"1"

    def test_fifo_for_kombu(self, store: tuple[Producer, Any]) -> None:
        """Messages go on the left and kombu pops on the right, so jobs are taken in order."""
        producer, client = store
        first = producer.enqueue_delete("u-1")
        second = producer.enqueue_delete("u-2")
        oldest, _ = decode_message(client.lindex("cio.track", -1))
        newest, _ = decode_message(client.lindex("cio.track", 0))
        assert (oldest["headers"]["id"], newest["headers"]["id"]) == (first, second)

    def test_event_name_case_kept(self, store: tuple[Producer, Any]) -> None:
        """Event names are stored exactly as given, case included."""
        producer, client = store
        names = ["Signed Up", "signed up", "SIGNED_UP"]
        ids = [producer.enqueue_track("u-1", name) for name in names]
        stored = [
            json.loads(client.hget(f"cio:job:{job_id}", "job"))["payload"]["event"]
            for job_id in ids
        ]
        assert stored == names

    def test_payload_round_trips(self, store: tuple[Producer, Any]) -> None:
        """The stored payload holds the caller's data as given."""
        producer, client = store
        job_id = producer.enqueue_track(
            "u-1", "Ordered", {"total": 12.5, "items": [1, 2]}, timestamp=1_700_000_001
        )
        payload = json.loads(client.hget(f"cio:job:{job_id}", "job"))["payload"]
        assert payload["user_id"] == "u-1"
        assert payload["event"] == "Ordered"
        assert payload["properties"] == {"total": 12.5, "items": [1, 2]}
        assert payload["timestamp"] == 1_700_000_001

    def test_job_created_at_is_now(self, store: tuple[Producer, Any]) -> None:
        """The job records the wall-clock time it was enqueued, to the millisecond, in its id;
        the stored JSON does not repeat it (issue 18) and reads it back from there."""
        producer, client = store
        before = time.time()
        job_id = producer.enqueue_delete("u-1")
        after = time.time()
        raw = client.hget(f"cio:job:{job_id}", "job")
        assert "t" not in json.loads(raw)
        assert int(before * 1000) / 1000 <= Job.from_json(raw).created_at <= after


class TestModuleLevel:
    @pytest.mark.usefixtures("restore_default")
    def test_uses_configured_producer(self, settings: Settings, redis_client: redis.Redis) -> None:
        """`cio_worker.enqueue_track` stores through the producer set by `configure`."""
        configured = cio_worker.configure(settings)
        assert configured.settings is settings
        job_id = cio_worker.enqueue_track("u-1", "Logged In", timestamp=1_700_000_000)
        job = json.loads(redis_client.hget(f"cio:job:{job_id}", "job"))
        assert job["kind"] == "track"
        assert job["payload"]["event"] == "Logged In"
        assert redis_client.llen("cio.track") == 1

    @pytest.mark.usefixtures("restore_default")
    @pytest.mark.parametrize(("kind", "family", "args", "kwargs"), CASES, ids=CASE_IDS)
    def test_every_function_routes_to_default(
        self,
        settings: Settings,
        redis_client: redis.Redis,
        kind: str,
        family: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """Each module-level enqueue function stores its kind on the default producer's Redis."""
        cio_worker.configure(settings)
        job_id = getattr(cio_worker, f"enqueue_{kind}")(*args, **kwargs)
        assert json.loads(redis_client.hget(f"cio:job:{job_id}", "job"))["kind"] == kind
        assert redis_client.llen(f"cio.{family}") == 1

    @pytest.mark.usefixtures("restore_default")
    def test_default_built_from_environment(
        self, monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_client: redis.Redis
    ) -> None:
        """Without `configure`, the first call builds the default producer from the environment."""
        monkeypatch.setenv("CIO_WORKER_REDIS_URL", redis_url)
        monkeypatch.setenv("CIO_WORKER_BATCH", "off")
        job_id = cio_worker.enqueue_delete("u-1")
        assert redis_client.exists(f"cio:job:{job_id}") == 1

    @pytest.mark.usefixtures("restore_default")
    def test_configure_with_fakeredis(self, settings: Settings) -> None:
        """`configure(redis_client=...)` makes the module functions use that client."""
        fake = fakeredis.FakeRedis()
        cio_worker.configure(settings, redis_client=fake)
        job_id = cio_worker.enqueue_suppress("u-1")
        assert fake.exists(f"cio:job:{job_id}") == 1
        fake.close()

    def test_signature_matches_method_without_self(self) -> None:
        """Each `cio_worker.enqueue_<kind>` has `Producer.enqueue_<kind>`'s signature minus self."""
        mismatched = []
        for kind in CASE_IDS:
            function = inspect.signature(getattr(cio_worker, f"enqueue_{kind}"))
            method = inspect.signature(getattr(Producer, f"enqueue_{kind}"))
            expected = method.replace(parameters=list(method.parameters.values())[1:])
            if function != expected:
                mismatched.append(f"enqueue_{kind}{function} != {expected}")
        assert mismatched == []

    @pytest.mark.parametrize("kind", CASE_IDS)
    def test_docs_copied(self, kind: str) -> None:
        """Each module-level function carries its method's name and docstring."""
        function = getattr(cio_worker, f"enqueue_{kind}")
        method = getattr(Producer, f"enqueue_{kind}")
        assert function.__name__ == method.__name__
        assert function.__doc__ == method.__doc__


class TestRedisUnavailable:
    def test_closed_port_raises_quickly(self) -> None:
        """Nothing listening on the port: EnqueueError within 2 s."""
        url = f"redis://127.0.0.1:{free_port()}/0"
        producer = Producer(Settings.from_env({"CIO_WORKER_REDIS_URL": url}))
        start = time.monotonic()
        with pytest.raises(EnqueueError) as info:
            producer.enqueue_track("u-1", "Signed Up")
        assert time.monotonic() - start < 2.0
        assert isinstance(info.value.__cause__, redis.RedisError)
        assert isinstance(info.value, CioWorkerError)

    def test_blackhole_raises_within_two_seconds(self, blackhole_port: int) -> None:
        """A server that accepts TCP but never answers: EnqueueError within 2 s at defaults."""
        url = f"redis://127.0.0.1:{blackhole_port}/0"
        producer = Producer(Settings.from_env({"CIO_WORKER_REDIS_URL": url}))
        start = time.monotonic()
        with pytest.raises(EnqueueError):
            producer.enqueue_track("u-1", "Signed Up")
        assert time.monotonic() - start < 2.0

    def test_blackhole_raises_enqueue_error(self, blackhole_port: int) -> None:
        """A silent server ends in EnqueueError (a timeout), bounded by the Redis timeout."""
        url = f"redis://127.0.0.1:{blackhole_port}/0"
        settings = Settings.from_env(
            {"CIO_WORKER_REDIS_URL": url, "CIO_WORKER_REDIS_TIMEOUT_S": "0.1"}
        )
        producer = Producer(settings)
        start = time.monotonic()
        with pytest.raises(EnqueueError) as info:
            producer.enqueue_identify("u-1", {"plan": "pro"})
        assert time.monotonic() - start < 2.0
        assert isinstance(info.value.__cause__, redis.TimeoutError)

    def test_validation_comes_before_redis(self) -> None:
        """A bad job raises ValidationError, not EnqueueError, even with Redis down."""
        url = f"redis://127.0.0.1:{free_port()}/0"
        producer = Producer(Settings.from_env({"CIO_WORKER_REDIS_URL": url}))
        with pytest.raises(ValidationError):
            producer.enqueue_track("", "Signed Up")

    def test_refused_write_stores_nothing(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """A write Redis refuses (OOM under noeviction) raises EnqueueError and stores nothing."""
        producer = Producer(settings)
        old = redis_client.config_get("maxmemory")["maxmemory"]
        redis_client.config_set("maxmemory", 1)
        try:
            with pytest.raises(EnqueueError):
                producer.enqueue_track("u-1", "Signed Up")
        finally:
            redis_client.config_set("maxmemory", old)
        assert redis_client.dbsize() == 0


class TestBulkFlushFailures:
    """A bulk block never loses a job silently: every flush failure reaches the caller."""

    @staticmethod
    def fail_first_store(monkeypatch: pytest.MonkeyPatch, bulk: Any, error: Exception) -> None:
        """The bulk producer's first flush raises `error` while being built (nothing sent)."""
        real = bulk._prepare
        calls = {"n": 0}

        def prepare(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise error
            return real(*args, **kwargs)

        monkeypatch.setattr(bulk, "_prepare", prepare)

    def test_unencodable_value_fails_its_own_call(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """The reported case: a value that cannot be encoded (here slipped past validation).
        The bulk producer encodes each job as it is enqueued, so the call itself raises
        EnqueueError naming the job; the jobs before and after it are stored, it is not."""
        producer = Producer(settings)
        with producer.pipeline(flush_every=2) as bulk:
            first = bulk.enqueue_track("u-1", "One")
            with pytest.raises(EnqueueError, match="broadcast job .* cannot be stored as JSON"):
                # Bypasses validation, which refuses lone surrogates at the call.
                bulk._store(JobDraft(Kind.BROADCAST, {"broadcast_id": 1, "body": {"x": "\ud800"}}))
            later = [bulk.enqueue_track("u-1", "Three"), bulk.enqueue_track("u-1", "Four")]
        assert bulk.stored == 3
        assert all(redis_client.exists(f"cio:job:{job_id}") for job_id in [first, *later])
        assert redis_client.llen("cio.broadcast") == 0

    def test_any_exception_in_background_flush_is_raised_at_block_exit(
        self, settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Not only Redis errors: a bug while building the flush surfaces at block exit with
        the counts, and the flushes after it do not run."""
        producer = Producer(settings)
        with pytest.raises(EnqueueError) as info:
            with producer.pipeline(flush_every=2) as bulk:
                self.fail_first_store(monkeypatch, bulk, RuntimeError("boom"))
                for n in range(3):
                    bulk.enqueue_delete(f"u-{n}")
        message = str(info.value)
        assert "bulk flush of 2 jobs" in message and "none of them stored" in message
        assert "RuntimeError: boom" in message
        assert "the 1 job(s) enqueued after that flush" in message
        assert isinstance(info.value.__cause__.__cause__, RuntimeError)  # type: ignore[union-attr]
        assert bulk.stored == 0
        assert redis_client.dbsize() == 0

    def test_earlier_flushes_are_counted(
        self, settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A failure after a good flush says how many were stored; those stay stored."""
        producer = Producer(settings)
        with pytest.raises(EnqueueError, match="2 stored by earlier flushes"):
            with producer.pipeline(flush_every=2) as bulk:
                stored = [bulk.enqueue_delete(f"u-{n}") for n in range(2)]
                bulk._wait_for_writer()  # the first flush is done
                self.fail_first_store(monkeypatch, bulk, RuntimeError("boom"))
                bulk.enqueue_delete("u-3")
                bulk.enqueue_delete("u-4")
        assert bulk.stored == 2
        assert all(redis_client.exists(f"cio:job:{job_id}") for job_id in stored)
        assert redis_client.llen("cio.track") == 2

    def test_foreground_flush_wraps_unexpected_errors(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`flush()` itself turns any failure into EnqueueError with the counts."""
        bulk = Producer(settings).pipeline()
        self.fail_first_store(monkeypatch, bulk, KeyError("bug"))
        bulk.enqueue_delete("u-1")
        with pytest.raises(EnqueueError, match="bulk flush of 1 jobs .* none of them stored"):
            bulk.flush()

    @pytest.mark.parametrize(
        ("error", "outcome"),
        [
            ("Error 111 connecting to 127.0.0.1:6379. Connection refused.", "none of them stored"),
            ("Connection closed by server.", "they may or may not be stored"),
        ],
    )
    def test_a_lost_connection_is_not_claimed_as_nothing_stored(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch, error: str, outcome: str
    ) -> None:
        """Refused while connecting, nothing went out; lost mid-exchange, the MULTI..EXEC may
        have run: saying "none stored" then would invite the caller to store it all twice."""
        bulk = Producer(settings).pipeline()

        def broken(*_: object, **__: object) -> list[object]:
            raise redis.ConnectionError(error)

        monkeypatch.setattr(bulk, "_execute", broken)
        bulk.enqueue_delete("u-1")
        with pytest.raises(EnqueueError, match=f"bulk flush of 1 jobs .* {outcome}"):
            bulk.flush()

    def test_block_exception_wins_but_notes_the_flush_failure(
        self, settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The block's own exception propagates, carrying the flush failure as a note."""
        producer = Producer(settings)
        with pytest.raises(ZeroDivisionError) as info:
            with producer.pipeline(flush_every=2) as bulk:
                self.fail_first_store(monkeypatch, bulk, RuntimeError("boom"))
                bulk.enqueue_delete("u-1")
                bulk.enqueue_delete("u-2")
                raise ZeroDivisionError
        notes = getattr(info.value, "__notes__", [])
        assert any("background bulk flush failed" in note and "boom" in note for note in notes)
        assert redis_client.dbsize() == 0

    def test_caller_may_go_on_after_a_failed_flush(
        self, settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """After the error, the block starts from an empty buffer: later jobs are stored."""
        producer = Producer(settings)
        with producer.pipeline(flush_every=2) as bulk:
            self.fail_first_store(monkeypatch, bulk, RuntimeError("boom"))
            bulk.enqueue_delete("u-1")
            bulk.enqueue_delete("u-2")
            bulk.enqueue_delete("u-3")
            with pytest.raises(EnqueueError):
                bulk.enqueue_delete("u-4")
            later = bulk.enqueue_delete("u-5")
        assert bulk.stored == 1
        assert redis_client.exists(f"cio:job:{later}") == 1
        assert redis_client.llen("cio.track") == 1

    def test_surrogate_refused_at_the_call_in_a_block(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """The reported block, through the public API: the bad call raises ValidationError,
        the three good jobs are stored."""
        producer = Producer(settings)
        with producer.pipeline(flush_every=2) as bulk:
            ids = [bulk.enqueue_track("u-1", "One"), bulk.enqueue_track("u-1", "Two")]
            with pytest.raises(ValidationError) as info:
                bulk.enqueue_broadcast(1, data={"x": "\ud800"})
            ids.append(bulk.enqueue_track("u-1", "Four"))
        assert info.value.field == "data.x"
        assert bulk.stored == 3
        assert all(redis_client.exists(f"cio:job:{job_id}") for job_id in ids)


class TestStoredJson:
    """What a queued job's JSON carries (issue 18: bytes per queued job)."""

    def test_round_trip_keeps_every_field(self) -> None:
        from cio_worker.produce._jobs import new_job

        job = new_job(
            JobDraft(Kind.TRACK, {"user_id": "u-1", "event": "e", "properties": {"n": 1}})
        )
        assert Job.from_json(job.to_json()) == job

    def test_a_time_the_id_does_not_carry_is_written(self) -> None:
        job = Job("01M8Q8C9EEXT51CFTDYGK4G8JP", Kind.DELETE, {"user_id": "u"}, 12.5)
        assert json.loads(job.to_json())["t"] == 12.5
        assert Job.from_json(job.to_json()) == job

    def test_an_id_that_is_not_a_ulid_keeps_its_time(self) -> None:
        job = Job("legacy-1", Kind.DELETE, {"user_id": "u"}, 1_700_000_000.25)
        assert Job.from_json(job.to_json()) == job

    def test_an_integer_beyond_64_bits_reads_back_exact(self) -> None:
        """orjson would read it as a float; a stored job must come back as it was given."""
        big = {"user_id": "u", "event": "e", "properties": {"a": -(2**63) - 1, "b": 2**70}}
        job = Job("01M8Q8C9EEXT51CFTDYGK4G8JP", Kind.TRACK, big, 0.5)
        assert Job.from_json(job.to_json()) == job
        assert Job.from_record(job.id, jsonutil.loads(job.record_json())) == job

    def test_the_fast_reader_reads_what_json_reads(self) -> None:
        for text in ['{"a":1.5,"b":[1,2]}', '{"n":NaN}', '{"x":12345678901234567890123}', "[]"]:
            assert repr(jsonutil.loads(text)) == repr(json.loads(text))

    @pytest.mark.parametrize("data_api", ["track", "pipelines"])
    def test_bulk_records_are_the_jobs_records(
        self, batch_settings: Settings, redis_client: redis.Redis, data_api: str
    ) -> None:
        """The bulk producer stores batched jobs from the JSON validation made, without a
        `Job`: each stored record must be the one `Job.record_json` gives for the same job
        (what a single enqueue or a replay stores), in its person's shard, in order."""
        from cio_worker.queue._shards import SHARDS, shard_of

        settings = batch_settings.replace(data_api=data_api)
        producer = Producer(settings)
        with producer.pipeline(flush_every=7) as bulk:  # a background flush or two, then one
            ids = [
                bulk.enqueue_track("u-1", "Signed Up", {"plan": "pro", "n": 2**70}),
                bulk.enqueue_track("u-2", "Paid", {"price": 9.5, "nested": {"a": [1]}}),
                bulk.enqueue_identify("u-1", {"email": "u1@example.com"}, timestamp=1_700_000_000),
                bulk.enqueue_page("u-3", "https://example.com/x?q=1"),
                bulk.enqueue_delete("u-2"),
                bulk.enqueue_merge("u-1", {"email": "old@example.com"}),
                bulk.enqueue_add_device("u-3", "token-1", "ios"),
                bulk.enqueue_remove_device("u-3", "token-1"),
                bulk.enqueue_suppress("u-4"),
                bulk.enqueue_track_anonymous("anon-1", "Visited", {"é": "ü"}),
                bulk.enqueue_send_email(1, identifiers={"id": "u-1"}, to="u1@example.com"),
            ]
        base = "cio:bq:v2:{}:{}".format("pipelines" if data_api == "pipelines" else "track", "{}")
        stored: dict[str, tuple[int, bytes]] = {}
        for shard in range(SHARDS):
            for job_id, record in redis_client.hgetall(base.format(shard) + ":jobs").items():
                stored[job_id.decode()] = (shard, record)
            queued = [i.decode() for i in redis_client.lrange(base.format(shard) + ":queue", 0, -1)]
            assert queued == sorted(queued, reverse=True)  # LPUSH: the newest at the head
        batched = [job_id for job_id in ids if job_id in stored]
        assert len(batched) == (10 if data_api == "pipelines" else 9)  # + anonymous events
        for job_id in batched:
            shard, record = stored[job_id]
            job = Job.from_record(job_id, jsonutil.loads(record))
            assert record == job.record_json()
            assert shard == shard_of(job)
        assert redis_client.exists(f"cio:job:{ids[-1]}")  # the email went to the ledger
