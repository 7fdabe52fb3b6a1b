"""The job ledger: each job's payload, attempts, errors and state, kept in Redis until it ends.

The ledger, not the Celery message, is the source of truth. The message carries only the job id
and is a trigger: a worker must *claim* the job before sending it. So a redelivered, restored or
duplicated message is harmless: a job that has ended (delivered or dead-lettered) has no record
and is dropped; one that another live worker holds is dropped; and a crash between a 2xx and
the acknowledgement never sends a transactional email twice. A message that is lost (kombu pops
before it records, a worker dies holding it) is found again by the reaper from these indexes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from cio_worker import keys
from cio_worker.connection import reply_text
from cio_worker.ids import ulid_time_ms
from cio_worker.job import Job
from cio_worker.kinds import Family, Kind, queue_name
from cio_worker.queue import _ledger_scripts as scripts
from cio_worker.queue._bells import due_bell
from cio_worker.queue._envelope import task_message
from cio_worker.queue._receipts import Receipt
from cio_worker.queue._window import (
    CLAIM_RELEASE,
    LedgerRecord,
    record_calls,
    window_args,
    window_keys,
)
from cio_worker.queue._window import enqueue_call as enqueue_call  # _routing.py's single writes


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One failed attempt, as kept in the ledger and the dead-letter queue."""

    reason: str
    status: int | None
    body_excerpt: str | None
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "status": self.status,
            "body": self.body_excerpt,
            "at": self.at,
        }


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    job: Job
    attempts: int
    first_error: dict[str, Any] | None
    last_error: dict[str, Any] | None
    #: Set while a request for this job may be on the wire (see `mark_sending`).
    sending: bool = False
    #: When that request's attempt began, Unix seconds (None: unknown, an older mark).
    sending_since: float | None = None
    #: Unix seconds the job was last replayed, if ever (its retry budget starts there).
    requeued_at: float | None = None

    @property
    def enqueued_at_s(self) -> float:
        """When the job's retry budget (CIO_WORKER_RETRY_FOR_S) started: enqueue or replay."""
        return self.requeued_at or ulid_time_ms(self.job.id) / 1000


