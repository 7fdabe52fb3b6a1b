"""The chaos suite's harness: a private Redis, the sandbox and real worker processes, plus the
bookkeeping that turns the sandbox's request log and the dead-letter queue into a verdict.

Every process is started here and stopped by `ChaosStack.close()` (the fixture calls it in a
`finally`). Nothing here sleeps to prove speed: waits poll a condition against a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis

from cio_worker import keys
from cio_worker.config import Settings
from cio_worker.dev import RedisServer, SandboxProcess, free_port
from cio_worker.kinds import Family, queue_name
from cio_worker.produce._producer import Producer
from cio_worker.queue._deadletter import DeadLetter, DeadLetterStore

T = TypeVar("T")

#: Settings every chaos stack starts from: short backoff so retries happen within seconds, and
#: an open circuit probes every 0.1-0.5 s instead of 1-30 s (time scaled as the backoff is).
BASE_SETTINGS = {
    "CIO_WORKER_BACKOFF_BASE_S": "0.2",
    "CIO_WORKER_BACKOFF_MAX_S": "2",
    "CIO_WORKER_CIRCUIT_PROBE_MIN_S": "0.1",
    "CIO_WORKER_CIRCUIT_PROBE_MAX_S": "0.5",
    # An ambiguous send is reconciled (asked about) 2 s after its attempt, not 60 s.
    "CIO_WORKER_RECONCILE_SETTLE_S": "2",
    "CIO_WORKER_LOG_FORMAT": "json",
    "CIO_WORKER_LOG_LEVEL": "INFO",
}


def wait_until(
    predicate: Callable[[], T | None], timeout_s: float, what: str, *, interval_s: float = 0.1
) -> T:
    """Poll `predicate` until it returns something truthy; fail naming `what` at the deadline.

    Redis errors count as "not yet": several scenarios poll while Redis is down.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = predicate()
            if result:
                return result
        except (redis.RedisError, httpx.HTTPError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)


def owner_pid(owner: str) -> int:
    """The pid inside a lease owner id (`host:pid:random`, leases.new_owner_id)."""
    return int(owner.rsplit(":", 2)[1])


# -- worker processes ----------------------------------------------------------------------------
@dataclass
class WorkerProcess:
    """One worker: a plain `celery worker`, or `python -m cio_worker worker` (supervised).

    Each runs in its own process group, so that a supervised worker's Celery child is stopped
    with it even if the supervisor itself had to be killed.
    """

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    supervised: bool

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def count(self, event: str) -> int:
        """How many log lines name `event` (structlog JSON from workers, console from the
        supervisor)."""
        return sum(1 for line in self.log().splitlines() if event in line)

    def ready_count(self) -> int:
        """How many times a Celery worker in this process tree said it was ready."""
        return self.log().count(" ready.")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (a warm shutdown); SIGKILL the whole group if it does not end in time."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            # Whatever is left of the process group this test created (a Celery child that
            # outlived its supervisor), and nothing else.
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the group is empty: everything exited
        if self.process.poll() is None:
            self.process.wait(timeout=10)


# -- the stack -----------------------------------------------------------------------------------
def start_sandbox(
    root: Path, redis_url: str, settings: Mapping[str, str]
) -> tuple[SandboxProcess, dict[str, str]]:
    """The sandbox on a free port, and the environment every worker of the stack gets: this
    process's minus any CIO_/CUSTOMERIO_ variable, then BASE_SETTINGS, then `settings`."""
    sandbox_port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CIO_", "CUSTOMERIO_"))},
        "PYTHONUNBUFFERED": "1",
        "CIO_WORKER_REDIS_URL": redis_url,
        "CIO_WORKER_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}",
        **BASE_SETTINGS,
        **settings,
    }
    sandbox = SandboxProcess(env=env, log_path=root / "sandbox.log", port=sandbox_port).start()
    return sandbox, env


