"""The sweeper: puts every job that is due, orphaned or lost back into its queue.

Every worker process runs one `Sweeper` thread; they share the work through Redis, so any number
of them is safe (each re-push is a script that re-checks the job's state, so a job is pushed once).

Parked jobs (limiter/_circuit.py) are released with the due ones: every parked job of a family once
its circuit closes, due at once, and one at a time as a probe while it is open.

Three sweeps close the gaps that stock Celery on Redis leaves open (kombu pops a message before
it records it as unacknowledged; a dead worker's messages wait out the visibility timeout;
countdowns wait in worker memory):

1. **Due** (within `DUE_INTERVAL_S` of their time): retries and rate-limit deferrals wait in
   `keys.delayed`, a sorted set of due times, not as Celery countdowns in a worker's memory. A
   delay therefore survives the death of the worker that scheduled it, never outlives a
   visibility timeout (it is not a message at all while it waits), and is never run twice.
2. **Expired leases** (every `SWEEP_INTERVAL_S`): a claimed job carries a lease its worker renews
   (_leases.py). A worker killed mid-job stops renewing; once the lease expires its job is pushed
   again, counting one attempt, so a job that kills every worker that takes it is dead-lettered
   when attempts run out instead of looping forever.
3. **Strays** (every `SWEEP_INTERVAL_S`): kombu pops a message before it records it as unacked,
   and a worker that dies holding a prefetched message leaves it unacked for the whole visibility
   timeout. Either way the job is in `keys.unclaimed` but its message is no longer in the queue.
   Each push takes a sequence number and queues are FIFO, so once any later job of the family has
   been claimed (or the queue is empty), an unclaimed job's message has left the queue: if it is
   still unclaimed `STRAY_GRACE_S` later, it was lost and is pushed again. A message that was only
   slow (not lost) makes a duplicate at worst, and the claim makes a duplicate harmless.

Each sweep also releases jobs waiting for room in a family's queue (_window.py) into a queue left
short of its window: claims do that as they go, so this is the safety net for a queue emptied
without claims.

A dead worker's jobs are back in their queue within LEASE_S + SWEEP_INTERVAL_S (25 s by default),
a lost message's within STRAY_GRACE_S + 2 x SWEEP_INTERVAL_S (30 s).

**Idle costs (almost) nothing** (issue 18). The sweeper looks at the due set 5 times a second only
while jobs are parked (their probes keep that cadence) or one falls due within that time.
Otherwise it sleeps until the earliest due job, at most until its next sweep, on the due set's
doorbell (_bells.py), which every writer of the due set rings, so a retry scheduled meanwhile, by
any process, cuts the sleep short. A sweep with no lease, no unclaimed and no waiting job is one
EXISTS. An idle sweeper spends about seven Redis commands every SWEEP_INTERVAL_S.
"""

from __future__ import annotations

import threading
import time

import redis

from cio_worker import keys, logs
from cio_worker.config import Settings
from cio_worker.kinds import Family
from cio_worker.limiter import BUCKETS, Circuit
from cio_worker.queue._bells import IDLE_WAIT_S, Doorbell, wait_for_work
from cio_worker.queue._ledger import JobLedger
from cio_worker.queue._receipts import ReceiptBook
from cio_worker.queue._routing import batch_api
from cio_worker.queue._shards import BatchQueue

#: How often due retries are moved to their queues: the resolution of every delay.
DUE_INTERVAL_S = 0.2
#: How often expired leases and stray messages are looked for (one sweeper in the fleet at a time).
SWEEP_INTERVAL_S = 5.0
#: How long a job may stay unclaimed after its message left the queue. A live worker claims a
#: message within milliseconds of taking it (prefetch is 1 per thread), so this only has to cover
#: a stalled process; a false alarm costs a duplicate message, which the claim drops.
STRAY_GRACE_S = 20.0

log = logs.get_logger(__name__)


