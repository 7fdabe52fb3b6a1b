"""Replica confirmation for enqueues: an acknowledged job survives the loss of the master.

Redis replicates asynchronously: the master answers a write before any replica has it, so a
master that dies at the wrong moment takes its last writes with it, and Sentinel promotes a
replica that never saw them. Where the master has replicas attached, an enqueue therefore sends
`WAIT 1 <replica_wait_ms>` on the same connection, right after its write (Redis counts the
acknowledgements of *that connection's* last write), and returns once one replica has the job.

Cost. Whether replicas are attached is learnt from `INFO replication` (replicas in state
`online`), asked at most every `REPLICA_CHECK_S` per client, so with none attached an enqueue
stays one round trip with no WAIT. With replicas, the write and the WAIT travel in one pipeline:
still one round trip, plus the time the replica takes to acknowledge. A WAIT that no replica
answers (the replica died; after a failover the new master often has none yet) makes the next
enqueue ask `INFO` again instead of waiting for the rest of the period.

**When no replica confirms within `replica_wait_ms`, the enqueue still succeeds.** The job *is*
stored on the master, and in its append-only file (docs/design.md rule 4): raising `EnqueueError`
("nothing was stored") would be a lie, and the caller's retry would store the job twice (a
transactional email sent twice). It is also what production queues on Redis do: `WAIT` bounds
how long a caller waits for the extra copy, not whether its write happened. So the enqueue
returns the job id, counts the job in `ReplicaWait.unconfirmed` and logs `enqueue_unreplicated`
(at most once per `WARN_EVERY_S`, with the number of jobs since the last line). That job is then
as safe as a single Redis with AOF: it survives a restart of the master, not its loss. Operators
who would rather refuse writes than take that risk set `min-replicas-to-write 1` on the master
(then Redis itself refuses the write and the enqueue raises `EnqueueError`); callers who do not
want to wait at all set `CIO_WORKER_REPLICA_WAIT_MS=0`.

WAIT does not make Redis strongly consistent (docs/failover.md): a failover may still promote a
replica that had not acknowledged, and writes acknowledged by the master alone may be lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import redis

from cio_worker import logs

#: Seconds one client trusts its last `INFO replication` answer. A replica attached in between
#: is waited for from the next check on.
REPLICA_CHECK_S = 5.0
#: Fewest seconds between two `enqueue_unreplicated` warnings from one client.
WARN_EVERY_S = 10.0

log = logs.get_logger(__name__)


def online_replicas(info: Mapping[str, Any]) -> int:
    """Replicas in sync with the master, from a parsed `INFO replication`.

    A replica still loading its first full copy (`state=wait_bgsave`, `send_bulk`) cannot
    acknowledge anything, so it does not count.
    """
    return sum(
        1
        for key, value in info.items()
        if key.startswith("slave")
        and key[len("slave") :].isdigit()
        and isinstance(value, Mapping)
        and value.get("state") == "online"
    )


class ReplicaWait:
    """One client's view of its master's replicas, and the jobs no replica confirmed.

    Thread-safe: the cache is one tuple, replaced whole; counters are under a lock.
    """

    def __init__(self, wait_ms: float, *, check_every_s: float = REPLICA_CHECK_S) -> None:
        #: `WAIT`'s timeout, milliseconds; 0 turns the whole mechanism off.
        self.wait_ms = int(wait_ms)
        self.check_every_s = check_every_s
        #: (replicas online, monotonic time of the answer); None: ask before the next write.
        self._known: tuple[int, float] | None = None
        self._lock = threading.Lock()
        #: Jobs stored on the master that no replica confirmed within `wait_ms`.
        self.unconfirmed = 0
        self._warned_at = 0.0
        self._unwarned = 0

    @property
    def enabled(self) -> bool:
        return self.wait_ms > 0

    def needs_check(self) -> bool:
        known = self._known
        return self.enabled and (known is None or time.monotonic() - known[1] >= self.check_every_s)

    def learn(self, info: Mapping[str, Any]) -> None:
        self._known = (online_replicas(info), time.monotonic())

    def should_wait(self) -> bool:
        """Whether the next write must be followed by WAIT (as of the last check)."""
        known = self._known
        return self.enabled and known is not None and known[0] > 0

    def checking(self, client: Any) -> Generator[Callable[[], Any], Any, bool]:
        """`should_wait`, asking the master first (`INFO replication`) if the last answer is too
        old. A step of a write (_routing.py): it yields that request, to send on `client`, sync
        or asyncio, and is run by `run_write` or `run_write_async`, or inside a bigger write."""
        if self.needs_check():
            try:
                self.learn((yield lambda: client.info("replication")))
            except redis.ResponseError:
                self.learn({})  # INFO refused (a restricted service): nothing to wait for
        return self.should_wait()

    def record(self, acked: object, jobs: int, last_job_id: str) -> None:
        """Take WAIT's answer for a write of `jobs` jobs, the last `last_job_id`: fewer than one
        replica means unconfirmed."""
        if isinstance(acked, int) and acked >= 1:
            return
        self._known = None  # the replica may be gone (failover): ask again before waiting
        with self._lock:
            self.unconfirmed += jobs
            self._unwarned += jobs
            now = time.monotonic()
            if now - self._warned_at < WARN_EVERY_S:
                return
            count, self._unwarned, self._warned_at = self._unwarned, 0, now
        log.warning(
            "enqueue_unreplicated",
            jobs=count,
            last_job=last_job_id,
            wait_ms=self.wait_ms,
            answer=acked if isinstance(acked, int) else f"{type(acked).__name__}: {acked}",
            meaning="stored on the master (and its AOF) but not yet on a replica",
        )


def queue_multi(pipe: Any) -> None:
    """Open a transaction inside a plain pipeline, so that commands after its EXEC (WAIT)
    still go in the same round trip; redis-py's transactional pipelines end at EXEC."""
    pipe.execute_command("MULTI")


def queue_exec(pipe: Any) -> None:
    pipe.execute_command("EXEC")


def queue_wait(pipe: Any, wait: ReplicaWait) -> None:
    """`WAIT 1 <ms>`: it must follow the write on the same connection, and outside MULTI
    (inside a transaction WAIT answers at once without waiting)."""
    pipe.execute_command("WAIT", 1, wait.wait_ms)


def write_error(replies: Sequence[Any]) -> Exception | None:
    """The first error among a pipeline's replies, looking inside EXEC's answer too."""
    for reply in replies:
        if isinstance(reply, Exception):
            return reply
        if isinstance(reply, list):
            nested = write_error(reply)
            if nested is not None:
                return nested
    return None