@dataclass
class ChaosStack:
    """A private redis-server (AOF on), the sandbox, and the workers a test starts."""

    root: Path
    redis_server: RedisServer
    sandbox: SandboxProcess
    env: dict[str, str]
    workers: list[WorkerProcess] = field(default_factory=list)
    _client: redis.Redis | None = None

    @classmethod
    def start(cls, root: Path, settings: Mapping[str, str]) -> ChaosStack:
        root.mkdir(parents=True, exist_ok=True)
        redis_server = RedisServer(root / "redis").start()
        try:
            sandbox, env = start_sandbox(root, redis_server.url, settings)
        except BaseException:
            redis_server.stop()
            raise
        return cls(root=root, redis_server=redis_server, sandbox=sandbox, env=env)

    def close(self) -> None:
        """Stop everything this stack started, whatever state it is in."""
        try:
            httpx.delete(f"{self.sandbox.url}/_sandbox/faults", timeout=2)
        except httpx.HTTPError:
            pass  # a stuck sandbox is stopped below anyway
        for worker in self.workers:
            worker.stop()
        self.sandbox.stop()
        if self._client is not None:
            self._client.close()
        self.redis_server.stop()

    # -- processes -------------------------------------------------------------------------------
    def start_worker(
        self, name: str, *, supervised: bool = False, concurrency: int = 8
    ) -> WorkerProcess:
        """Start a worker consuming every queue; `supervised` runs `python -m cio_worker worker`.

        The supervised form is the production command with only a name and a concurrency added
        (mingle and gossip stay on); the plain form is `celery worker` without them, for speed.
        """
        if supervised:
            command = [sys.executable, "-m", "cio_worker", "worker",
                       f"--hostname={name}@%h", f"--concurrency={concurrency}"]  # fmt: skip
        else:
            command = [sys.executable, "-m", "celery", "-A", "cio_worker", "worker",
                       "--loglevel", "INFO", f"--hostname={name}@%h",
                       f"--concurrency={concurrency}", "--without-mingle",
                       "--without-gossip"]  # fmt: skip
        log_path = self.root / f"{name}.log"
        with open(log_path, "wb") as out:  # the child keeps its own descriptor
            process = subprocess.Popen(
                command,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(name, process, log_path, supervised)
        self.workers.append(worker)
        return worker

    def wait_ready(self, *workers: WorkerProcess, timeout_s: float = 30.0) -> None:
        for worker in workers:
            wait_until(worker.ready_count, timeout_s, f"worker {worker.name} ready")

    def kill_redis(self) -> None:
        """SIGKILL redis-server, as a crash would."""
        if self._client is not None:
            self._client.close()
        self.redis_server.kill()

    def restart_redis(self) -> None:
        """Start redis-server again on the same port and data dir: it loads its AOF."""
        self.redis_server.start()

    # -- Redis -----------------------------------------------------------------------------------
    @property
    def redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.redis_server.url,
                socket_timeout=5,
                socket_connect_timeout=1,
                decode_responses=True,
            )
        return self._client

    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def producer(self) -> Producer:
        return Producer(self.settings())

    def unfinished(self, job_ids: Iterable[str]) -> list[str]:
        """Job ids still stored (not yet delivered or dead-lettered): a per-job ledger record
        (`cio:job:<id>`) or a batched job in a shard's `cio:bq:<api>:<shard>:jobs` hash."""
        ids = list(job_ids)
        batched = self.batched_ids()
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.exists(keys.job(job_id))
        return [
            job_id
            for job_id, exists in zip(ids, pipe.execute(), strict=True)
            if exists or job_id in batched
        ]

    def batched_ids(self) -> set[str]:
        """Every batched job still stored, whichever shard holds it."""
        found: set[str] = set()
        for name in self.redis.scan_iter(match="cio:bq:*:jobs", count=1000):
            found.update(str(key) for key in self.redis.hkeys(name))
        return found

    def attempts(self, job_id: str) -> int | None:
        """The job's attempts so far, or None once it has left the ledger."""
        raw = self.redis.hget(keys.job(job_id), "attempts")
        if raw is not None:
            return int(raw)
        if job_id not in self.batched_ids():
            return None
        for name in self.redis.scan_iter(match="cio:bq:*:meta", count=1000):
            value = self.redis.hget(name, f"{job_id}:attempts")
            if value is not None:
                return int(value)
        # No attempts recorded: a batched job that never failed, or one that left (dead-lettered
        # or delivered) between the reads above, which take several round trips. Reading 0 for
        # a job that had spent its attempts once made the poison test kill a fourth sender.
        if self.redis.hexists(keys.dead_letters(), job_id) or job_id not in self.batched_ids():
            return None
        return 0

    def wait_all_ended(self, job_ids: Iterable[str], timeout_s: float) -> float:
        """Wait until every job was delivered or dead-lettered; return the seconds it took."""
        ids = list(job_ids)
        started = time.monotonic()

        def ended() -> bool:
            self.check_some_worker_alive()
            return not self.unfinished(ids)

        wait_until(ended, timeout_s, f"{len(ids)} jobs to end", interval_s=0.2)
        return time.monotonic() - started

    def check_some_worker_alive(self) -> None:
        """Fail at once, saying why, when every worker process this stack started has exited."""
        if self.workers and not any(worker.alive() for worker in self.workers):
            check_supervisors_alive(w for w in self.workers if w.supervised)
            raise AssertionError(f"every worker process exited\n{self.describe()}")

    def running_jobs(self) -> dict[str, dict[str, str]]:
        """Every job a worker holds now: id -> {owner, sending, attempts, kind}."""
        found: dict[str, dict[str, str]] = {}
        names = list(self.redis.scan_iter(match=keys.job("*"), count=1000))
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hmget(name, "state", "owner", "sending", "attempts", "kind")
        for name, (state, owner, sending, attempts, kind) in zip(
            names, pipe.execute(), strict=True
        ):
            if state == "running" and owner:
                found[name.removeprefix(keys.job(""))] = {
                    "owner": owner,
                    "sending": "1" if sending else "",
                    "attempts": attempts or "0",
                    "kind": kind or "",
                }
        return found

    def dead_letters(self) -> dict[str, DeadLetter]:
        return {letter.job.id: letter for letter in DeadLetterStore(self.redis).list()}

    def leftovers(self) -> dict[str, int]:
        """What is still in the ledger, its indexes and the queues (all zero once all ended)."""
        found = {
            "cio:job:*": sum(1 for _ in self.redis.scan_iter(match=keys.job("*"), count=1000)),
            keys.delayed(): int(self.redis.zcard(keys.delayed())),
            keys.leases(): int(self.redis.zcard(keys.leases())),
        }
        for family in Family:
            found[keys.unclaimed(family.value)] = int(
                self.redis.zcard(keys.unclaimed(family.value))
            )
            found[queue_name(family)] = int(self.redis.llen(queue_name(family)))
        found.update(self._batch_leftovers())
        return found

    def _batch_leftovers(self) -> dict[str, int]:
        """Batched delivery's keys (`cio:bq:<api>:<shard>[:part]`, queue/_shards.py), by part."""
        found = {"cio:bq:* ids queued": 0, "cio:bq:*:inflight batches": 0}
        for name in self.redis.scan_iter(match="cio:bq:*", count=1000):
            kind = self.redis.type(name)
            part = name.rsplit(":", 1)[1]
            if kind == "list":
                found["cio:bq:* ids queued"] += int(self.redis.llen(name))
            elif part == "inflight":
                found["cio:bq:*:inflight batches"] += 1
            elif kind == "hash":  # jobs, items, meta: one field (or three) per stored job
                label = f"cio:bq:*:{part} fields"
                found[label] = found.get(label, 0) + int(self.redis.hlen(name))
        return found

    def inflight_batches(self) -> list[dict[str, Any]]:
        """Every batch being sent now: {owner, ids}."""
        found = []
        for name in self.redis.scan_iter(match="cio:bq:*:inflight", count=1000):
            owner, ids = self.redis.hmget(name, "owner", "ids")
            if owner and ids:
                found.append({"owner": owner, "ids": json.loads(ids)})
        return found

    def kombu_unacked(self) -> int:
        """Messages kombu still holds as unacknowledged (a killed worker's, until restored)."""
        return int(self.redis.hlen("unacked"))

    # -- the sandbox -----------------------------------------------------------------------------
    def set_fault(self, **spec: object) -> None:
        response = httpx.post(f"{self.sandbox.url}/_sandbox/faults", json=spec, timeout=5)
        response.raise_for_status()

    def set_listing_lag(self, seconds: float) -> None:
        """Make new deliveries and triggers appear in the App API's listings this late."""
        response = httpx.post(
            f"{self.sandbox.url}/_sandbox/config", json={"listing_lag_s": seconds}, timeout=5
        )
        response.raise_for_status()

    def clear_fault(self) -> None:
        httpx.delete(f"{self.sandbox.url}/_sandbox/faults", timeout=5).raise_for_status()

    def fault(self) -> dict[str, Any] | None:
        found: dict[str, Any] | None = httpx.get(
            f"{self.sandbox.url}/_sandbox/faults", timeout=5
        ).json()["fault"]
        return found

    def records(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = httpx.get(
            f"{self.sandbox.url}/_sandbox/requests", timeout=30
        ).json()
        return found

    def accepted_count(self) -> int:
        stats = httpx.get(f"{self.sandbox.url}/_sandbox/stats", timeout=5).json()
        return int(stats["accepted"])

    def request_count(self) -> int:
        stats = httpx.get(f"{self.sandbox.url}/_sandbox/stats", timeout=5).json()
        return int(stats["requests"])

    def describe(self) -> str:
        """Tails of every log, for a failing assertion's message."""
        parts = []
        for worker in self.workers:
            tail = "\n".join(worker.log().splitlines()[-15:])
            parts.append(f"--- {worker.name} (alive={worker.alive()})\n{tail}")
        return "\n".join(parts)


#: What the `chaos_stack` fixture gives a test: `chaos_stack(CIO_WORKER_X="1", ...)`.
StackFactory = Callable[..., ChaosStack]


# -- bookkeeping ---------------------------------------------------------------------------------
#: Kinds a test enqueues. `track` events travel in Track v2 batches (worker/_batcher.py, the
#: default); `track_anonymous` events are not batchable and take the per-job path (a Celery message
#: per job, claimed in the ledger), as transactional sends do. Events carry their job id as the
#: dedup id; transactional sends have none.
EVENT_KINDS = frozenset({"track", "track_anonymous"})


@dataclass
class JobBook:
    """The jobs a test enqueued, and how to find each one in the sandbox's request log.

    An event (batched or not) carries its job id as the event `id`. A transactional send carries
    no job id, so each is given a unique identifier `tx-<n>`.
    """

    producer: Producer
    kinds: dict[str, str] = field(default_factory=dict)
    tag_to_job: dict[str, str] = field(default_factory=dict)

    def add(self, job_id: str, kind: str, tag: str | None = None) -> str:
        """Record a job the test enqueued itself."""
        self.kinds[job_id] = kind
        self.tag_to_job[tag or job_id] = job_id
        return job_id

    def track(self, n: int) -> list[str]:
        """Batched person events."""
        return [
            self.add(self.producer.enqueue_track(f"u{i}", "Chaos", {"n": i}), "track")
            for i in range(len(self.kinds), len(self.kinds) + n)
        ]

    def anonymous(self, n: int) -> list[str]:
        """Anonymous events: one request and one Celery message per job."""
        return [
            self.add(
                self.producer.enqueue_track_anonymous(f"anon{i}", "Chaos", {"n": i}),
                "track_anonymous",
            )
            for i in range(len(self.kinds), len(self.kinds) + n)
        ]

    def transactional(self, n: int) -> list[str]:
        ids = []
        for _ in range(n):
            tag = f"tx-{len(self.kinds)}"
            job_id = self.producer.enqueue_send_email(
                7, identifiers={"id": tag}, to=f"{tag}@example.com", message_data={"n": tag}
            )
            ids.append(self.add(job_id, "transactional", tag))
        return ids

    @property
    def ids(self) -> list[str]:
        return list(self.kinds)

    def of_kind(self, *kinds: str) -> list[str]:
        return [job_id for job_id, kind in self.kinds.items() if kind in kinds]

    def jobs_of(self, record: Mapping[str, Any]) -> list[str | None]:
        """The jobs one sandbox record carried (None for an item that is not ours)."""
        body = record.get("body")
        if not isinstance(body, dict):
            return [None]
        if isinstance(body.get("batch"), list):
            return [
                self.tag_to_job.get(str(item.get("id"))) if isinstance(item, dict) else None
                for item in body["batch"]
            ]
        identifiers = body.get("identifiers")
        if record.get("family") == "transactional" and isinstance(identifiers, dict):
            return [self.tag_to_job.get(str(identifiers.get("id")))]
        return [self.tag_to_job.get(str(body.get("id")))]


@dataclass
class Verdict:
    """Every job's fate, from the sandbox's log and the DLQ."""

    #: job id -> how many requests carrying it the sandbox accepted.
    accepted: Counter[str]
    #: job id -> every sandbox record that carried it (a batch record is listed for each item).
    requests: dict[str, list[dict[str, Any]]]
    dead: dict[str, DeadLetter]
    #: records or batch items that are none of this test's jobs (expected: 0).
    foreign: int
    #: every record, for counting statuses.
    records: list[dict[str, Any]]

    def delivered(self) -> set[str]:
        return {job_id for job_id, n in self.accepted.items() if n > 0}

    def duplicates(self) -> dict[str, int]:
        """Jobs accepted more than once, with how many times."""
        return {job_id: n for job_id, n in self.accepted.items() if n > 1}

    def met(self, job_id: str, **match: object) -> int:
        """How many of the job's requests match, e.g. `met(job, fault="drop")`."""
        return sum(
            1
            for record in self.requests[job_id]
            if all(record.get(key) == value for key, value in match.items())
        )

    def statuses(self) -> Counter[object]:
        return Counter(record["status"] for record in self.records)


def verdict(stack: ChaosStack, book: JobBook) -> Verdict:
    records = stack.records()
    accepted: Counter[str] = Counter()
    requests: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in book.ids}
    foreign = 0
    for record in records:
        if record.get("method") == "GET" and record.get("family") == "app":
            continue  # an App API read (reconciliation asking what was sent), not a delivery
        for job_id in book.jobs_of(record):
            if job_id is None:
                foreign += 1
                continue
            requests[job_id].append(record)
            if record["accepted"]:
                accepted[job_id] += 1
    return Verdict(accepted, requests, stack.dead_letters(), foreign, records)