class JobLedger:
    """A job's life in Redis: enqueue, claim, renew, defer, complete, re-queue.

    Each transition is one Lua script (_ledger_scripts.py), so a worker dying between two Redis
    calls never leaves a job half-moved. The indexes are what the sweeper (_sweeper.py) sweeps:
    `keys.unclaimed` (pushed, not yet claimed), `keys.leases` (claimed by a live worker) and
    `keys.delayed` (waiting for a retry or a rate-limit slot) and `keys.parked` (waiting for its
    family's circuit to close). A job is in exactly one of them until it ends, so a job can
    always be found and nothing is lost.
    """

    def __init__(self, redis_client: redis.Redis) -> None:
        self.redis = redis_client
        register = redis_client.register_script
        self._enqueue = register(scripts.ENQUEUE)
        self._claim = register(scripts.CLAIM)
        self._heartbeat = register(scripts.HEARTBEAT)
        self._defer = register(scripts.DEFER)
        self._complete = register(scripts.COMPLETE)
        self._ripe = register(scripts.RIPE)
        self._strays = register(scripts.STRAYS)
        self._requeue = register(scripts.REQUEUE)
        self._release = register(scripts.RELEASE)

    def load(self, job_id: str) -> LedgerEntry | None:
        raw = self.redis.hgetall(keys.job(job_id))
        if not raw or b"job" not in raw:
            return None
        return LedgerEntry(
            job=Job.from_json(raw[b"job"]),
            attempts=int(raw.get(b"attempts", 0)),
            first_error=_json(raw.get(b"first_error")),
            last_error=_json(raw.get(b"last_error")),
            sending=b"sending" in raw,
            sending_since=_since(raw.get(b"sending")),
            requeued_at=float(raw[b"requeued_at"]) if b"requeued_at" in raw else None,
        )

    # -- producing -------------------------------------------------------------------------------
    def enqueue(
        self,
        job: Job,
        *,
        replace: bool = False,
        stats_field: str = "enqueued",
        pipe: redis.client.Pipeline | None = None,
    ) -> None:
        """Store `job` (attempts 0) and push its task message, in one script call."""
        self.enqueue_many([job], replace=replace, stats_field=stats_field, pipe=pipe)

    def enqueue_many(
        self,
        jobs: Sequence[Job],
        *,
        replace: bool = False,
        stats_field: str = "enqueued",
        pipe: redis.client.Pipeline | None = None,
    ) -> None:
        """Store `jobs` and push their task messages, in one script call per family and
        `ENQUEUE_SLICE` jobs (each family's in the order given)."""
        records = [(job.id, job.kind, job.record_json()) for job in jobs]
        self.enqueue_records(records, replace=replace, stats_field=stats_field, pipe=pipe)

    def enqueue_records(
        self,
        records: Sequence[LedgerRecord],
        *,
        replace: bool = False,
        stats_field: str = "enqueued",
        pipe: redis.client.Pipeline | None = None,
    ) -> None:
        """`enqueue_many` for jobs kept as (id, kind, record): the record is what
        `Job.record_json` gives for the job (the bulk producer encodes it from validation's
        JSON, with no `Job`)."""
        for script_keys, args in record_calls(records, replace=replace, stats_field=stats_field):
            self._enqueue(keys=script_keys, args=args, client=pipe)

    def requeue(self, job: Job, *, pipe: redis.client.Pipeline | None = None) -> None:
        """Store `job` afresh (attempts 0, errors forgotten) and queue it, keeping its id."""
        self.enqueue(job, replace=True, stats_field="requeued", pipe=pipe)

    # -- a worker's side -------------------------------------------------------------------------
    def claim(self, job_id: str, family: Family, owner: str, lease_s: float) -> Claim:
        """Take the job for `owner` until the lease ends (renewed by `heartbeat`)."""
        outcome, attempts = self._claim(
            keys=[
                keys.job(job_id),
                keys.leases(),
                *window_keys(family),
                keys.claimed_seq(family.value),
            ],
            args=[*window_args(family), job_id, owner, int(lease_s * 1000), CLAIM_RELEASE],
        )
        return Claim(reply_text(outcome), int(attempts))

    def release(self, family: Family) -> int:
        """Move waiting jobs of `family` into its queue while it is shorter than its window
        (_window.py); return how many."""
        return int(self._release(keys=window_keys(family), args=window_args(family)))

    def heartbeat(self, owner: str, job_ids: list[str], lease_s: float) -> int:
        """Renew `owner`'s leases on `job_ids`; return how many it still holds."""
        if not job_ids:
            return 0
        return int(
            self._heartbeat(
                keys=[keys.leases(), *(keys.job(job_id) for job_id in job_ids)],
                args=[owner, int(lease_s * 1000), *job_ids],
            )
        )

    def defer(self, job_id: str, delay_s: float, owner: str, *, keep_sending: bool = False) -> bool:
        """Park the job until `delay_s` from now (Redis time); the mover re-queues it then.

        `keep_sending`: keep the mark that a message may have been sent (worker/_reconcile.py asks
        Customer.io about it when the job comes back).
        """
        return bool(
            self._defer(
                keys=[keys.job(job_id), keys.leases(), keys.delayed(), due_bell()],
                args=[job_id, max(0, int(delay_s * 1000)), owner, "1" if keep_sending else ""],
            )
        )

    def park(self, job_id: str, bucket: str, owner: str) -> bool:
        """Park the job until `bucket`'s circuit closes (limiter/_circuit.py); the sweeper releases
        it.

        Parked jobs wait in their own sorted set, not in `keys.delayed`, so an outage of hours
        costs Redis nothing per job while it lasts; they are ordered by park time.
        """
        return bool(
            self._defer(
                keys=[keys.job(job_id), keys.leases(), keys.parked(bucket), due_bell()],
                args=[job_id, 0, owner, ""],
            )
        )

    def mark_sending(self, job_id: str) -> None:
        """Note that a request for the job is about to go out.

        A message (transactional send, broadcast trigger) has no dedup key at Customer.io. If
        the worker dies before it records the answer, the next claim finds this mark and knows
        the message may already have been sent: an ambiguous failure, handled by
        CIO_WORKER_AMBIGUOUS_MESSAGES like a timeout after the request was written. The mark
        holds the attempt's start (Unix ms): reconciliation looks for deliveries since then.
        """
        self.redis.hset(keys.job(job_id), "sending", str(int(time.time() * 1000)))

    def clear_sending(self, job_id: str) -> None:
        self.redis.hdel(keys.job(job_id), "sending")

    def record_failure(
        self, job_id: str, error: ErrorRecord, *, attempt: bool = True, keep_sending: bool = False
    ) -> int:
        """Record a failed try; count it as an attempt if `attempt`. Returns the attempts so far.

        A failure during an outage (worker/_fate.py) is recorded for the operator but spends
        nothing.
        `keep_sending`: the message may have gone out; leave the mark for reconciliation.
        """
        encoded = json.dumps(error.to_dict())
        pipe = self.redis.pipeline(transaction=True)
        if not keep_sending:
            pipe.hdel(keys.job(job_id), "sending")
        pipe.hsetnx(keys.job(job_id), "first_error", encoded)
        pipe.hset(keys.job(job_id), "last_error", encoded)
        pipe.hincrby(keys.job(job_id), "attempts", 1 if attempt else 0)
        return int(pipe.execute()[-1])

    def complete(self, job: Job, receipt: Receipt | None = None) -> None:
        """The job was accepted by Customer.io: forget it and count it, keeping its receipt."""
        script_keys = [
            keys.job(job.id),
            keys.leases(),
            keys.unclaimed(job.family.value),
            keys.delayed(),
            keys.stats(),
        ]
        args: list[str | float] = [job.id, f"{job.family.value}:delivered"]
        if receipt is not None:
            script_keys += [keys.receipts(), keys.receipt_index(), keys.receipt_owners()]
            args += [receipt.to_json(), receipt.owner_field(), receipt.at]
        self._complete(keys=script_keys, args=args)

    def count(self, family: Family, outcome: str, amount: int = 1) -> None:
        self.redis.hincrby(keys.stats(), f"{family.value}:{outcome}", amount)

    # -- the sweepers' side (_sweeper.py) ----------------------------------------------------------
    def due(self, limit: int = 500) -> list[tuple[str, str]]:
        """(job id, kind) of delayed jobs whose time has come."""
        return _pairs(self._ripe(keys=[keys.delayed()], args=[limit, keys.job("")]))

    def expired(self, limit: int = 500) -> list[tuple[str, str]]:
        """(job id, kind) of running jobs whose worker stopped renewing the lease."""
        return _pairs(self._ripe(keys=[keys.leases()], args=[limit, keys.job("")]))

    def strays(
        self, family: Family, grace_s: float, limit: int = 500
    ) -> list[tuple[str, str, int]]:
        """(job id, kind, seq) of jobs whose message left the queue but were never claimed."""
        raw = self._strays(
            keys=[keys.unclaimed(family.value), keys.claimed_seq(family.value), queue_name(family)],
            args=[int(grace_s * 1000), limit, keys.job("")],
        )
        items = [reply_text(item) for item in raw]
        return [(items[i], items[i + 1], int(float(items[i + 2]))) for i in range(0, len(items), 3)]

    def push_again(self, job_id: str, kind: str, reason: str, seq: int = 0) -> bool:
        """Re-push a due, lease-expired or stray job if it is still so; True if pushed."""
        if not kind:
            return False
        job_kind = Kind(kind)
        family = job_kind.family.value
        outcome, _attempts = self._requeue(
            keys=[
                keys.job(job_id),
                queue_name(job_kind.family),
                keys.unclaimed(family),
                keys.push_seq(family),
                keys.delayed(),
                keys.leases(),
            ],
            args=[job_id, task_message(job_id, job_kind), reason, seq],
        )
        return reply_text(outcome) == "pushed"


@dataclass(frozen=True, slots=True)
class Claim:
    """What `JobLedger.claim` found: see `_ledger_scripts.CLAIM` for the outcomes."""

    outcome: str
    attempts: int


def _pairs(raw: list[object]) -> list[tuple[str, str]]:
    items = [reply_text(item) for item in raw]
    return [(items[i], items[i + 1]) for i in range(0, len(items), 2)]


def stats(redis_client: redis.Redis) -> dict[str, int]:
    """All counters `<family>:<outcome>` (enqueued, delivered, retried, rate_limited, dead)."""
    raw: dict[bytes, bytes] = redis_client.hgetall(keys.stats())  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in raw.items()}


def _since(raw: bytes | str | None) -> float | None:
    """The `sending` mark's attempt start (ms -> s); None for an older mark of "1"."""
    if raw is None or raw in (b"1", "1"):
        return None
    try:
        return int(raw) / 1000
    except ValueError:
        return None


def _json(raw: bytes | str | None) -> dict[str, Any] | None:
    return json.loads(raw) if raw else None