class Sweeper:
    """Runs the three sweeps; `start()` runs them in a daemon thread until `stop()`."""

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        families: list[Family] | None = None,
        settings: Settings | None = None,
        stray_grace_s: float = STRAY_GRACE_S,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
        due_interval_s: float = DUE_INTERVAL_S,
        doorbell: Doorbell | None = None,
    ) -> None:
        self.redis = redis_client
        self.ledger = JobLedger(redis_client)
        self.circuit = Circuit(settings or Settings(), redis_client)
        self.receipts = ReceiptBook(
            redis_client, retention_days=(settings or Settings()).receipt_retention_days
        )
        self.batches = BatchQueue(redis_client, batch_api(settings or Settings()))
        #: Where the thread sleeps between looks (the due set's bell); without one it polls.
        self.doorbell = doorbell
        self.families = families or list(Family)
        self.stray_grace_s = stray_grace_s
        self.sweep_interval_s = sweep_interval_s
        self.due_interval_s = due_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the sweeps ------------------------------------------------------------------------------
    def move_due(self) -> int:
        """Push every delayed job whose time has come; return how many were pushed.

        Parked jobs whose circuit closed (or one to serve as an open circuit's probe) join the
        due jobs first.
        """
        self.circuit.release_parked()
        moved = 0
        while True:
            due = self.ledger.due()
            moved += sum(self.ledger.push_again(job_id, kind, "due") for job_id, kind in due)
            if len(due) < 500:
                return moved

    def reclaim_expired(self) -> int:
        """Push the jobs of workers that stopped renewing their leases."""
        pushed = 0
        for job_id, kind in self.ledger.expired():
            if self.ledger.push_again(job_id, kind, "lease"):
                pushed += 1
                log.warning("lease_expired_job_requeued", job_id=job_id, kind=kind)
        return pushed

    def recover_strays(self) -> int:
        """Push the jobs whose messages left their queue but were never claimed."""
        pushed = 0
        for family in self.families:
            for job_id, kind, seq in self.ledger.strays(family, self.stray_grace_s):
                if self.ledger.push_again(job_id, kind, "stray", seq):
                    pushed += 1
                    log.warning("lost_message_job_requeued", job_id=job_id, kind=kind)
        return pushed

    def release_waiting(self) -> int:
        """Top up each family's queue to its window from the jobs waiting for room (claims do
        it as they go; this covers a queue emptied without claims: _window.py)."""
        return sum(self.ledger.release(family) for family in self.families)

    def sweep(self) -> None:
        """One full sweep, if no other sweeper in the fleet did one just now."""
        lock_ms = max(1, int(self.sweep_interval_s * 1000 * 0.8))
        if self.redis.set(keys.reaper_lock(), "1", nx=True, px=lock_ms):
            running = [
                keys.leases(),
                *(keys.unclaimed(family.value) for family in self.families),
                *(keys.waiting(family.value) for family in self.families),
            ]
            if self.redis.exists(*running):  # no job claimed, pushed or waiting: nothing to do
                self.reclaim_expired()
                self.recover_strays()
                self.release_waiting()
            self.receipts.trim()  # sent messages' receipts past their retention
            self.batches.adopt_legacy()  # jobs queued before issue 18's layout, if any

    def due_in_s(self) -> float:
        """Seconds until the sweeper must move due jobs: 0 if one is due or any job is parked
        (its release waits on the circuit, looked at every due interval), IDLE_WAIT_S if
        nothing waits."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.time()
        pipe.zrange(keys.delayed(), 0, 0, withscores=True)
        pipe.exists(*(keys.parked(bucket) for bucket in BUCKETS))
        (seconds, micros), first, parked = pipe.execute()
        if parked:
            return 0.0
        if not first:
            return IDLE_WAIT_S
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return max(0.0, (float(first[0][1]) - now_ms) / 1000)

    # -- the thread ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="cio-sweeper", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self.doorbell is not None:
            self.doorbell.wake(1)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        next_sweep = 0.0
        while not self._stop.is_set():
            try:
                due_in = self.due_in_s()
                if due_in <= 0:
                    self.move_due()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.sweep_interval_s
                    self.sweep()
            except Exception as exc:  # Redis away: keep trying; nothing is lost meanwhile
                log.warning("sweep_failed", error=f"{type(exc).__name__}: {exc}")
                self._stop.wait(1.0)
                continue
            if due_in <= 0:
                self._stop.wait(self.due_interval_s)
            else:
                wait_s = min(due_in, max(0.001, next_sweep - time.monotonic()))
                wait_for_work(self.doorbell, wait_s, self._stop, short_s=self.due_interval_s)