def check_every_job_ended(
    stack: ChaosStack,
    book: JobBook,
    result: Verdict,
    *,
    allowed_reasons: Mapping[str, str],
    messages_may_repeat: bool = False,
) -> None:
    """Every job is delivered or dead-lettered with an allowed reason, none lost, none stuck.

    `allowed_reasons` maps a kind ("track", "track_anonymous", "transactional") to a substring
    every dead letter of that kind must contain; a kind not listed may not be dead-lettered.
    `messages_may_repeat` (CIO_WORKER_AMBIGUOUS_MESSAGES=retry) lets a transactional send be
    accepted twice; otherwise only events may be, each copy with its one dedup id.
    """
    assert stack.unfinished(book.ids) == [], "jobs still in the ledger"
    lost = [j for j in book.ids if j not in result.dead and result.accepted[j] == 0]
    assert lost == [], f"{len(lost)} jobs neither delivered nor dead-lettered: {lost[:5]}"
    for job_id, letter in result.dead.items():
        kind = book.kinds.get(job_id)
        assert kind is not None, f"a dead letter that is not ours: {job_id}"
        expected = allowed_reasons.get(kind)
        assert expected is not None, f"{kind} job {job_id} dead-lettered: {letter.reason}"
        assert expected in letter.reason, (job_id, letter.reason)
    # A job accepted twice is only ever an event, and every copy carries its one dedup id.
    for job_id, n in result.duplicates().items():
        if messages_may_repeat and book.kinds[job_id] == "transactional":
            continue
        assert book.kinds[job_id] in EVENT_KINDS, f"{book.kinds[job_id]} accepted {n} times"
        copies = [r for r in result.requests[job_id] if r["accepted"]]
        assert {_dedup_id(r["body"], job_id) for r in copies} == {job_id}
    assert result.statuses()[207] == 0, "a batch was partly refused: the test's items are valid"
    assert result.foreign == 0, "the sandbox saw requests that are not this test's jobs"


