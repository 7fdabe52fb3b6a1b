"""How a queued email is stored (issue 18): the short task message, the job hash, the variadic
ENQUEUE, and proof on real kombu and a real Celery worker that the short message still travels.

The message (queue/_envelope.py) keeps only what kombu and Celery read with `[]`; these tests
would fail if it lost one of them: a worker would drop it as invalid, kombu could not restore it,
or task events would stop naming the task.
"""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from browser import wait_until
from celery import Celery
from kombu import Connection
from test_compat_customerio import Stack, start_stack, stop_stack

from cio_worker import keys
from cio_worker.config import Settings
from cio_worker.ids import new_ulid
from cio_worker.job import Job
from cio_worker.kinds import Kind, queue_name
from cio_worker.ops import collect_metrics, collect_status
from cio_worker.produce._producer import Producer
from cio_worker.queue import DeadLetterStore, ErrorRecord, Sweeper
from cio_worker.queue import _window as window
from cio_worker.queue._envelope import MESSAGE_LUA, lua_parts, task_message
from cio_worker.queue._ledger import JobLedger
from cio_worker.queue._ledger_scripts import ENQUEUE, ENQUEUE_SLICE

EMAIL = Kind("send_email")
WAIT_S = 60


def _email(i: int) -> Job:
    payload = {"transactional_message_id": 1, "identifiers": {"id": f"u{i}"}, "to": f"u{i}@ex.com"}
    return Job(id=new_ulid(), kind=EMAIL, payload=payload, created_at=time.time())


class TestTheTaskMessage:
    def test_it_is_short_plain_json_naming_task_id_and_queue(self) -> None:
        job_id = new_ulid()
        raw = task_message(job_id, EMAIL)
        assert len(raw) <= 350, len(raw)  # send_task's own envelope: about 1,050 bytes
        message = json.loads(raw)
        assert message["headers"] == {
            "task": "cio_worker.send_email",
            "id": job_id,
            "argsrepr": f"['{job_id}']",  # what Flower shows as the task's arguments
            "kwargsrepr": "{}",
        }
        assert json.loads(message["body"]) == [[job_id], {}, {}]  # not base64
        assert message["content-type"] == "application/json"
        properties = message["properties"]
        assert "body_encoding" not in properties
        assert properties["delivery_info"] == {"exchange": "", "routing_key": "cio.transactional"}
        assert (
            properties["delivery_tag"]
            != json.loads(task_message(job_id, EMAIL))["properties"]["delivery_tag"]
        )

    @pytest.mark.parametrize("job_id", ['a"b', "a\\b", "é-ü", "a}b,{", "line\nbreak", "o'q"])
    def test_an_id_is_data_not_syntax(self, job_id: str) -> None:
        message = json.loads(task_message(job_id, EMAIL))
        assert message["headers"]["id"] == job_id
        assert json.loads(message["body"])[0] == [job_id]
        assert ast.literal_eval(message["headers"]["argsrepr"]) == [job_id]


