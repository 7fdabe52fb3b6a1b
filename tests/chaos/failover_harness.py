"""The chaos harness on Redis Sentinel: a master, a replica and three sentinels instead of one
redis-server, the Procfile's plain `celery -A cio_worker worker`, and a producer thread that
enqueues steadily while the master is killed.

Built on harness.py (its stack, book and verdict); what differs is that an enqueue may fail
during the failover. A failed enqueue promised nothing, yet its job may have been stored (the
master took the write and died before answering), so the verdict tells those deliveries apart
from foreign ones instead of counting them as "not this test's jobs".
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.sentinel import Sentinel

from cio_worker.connection import parse_sentinel_url
from cio_worker.dev import SentinelCluster
from cio_worker.errors import EnqueueError
from cio_worker.produce._producer import Producer

from .harness import EVENT_KINDS, ChaosStack, JobBook, WorkerProcess, start_sandbox, verdict


@dataclass
class FailoverStack(ChaosStack):
    """`ChaosStack` whose Redis is a `SentinelCluster`; workers and producers get its URL."""

    cluster: SentinelCluster | None = None

    @classmethod
    def start_cluster(cls, root: Path, settings: dict[str, str]) -> FailoverStack:
        root.mkdir(parents=True, exist_ok=True)
        cluster = SentinelCluster(root / "cluster").start()
        try:
            sandbox, env = start_sandbox(root, cluster.url, settings)
        except BaseException:
            cluster.stop()
            raise
        return cls(
            root=root, redis_server=cluster.nodes[0], sandbox=sandbox, env=env, cluster=cluster
        )

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.cluster is not None:
                self.cluster.stop()

    @property
    def redis(self) -> redis.Redis:
        """A client of whichever node is master now (the harness reads with it)."""
        if self._client is None:
            assert self.cluster is not None
            hosts, db, master, _ = parse_sentinel_url(self.cluster.url)
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                hosts, sentinel_kwargs={"socket_timeout": 1, "socket_connect_timeout": 1}
            )
            self._client = sentinel.master_for(  # type: ignore[no-untyped-call]
                master, db=db, socket_timeout=5, socket_connect_timeout=1, decode_responses=True
            )
        assert self._client is not None
        return self._client

    def start_procfile_worker(self, name: str, *, concurrency: int = 4) -> WorkerProcess:
        """The Procfile's `celery -A cio_worker worker --loglevel INFO --task-events`, with a
        name and a concurrency: mingle and gossip on, no supervisor to restart it."""
        command = [sys.executable, "-m", "celery", "-A", "cio_worker", "worker",
                   "--loglevel", "INFO", "--task-events", f"--hostname={name}@%h",
                   f"--concurrency={concurrency}"]  # fmt: skip
        log_path = self.root / f"{name}.log"
        with open(log_path, "wb") as out:  # the child keeps its own descriptor
            process = subprocess.Popen(
                command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        worker = WorkerProcess(name, process, log_path, supervised=False)
        self.workers.append(worker)
        return worker


@dataclass
class SteadyProducer:
    """Enqueues from a thread at a steady pace until stopped: batched track events, and every
    `every_tx`-th job a transactional email. Acknowledged jobs go to `book` (with the time the
    enqueue returned); attempts that raised EnqueueError are remembered by their person."""

    producer: Producer
    book: JobBook
    rate_per_s: float = 60.0
    every_tx: int = 3
    #: (monotonic time the enqueue returned, job id), in order.
    acked: list[tuple[float, str]] = field(default_factory=list)
    #: People (`f<n>`, `tx-<n>`) whose enqueue raised: their job may exist all the same.
    failed: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _crash: BaseException | None = None

    def start(self) -> SteadyProducer:
        self._thread = threading.Thread(target=self._run, name="steady-producer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._crash is not None:
            raise AssertionError(f"the producer thread crashed: {self._crash!r}")

    def acked_after(self, moment: float) -> list[str]:
        return [job_id for at, job_id in self.acked if at > moment]

    def _run(self) -> None:
        interval = 1 / self.rate_per_s
        next_at = time.monotonic()
        n = 0
        try:
            while not self._stop.is_set():
                self._enqueue_one(n)
                n += 1
                next_at += interval
                # Pace, not proof: an enqueue that failed slowly is not made up for in a burst.
                next_at = max(next_at, time.monotonic() - interval)
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # surfaced by stop()
            self._crash = exc

    def _enqueue_one(self, n: int) -> None:
        transactional = n % self.every_tx == self.every_tx - 1
        person = f"tx-{n}" if transactional else f"f{n}"
        try:
            if transactional:
                job_id = self.producer.enqueue_send_email(
                    7, identifiers={"id": person}, to=f"{person}@example.com"
                )
                self.book.add(job_id, "transactional", person)
            else:
                job_id = self.producer.enqueue_track(person, "Failover", {"n": n})
                self.book.add(job_id, "track")
        except EnqueueError:
            self.failed.add(person)
            return
        self.acked.append((time.monotonic(), job_id))


def person_of(record: dict[str, Any]) -> list[str | None]:
    """The person of each item of a sandbox record (a batch item's or a send's identifiers)."""
    body = record.get("body")
    if not isinstance(body, dict):
        return [None]
    items = body["batch"] if isinstance(body.get("batch"), list) else [body]
    return [
        str(item["identifiers"].get("id"))
        if isinstance(item, dict) and isinstance(item.get("identifiers"), dict)
        else None
        for item in items
    ]


def check_failover_verdict(stack: FailoverStack, book: JobBook, failed: set[str]) -> dict[str, int]:
    """Every acknowledged job was delivered; none but events (each under its one dedup id) was
    accepted twice; no transactional send twice; anything else the sandbox saw is a job whose
    enqueue raised (stored before the master died). Returns counts for the report."""
    result = verdict(stack, book)
    lost = [job_id for job_id in book.ids if result.accepted[job_id] == 0]
    assert lost == [], f"{len(lost)} acknowledged jobs never delivered: {lost[:5]}"
    for job_id, n in result.duplicates().items():
        assert book.kinds[job_id] in EVENT_KINDS, f"{book.kinds[job_id]} accepted {n} times"
        copies = [r for r in result.requests[job_id] if r["accepted"]]
        assert all(job_id in str(r["body"]) for r in copies)
    unknown: Counter[str] = Counter()
    unacknowledged = 0
    for record in result.records:
        for ours, person in zip(book.jobs_of(record), person_of(record), strict=True):
            if ours is not None:
                continue
            if person in failed:
                unacknowledged += 1
            else:
                unknown[str(person)] += 1
    assert not unknown, f"the sandbox saw items that are no job of this test: {unknown}"
    assert result.statuses()[207] == 0, "a batch was partly refused: the test's items are valid"
    return {
        "acknowledged": len(book.ids),
        "duplicate_events": len(result.duplicates()),
        "dead_letters": len(result.dead),
        "delivered_unacknowledged": unacknowledged,
    }