def _dedup_id(body: Any, job_id: str) -> str | None:
    """The event `id` that carried `job_id` in a request body (a batch item or a v1 event)."""
    items = body["batch"] if isinstance(body, dict) and "batch" in body else [body]
    found = [item.get("id") for item in items if item.get("id") == job_id]
    return found[0] if found else None


def check_nothing_left(stack: ChaosStack, timeout_s: float = 15.0) -> dict[str, int]:
    """The ledger, its indexes, the batch shards and the queues drain to empty."""
    last: dict[str, int] = {}

    def empty() -> bool:
        last.clear()
        last.update(stack.leftovers())
        return not any(last.values())

    try:
        wait_until(empty, timeout_s, "the ledger, indexes and queues to be empty", interval_s=0.3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {last}") from None
    return last


def check_supervisors_alive(workers: Iterable[WorkerProcess]) -> None:
    """Every `cio-worker worker` is still running: a dead Celery child was started again.

    Celery exits with status 1 ("Unrecoverable error") when kombu crashes while closing its
    connection after Redis went away (`AttributeError: 'NoneType' object has no attribute
    'hostname'`: 8 of 37 worker processes across the Redis restarts measured here); the
    supervisor must treat that as a crash to restart from, not as a configuration error.
    """
    for worker in workers:
        assert worker.supervised
        crashed = worker.count("Unrecoverable error")
        assert worker.alive(), (
            f"`cio-worker worker` {worker.name} exited with status {worker.process.poll()} "
            f"instead of restarting its Celery child (kombu 'Unrecoverable error' lines in its "
            f"log: {crashed}); supervise.FATAL_EXIT_CODES treats Celery's generic failure "
            f"status 1 as a configuration error"
        )


# -- killing a worker mid-flight -----------------------------------------------------------------
@dataclass
class Kill:
    """A worker process SIGKILLed while it held jobs, and what it held at its death."""

    pid: int
    at: float
    #: per-job jobs it had claimed: id -> {owner, sending, attempts, kind}
    claimed: dict[str, dict[str, str]]
    #: ids of the batched jobs in the batches it was sending
    batched: list[str]

    @property
    def held(self) -> list[str]:
        return [*self.claimed, *self.batched]


def kill_busy_worker(stack: ChaosStack, *, with_batch: bool, timeout_s: float = 30.0) -> Kill:
    """SIGKILL a worker process that holds claimed jobs (and a batch, if `with_batch`).

    The victim is found through the ledger: a lease owner id names its process. What it held is
    read after its death, when nothing can change it any more.
    """

    def busy_pid() -> int | None:
        pids = {owner_pid(info["owner"]) for info in stack.running_jobs().values()}
        if with_batch:
            pids &= {owner_pid(batch["owner"]) for batch in stack.inflight_batches()}
        return min(pids, default=None)

    pid = wait_until(busy_pid, timeout_s, "a worker holding jobs", interval_s=0.02)
    os.kill(pid, signal.SIGKILL)
    at = time.monotonic()
    claimed = {
        job_id: info
        for job_id, info in stack.running_jobs().items()
        if owner_pid(info["owner"]) == pid
    }
    batched = [
        job_id
        for batch in stack.inflight_batches()
        if owner_pid(batch["owner"]) == pid
        for job_id in batch["ids"]
    ]
    return Kill(pid, at, claimed, batched)


def seconds_until_ended(
    stack: ChaosStack, job_ids: Iterable[str], since: float, timeout_s: float
) -> dict[str, float]:
    """For each job, seconds from `since` (monotonic) until it left the ledger (delivered or
    dead-lettered); jobs still there at the deadline are missing from the answer."""
    waiting = set(job_ids)
    ended: dict[str, float] = {}
    deadline = since + timeout_s
    while waiting and time.monotonic() < deadline:
        stack.check_some_worker_alive()
        try:
            still = set(stack.unfinished(waiting))
        except redis.RedisError:
            still = waiting
        now = time.monotonic()
        for job_id in waiting - still:
            ended[job_id] = now - since
        waiting = still
        time.sleep(0.2)
    return ended