class TestVariadicEnqueue:
    def test_many_jobs_of_two_families_in_one_flush_keep_seq_and_pop_order(
        self, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """More jobs than one ZADD/LPUSH slice, interleaved with another family: every job is
        stored, each family's sequence numbers are contiguous in the order given, and kombu pops
        them in that order (the sweeper's stray search relies on seq order being pop order)."""
        monkeypatch.setattr(window, "WINDOW", 10_000)  # every job pushed: none waits
        emails = [_email(i) for i in range(ENQUEUE_SLICE * 2 + 500)]
        deletes = [
            Job(new_ulid(), Kind("delete"), {"user_id": f"u{i}"}, time.time()) for i in range(3)
        ]
        jobs = emails[:10] + deletes + emails[10:]
        pipe = redis_client.pipeline(transaction=True)
        JobLedger(redis_client).enqueue_many(jobs, pipe=pipe)
        pipe.execute()

        assert _unclaimed(redis_client, "transactional") == [
            (job.id, float(i + 1)) for i, job in enumerate(emails)
        ]
        popped = [json.loads(redis_client.rpop("cio.transactional"))["headers"]["id"]  # type: ignore[arg-type]
                  for _ in emails]  # fmt: skip
        assert popped == [job.id for job in emails]
        assert redis_client.llen("cio.transactional") == 0
        assert _unclaimed(redis_client, "track") == [
            (j.id, float(i + 1)) for i, j in enumerate(deletes)
        ]
        assert (
            redis_client.hget(keys.stats(), "transactional:enqueued") == str(len(emails)).encode()
        )
        record = redis_client.hgetall(keys.job(emails[-1].id))
        assert record == {
            b"job": emails[-1].to_json().encode(),
            b"kind": b"send_email",
            b"attempts": b"0",
            b"state": b"queued",
        }

    def test_a_job_stored_again_starts_over_as_queued(self, redis_client: redis.Redis) -> None:
        """Enqueueing an id that is stored already (not a replay) forgets its old lease, as a
        re-push does: the next claim must not see another worker's ownership."""
        ledger = JobLedger(redis_client)
        job = _email(2)
        ledger.enqueue(job)
        assert ledger.claim(job.id, job.family, "w1", 30).outcome == "ok"
        ledger.enqueue(job)
        record = redis_client.hgetall(keys.job(job.id))
        assert record[b"state"] == b"queued"
        assert b"owner" not in record and b"lease_until" not in record
        assert ledger.claim(job.id, job.family, "w2", 30).outcome == "ok"

    def test_a_replay_resets_the_record_and_starts_its_budget_again(
        self, redis_client: redis.Redis
    ) -> None:
        ledger = JobLedger(redis_client)
        job = _email(1)
        ledger.enqueue(job)
        redis_client.hset(
            keys.job(job.id), mapping={"attempts": 4, "last_error": "{}", "owner": "w"}
        )
        ledger.enqueue_many([job], replace=True, stats_field="requeued")
        record = redis_client.hgetall(keys.job(job.id))
        assert set(record) == {b"job", b"kind", b"attempts", b"state", b"requeued_at"}
        assert record[b"attempts"] == b"0"
        assert abs(int(record[b"requeued_at"]) - time.time()) < 5
        assert redis_client.zscore(keys.unclaimed("transactional"), job.id) == 2
        assert redis_client.hget(keys.stats(), "transactional:requeued") == b"1"


_BUILD = MESSAGE_LUA + "return message(ARGV[1], ARGV[2], ARGV[3], {unpack(ARGV, 4, 9)})"


class TestTheMessageBuiltInLua:
    @pytest.mark.parametrize("kind", list(Kind))
    def test_it_is_the_python_message_for_every_kind(
        self, redis_client: redis.Redis, kind: Kind
    ) -> None:
        """Released jobs' messages are built by the ledger's scripts from `lua_parts`: the same
        bytes as `task_message` but for the tag, which names the family and the push's seq."""
        job_id = new_ulid()
        raw: Any = redis_client.eval(
            _BUILD, 0, job_id, kind.value, f"{kind.family.value}.7", *lua_parts(kind.family)
        )
        built, python = json.loads(raw), json.loads(task_message(job_id, kind))
        assert built["properties"].pop("delivery_tag") == f"{kind.family.value}.7"
        python["properties"].pop("delivery_tag")
        assert built == python
        # A random tag is hex, so it is never one of these.
        assert "." not in json.loads(task_message(job_id, kind))["properties"]["delivery_tag"]

    @pytest.mark.parametrize("job_id", ['a"b', "a\\b", "é-ü", "a}b,{", "line\nbreak", "o'q"])
    def test_an_id_is_data_not_syntax(self, redis_client: redis.Redis, job_id: str) -> None:
        raw: Any = redis_client.eval(
            _BUILD, 0, job_id, "send_email", "transactional.1", *lua_parts(EMAIL.family)
        )
        message = json.loads(raw)
        assert message["headers"]["id"] == job_id
        assert json.loads(message["body"])[0] == [job_id]
        assert json.loads(message["headers"]["argsrepr"]) == [job_id]


@pytest.fixture
def small_window(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(window, "WINDOW", 5)
    return 5


def _popped_ids(client: redis.Redis, queue: str) -> list[str]:
    return [json.loads(raw)["headers"]["id"] for raw in reversed(client.lrange(queue, 0, -1))]  # type: ignore[union-attr]


def _waiting(client: redis.Redis) -> list[str]:
    return [raw.decode() for raw in client.lrange(keys.waiting("transactional"), 0, -1)]  # type: ignore[union-attr]


class TestTheWindow:
    """A family's queue holds WINDOW messages; later jobs wait compactly (queue/_window.py)."""

    def test_jobs_beyond_the_window_wait_compactly_in_order(
        self, redis_client: redis.Redis, small_window: int
    ) -> None:
        emails = [_email(i) for i in range(12)]
        JobLedger(redis_client).enqueue_many(emails)
        queue = queue_name("transactional")
        assert _popped_ids(redis_client, queue) == [job.id for job in emails[:5]]
        assert _waiting(redis_client) == [job.id for job in emails[5:]]
        waiting = emails[5]
        name = keys.job(waiting.id)
        assert redis_client.hgetall(name) == {
            b"state": b"waiting", b"kind": b"send_email", b"attempts": b"0"}  # fmt: skip
        assert redis_client.object("encoding", name) in (b"ziplist", b"listpack")
        record = redis_client.hget(keys.records("transactional"), waiting.id)
        assert record == waiting.record_json()
        assert redis_client.hlen(keys.records("transactional")) == 7
        assert redis_client.zcard(keys.unclaimed("transactional")) == 5
        assert redis_client.hget(keys.stats(), "transactional:enqueued") == b"12"
        # Nothing reads it as a job yet: a worker only loads a job it claimed.
        assert JobLedger(redis_client).load(waiting.id) is None

    def test_claims_release_waiting_jobs_and_pop_order_is_enqueue_order(
        self, redis_client: redis.Redis, small_window: int
    ) -> None:
        ledger = JobLedger(redis_client)
        emails = [_email(i) for i in range(12)]
        ledger.enqueue_many(emails)
        queue = queue_name("transactional")
        taken: list[str] = []
        while (raw := redis_client.rpop(queue)) is not None:
            job_id = json.loads(raw)["headers"]["id"]  # type: ignore[arg-type]
            taken.append(job_id)
            assert ledger.claim(job_id, EMAIL.family, "w1", 30).outcome == "ok"
            # The claim refilled the queue: it stays at the window while jobs wait.
            assert redis_client.llen(queue) == min(5, 12 - len(taken))
        assert taken == [job.id for job in emails]
        assert not redis_client.exists(keys.waiting("transactional"))
        assert not redis_client.exists(keys.records("transactional"))
        released = ledger.load(emails[-1].id)
        assert released is not None and released.attempts == 0
        assert (released.job.id, released.job.payload) == (emails[-1].id, emails[-1].payload)
        assert redis_client.hget(keys.job(emails[-1].id), "job") == emails[-1].to_json().encode()

    def test_a_new_job_never_overtakes_a_waiting_one(
        self, redis_client: redis.Redis, small_window: int
    ) -> None:
        ledger = JobLedger(redis_client)
        emails = [_email(i) for i in range(8)]
        ledger.enqueue_many(emails[:7])
        queue = queue_name("transactional")
        redis_client.rpop(queue)  # a message taken without a claim: the queue has room
        ledger.enqueue(emails[7])  # first releases the oldest waiting job, then waits itself
        assert _popped_ids(redis_client, queue) == [job.id for job in emails[1:6]]
        assert _waiting(redis_client) == [emails[6].id, emails[7].id]

    def test_the_sweeper_tops_up_a_queue_emptied_without_claims(
        self, redis_url: str, redis_client: redis.Redis, small_window: int
    ) -> None:
        emails = [_email(i) for i in range(9)]
        JobLedger(redis_client).enqueue_many(emails)
        queue = queue_name("transactional")
        redis_client.delete(queue)  # every message taken, none claimed
        Sweeper(redis_client, settings=Settings(redis_url=redis_url)).sweep()
        assert _popped_ids(redis_client, queue) == [job.id for job in emails[5:]]
        assert not redis_client.exists(keys.waiting("transactional"))

    def test_an_idle_sweep_costs_no_command_for_the_waiting_lists(
        self, redis_url: str, redis_client: redis.Redis
    ) -> None:
        """Idle workers stay near zero Redis commands (queue/_bells.py): the waiting lists join
        the sweep's one EXISTS over what is running."""
        sweeper = Sweeper(redis_client, settings=Settings(redis_url=redis_url))
        sweeper.sweep()
        redis_client.delete(keys.reaper_lock())
        redis_client.config_resetstat()
        sweeper.sweep()
        calls = redis_client.info("commandstats")
        assert not {"cmdstat_evalsha", "cmdstat_llen", "cmdstat_lrange"} & set(calls), calls
        assert sum(int(c["calls"]) for c in calls.values()) <= 6, calls

    def test_a_replay_waits_behind_the_backlog_and_a_waiting_job_keeps_its_place(
        self, redis_url: str, redis_client: redis.Redis, small_window: int
    ) -> None:
        ledger = JobLedger(redis_client)
        dead = _email(99)
        DeadLetterStore(redis_client).add(dead, 5, ErrorRecord("500", 500, None, 1.0), None)
        emails = [_email(i) for i in range(7)]
        ledger.enqueue_many(emails)
        assert DeadLetterStore(redis_client).replay(
            [dead.id], settings=Settings(redis_url=redis_url)
        ) == [dead.id]
        assert _waiting(redis_client) == [emails[5].id, emails[6].id, dead.id]
        record = redis_client.hgetall(keys.job(dead.id))
        assert record[b"state"] == b"waiting" and record[b"attempts"] == b"0"
        assert abs(int(record[b"requeued_at"]) - time.time()) < 5
        ledger.enqueue_many([emails[5]], replace=True)  # replaced while it waits: same place
        assert _waiting(redis_client) == [emails[5].id, emails[6].id, dead.id]

    def test_status_and_metrics_count_waiting_jobs(
        self, redis_url: str, redis_client: redis.Redis, small_window: int
    ) -> None:
        settings = Settings(redis_url=redis_url)
        old = Job(new_ulid(int((time.time() - 60) * 1000)), EMAIL, {"to": "a@ex.com"}, 0.0)
        JobLedger(redis_client).enqueue_many([old, *(_email(i) for i in range(8))])
        assert collect_status(settings, worker_ping_s=0)["queues"]["transactional"]["waiting"] == 9
        snapshot = collect_metrics(redis_client, settings)
        assert snapshot.queue_depth["transactional"] == 9
        assert snapshot.oldest_job_age_s["transactional"] == pytest.approx(60, abs=5)
        redis_client.delete(queue_name("transactional"))  # only waiting jobs left
        snapshot = collect_metrics(redis_client, settings)
        assert snapshot.queue_depth["transactional"] == 4
        assert 0 <= (snapshot.oldest_job_age_s["transactional"] or -1) < 5


def _state(client: redis.Redis) -> dict[bytes, object]:
    """Everything the ledger stored, key by key (lists in order, sorted sets with scores)."""
    state: dict[bytes, object] = {}
    for name in client.keys("*"):  # type: ignore[union-attr]
        kind = client.type(name)
        if kind == b"hash":
            state[name] = client.hgetall(name)
        elif kind == b"list":
            state[name] = client.lrange(name, 0, -1)
        elif kind == b"zset":
            state[name] = client.zrange(name, 0, -1, withscores=True)
        else:
            state[name] = client.get(name)
    return state


def _push(i: int) -> Job:
    payload = {"transactional_message_id": "t", "identifiers": {"id": f"u{i}"}}
    return Job(new_ulid(), Kind("send_push"), payload, time.time())


class TestEnqueueByRecords:
    """The bulk producer hands the ledger (id, kind, record) with no `Job`; ENQUEUE takes each
    job as two arguments (its hash key built from the prefix, the kinds in one argument) and the
    records of waiting jobs in one HSET per slice. What Redis holds must not change."""

    def test_records_store_exactly_what_jobs_store(
        self, redis_client: redis.Redis, small_window: int
    ) -> None:
        delete = Kind("delete")
        jobs = [_email(i) if i % 3 else _push(i) for i in range(20)]
        jobs[4:4] = [Job(new_ulid(), delete, {"user_id": f"u{i}"}, time.time()) for i in range(7)]
        odd = [Job(job_id, EMAIL, {"to": job_id}, time.time()) for job_id in ODD_IDS]
        jobs[9:9] = odd[:3]  # within the window and beyond it
        jobs += odd[3:]
        ledger = JobLedger(redis_client)
        ledger.enqueue_many(jobs[:3])  # a queue and a waiting list to add to
        ledger.enqueue_many(jobs[3:])
        by_jobs = _state(redis_client)
        assert _waiting(redis_client)[-len(odd[3:]) :] == [job.id for job in odd[3:]]
        redis_client.flushdb()
        records = [(job.id, job.kind, job.record_json()) for job in jobs]
        ledger.enqueue_records(records[:3])
        ledger.enqueue_records(records[3:])
        assert _state(redis_client) == by_jobs

    def test_a_job_twice_in_one_call_waits_once_with_its_last_record(
        self, redis_client: redis.Redis, small_window: int
    ) -> None:
        ledger = JobLedger(redis_client)
        emails = [_email(i) for i in range(6)]
        ledger.enqueue_many(emails)
        waiting_before = emails[5].id
        first = _email(7)
        again = Job(first.id, EMAIL, {"to": "changed@ex.com"}, first.created_at)
        later = _email(8)
        ledger.enqueue_many([first, again, later])
        assert _waiting(redis_client) == [waiting_before, first.id, later.id]
        records = keys.records("transactional")
        assert redis_client.hget(records, first.id) == again.record_json()
        assert redis_client.hgetall(keys.job(first.id)) == {
            b"state": b"waiting", b"kind": b"send_email", b"attempts": b"0"}  # fmt: skip

    def test_an_id_the_records_hold_already_keeps_its_one_place(
        self, redis_client: redis.Redis, small_window: int
    ) -> None:
        """Whether an id joins the waiting list is what the records hash said before the slice
        was written, even for a record whose job hash is gone."""
        ledger = JobLedger(redis_client)
        emails = [_email(i) for i in range(9)]
        ledger.enqueue_many(emails[:7])  # emails 5 and 6 wait
        redis_client.delete(keys.job(emails[5].id))
        ledger.enqueue_many([emails[7], emails[5], emails[6], emails[8]])
        assert _waiting(redis_client) == [emails[i].id for i in (5, 6, 7, 8)]
        assert redis_client.hget(keys.job(emails[5].id), "state") == b"waiting"

    def test_a_call_whose_kinds_do_not_match_its_jobs_writes_nothing(
        self, redis_client: redis.Redis
    ) -> None:
        ((script_keys, args),) = window.record_calls(
            [(job.id, job.kind, job.record_json()) for job in (_email(1), _email(2))]
        )
        script = redis_client.register_script(ENQUEUE)
        with pytest.raises(redis.ResponseError, match="ENQUEUE: 2 kinds for 3 arguments"):
            script(keys=script_keys, args=args[:-1])
        assert redis_client.dbsize() == 0


ODD_IDS = ['a"b', "a\\b", "é-ü", "a}b,{", "line\nbreak", "o'q", "two words", " "]


def _unclaimed(client: redis.Redis, family: str) -> list[tuple[str, float]]:
    raw: Any = client.zrange(keys.unclaimed(family), 0, -1, withscores=True)
    return [(member.decode(), score) for member, score in raw]


def test_a_queued_email_costs_under_600_bytes(redis_url: str, redis_client: redis.Redis) -> None:
    """`INFO memory` per queued email, as bench/fleet.py measures it: 1,915 B before the short
    message (issue 18's baseline), 1,170 B with it, when every email had its message and a job
    hash too big for a listpack. Beyond the queue's window an email waits (queue/_window.py): a
    small hash, a record and an id in a list."""
    settings = Settings(redis_url=redis_url)
    count = 3000

    def used() -> int:
        time.sleep(0.1)
        return int(redis_client.info("memory")["used_memory"])

    def enqueue(n: int) -> None:
        with redis.Redis.from_url(settings.redis_url) as writer:
            with Producer(settings, redis_client=writer).pipeline() as bulk:
                for i in range(n):
                    bulk.enqueue_send_email(1, identifiers={"id": f"user-{i}"}, to=f"u{i}@ex.com")

    enqueue(window.WINDOW + 10)  # the window is full and some wait: shared keys exist
    before = used()
    enqueue(count)
    per_email = (used() - before) / count
    assert redis_client.llen(keys.waiting("transactional")) == count + 10
    assert per_email <= 600, per_email


def test_kombu_acks_rejects_and_restores_the_short_message(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """kombu's own consumer code: a message taken unacknowledged is recorded in its unacked
    hash; a reject with requeue puts it back on its queue; a consumer that died holding it has
    it restored to its queue (the default exchange routes it by routing key) once the
    visibility timeout passes; an ack forgets it."""
    job = _email(1)
    JobLedger(redis_client).enqueue(job)
    queue = queue_name("transactional")
    with Connection(redis_url) as conn:
        channel: Any = conn.channel()  # kombu's stubs list only the abstract channel's methods
        message = channel.basic_get(queue, no_ack=False)
        assert message.headers["id"] == job.id
        assert message.decode() == [[job.id], {}, {}]
        assert redis_client.hlen(keys.kombu_unacked()) == 1
        channel.basic_reject(message.delivery_tag, requeue=True)
        assert redis_client.llen(queue) == 1 and redis_client.hlen(keys.kombu_unacked()) == 0
    # A consumer SIGKILLed while it holds the message: kombu's record of it is all that is left.
    held = subprocess.run(
        [sys.executable, "-c", _TAKE_AND_DIE, redis_url, queue], capture_output=True, timeout=30
    )
    assert held.returncode == -signal.SIGKILL, held.stderr
    assert held.stdout.decode() == job.id
    assert redis_client.llen(queue) == 0 and redis_client.hlen(keys.kombu_unacked()) == 1
    with Connection(redis_url, transport_options={"visibility_timeout": 0}) as conn:
        channel = conn.channel()
        channel.qos.restore_visible()
        assert redis_client.llen(queue) == 1, "restored to its own queue"
        again = channel.basic_get(queue, no_ack=False)
        assert again.headers["id"] == job.id and again.delivery_info["redelivered"]
        channel.basic_ack(again.delivery_tag)
    assert redis_client.hlen(keys.kombu_unacked()) == 0
    assert redis_client.llen(queue) == 0


_TAKE_AND_DIE = """
import os, signal, sys
from kombu import Connection
conn = Connection(sys.argv[1])
message = conn.channel().basic_get(sys.argv[2], no_ack=False)
sys.stdout.write(message.headers["id"])
sys.stdout.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture(scope="module")
def worker_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A private Redis, the sandbox and one Celery worker (task events on, as shipped)."""
    running = start_stack(
        tmp_path_factory.mktemp("email-storage"),
        {"CIO_WORKER_BATCH": "off", "CIO_WORKER_BACKOFF_BASE_S": "0.2"},
    )
    try:
        yield running
    finally:
        stop_stack(running)


@pytest.mark.integration
def test_a_worker_consumes_retries_and_acks_short_messages_and_names_the_task(
    worker_stack: Stack,
) -> None:
    """Emails enqueued as short messages reach the sandbox once each, the first try of each
    answered 500 and retried; nothing stays queued or unacknowledged; and the worker's task
    events (what Flower shows) name the task and the job."""
    client = redis.Redis.from_url(worker_stack.settings.redis_url)
    wait_until(lambda: b"ready" in worker_stack.worker_log.read_bytes(), "the worker to be ready")
    events: list[dict[str, Any]] = []
    app = Celery(broker=worker_stack.settings.redis_url, set_as_current=False)
    receivers: list[Any] = []

    def listen() -> None:
        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={"*": events.append})
            receivers.append(receiver)
            receiver.capture(limit=None, timeout=WAIT_S, wakeup=False)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        _run_emails(worker_stack, client, events)
    finally:
        for receiver in receivers:
            receiver.should_stop = True
        listener.join(10)


def _run_emails(stack: Stack, client: redis.Redis, events: list[dict[str, Any]]) -> None:
    settings = stack.settings
    time.sleep(1)  # the receiver's subscription is in place
    sandbox = stack.sandbox_url
    count = 3
    httpx.post(f"{sandbox}/_sandbox/faults",
               json={"status": 500, "count": count, "family": "transactional"},
               timeout=5).raise_for_status()  # fmt: skip
    producer = Producer(settings)
    ids = [producer.enqueue_send_email(1, identifiers={"id": f"ev-{i}"}, to=f"ev{i}@ex.com")
           for i in range(count)]  # fmt: skip

    def delivered() -> bool:
        stats = client.hgetall(keys.stats())
        return int(stats.get(b"transactional:delivered", 0)) == count

    wait_until(delivered, "every email delivered")
    records = httpx.get(f"{sandbox}/_sandbox/requests?family=transactional", timeout=5).json()
    assert len(records) == 2 * count  # each email: a 500, then its retry
    accepted = [r["body"]["to"] for r in records if r["accepted"]]
    assert sorted(accepted) == sorted(f"ev{i}@ex.com" for i in range(count))
    assert client.llen("cio.transactional") == 0
    wait_until(lambda: client.hlen(keys.kombu_unacked()) == 0, "every message acknowledged")
    assert not any(client.exists(keys.job(job_id)) for job_id in ids)

    def named() -> bool:
        received = {e["uuid"] for e in events if e["type"] == "task-received"
                    and e.get("name") == "cio_worker.send_email"}  # fmt: skip
        succeeded = {e["uuid"] for e in events if e["type"] == "task-succeeded"}
        return set(ids) <= received and set(ids) <= succeeded

    wait_until(named, "task events naming cio_worker.send_email for each job", timeout_s=15)


@pytest.mark.integration
def test_a_real_worker_delivers_a_backlog_beyond_the_window_in_order(
    worker_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog enqueued while the worker is frozen: the first WINDOW emails get messages, the
    rest wait compactly; the worker then delivers every one once, in about the enqueue order
    (its threads take messages in order and answer in any), releasing waiting jobs as it claims
    (the worker's own window is the shipped one: the producer's decides what waits)."""
    monkeypatch.setattr(window, "WINDOW", 5)
    client = redis.Redis.from_url(worker_stack.settings.redis_url)
    wait_until(lambda: b"ready" in worker_stack.worker_log.read_bytes(), "the worker to be ready")
    worker = worker_stack.procs[2]
    since = worker_stack.last_seq()
    count = 40
    worker.send_signal(signal.SIGSTOP)
    try:
        producer = Producer(worker_stack.settings)
        with producer.pipeline() as bulk:
            for i in range(count):
                bulk.enqueue_send_email(1, identifiers={"id": f"bl-{i}"}, to=f"bl{i}@ex.com")
        # 5 messages (one of them may already be in the frozen worker's pending BRPOP).
        assert client.llen(queue_name("transactional")) in (4, 5)
        assert client.llen(keys.waiting("transactional")) == count - 5
    finally:
        worker.send_signal(signal.SIGCONT)
    records = worker_stack.wait_for(since, count, settle_s=0.5)
    sent = [r["body"]["to"] for r in records if r["accepted"]]
    assert sorted(sent) == sorted(f"bl{i}@ex.com" for i in range(count))
    displacement = max(abs(sent.index(f"bl{i}@ex.com") - i) for i in range(count))
    assert displacement <= 8, sent  # the worker's threads (8); a LIFO backlog would show ~39
    wait_until(lambda: client.llen(queue_name("transactional")) == 0, "the queue to drain")
    assert not client.exists(keys.waiting("transactional"), keys.records("transactional"))
