"""Deliver one job: ledger -> circuit -> limiter -> client -> outcome; _tasks.py only wraps it.

- 2xx: the ledger forgets the job *before* the Celery message is acknowledged, so a redelivery
  after a crash finds no record and sends nothing (no second email).
- The family's circuit is open (limiter/_circuit.py): the job is parked until it closes, unsent,
  with no attempt spent; unless this caller is the circuit's one probe.
- Any failure: _fate.py decides (rate limited, transient, permanent, a bug) and this module
  carries the decision out: retry after a delay (with or without an attempt), park, or
  dead-letter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar, cast

import redis

from cio_worker import logs
from cio_worker.config import Settings
from cio_worker.customerio import CustomerIoClient, build_operation
from cio_worker.errors import DeliveryError
from cio_worker.job import Job
from cio_worker.kinds import Family, Kind
from cio_worker.limiter import Circuit, Limiter
from cio_worker.ops import enqueue_latency_s, record_delivery
from cio_worker.queue import (
    DeadLetterStore,
    ErrorRecord,
    JobLedger,
    LeaseKeeper,
    LedgerEntry,
    Receipt,
    remote_id_of,
)
from cio_worker.worker._fate import (
    FailureJudge,
    Fate,
    error_text,
    settle_finding,
    settle_unfinished,
)
from cio_worker.worker._reconcile import Reconciler

log = logs.get_logger(__name__)

State = Literal["delivered", "retry", "parked", "dead", "gone", "busy", "delayed"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to a job; `delay_s` is set when `state` is `retry`."""

    state: State
    delay_s: float = 0.0
    status: int | None = None


@dataclass
class Deliverer:
    """Everything one worker process needs to deliver jobs, built once per process."""

    settings: Settings
    ledger: JobLedger
    dead_letters: DeadLetterStore
    limiter: Limiter
    client: CustomerIoClient
    leases: LeaseKeeper
    circuit: Circuit | None = None
    reconciler: Reconciler | None = None

    def __post_init__(self) -> None:
        if self.circuit is None:
            self.circuit = Circuit(self.settings, self.ledger.redis)
        if self.reconciler is None:
            self.reconciler = Reconciler(self.settings, self.ledger.redis, self.client)
        self.judge = FailureJudge(self.settings, self.limiter, self.circuit)

    def run(self, job_id: str, kind: Kind) -> Outcome:
        """Claim the job, deliver it, and leave it delivered, deferred or dead-lettered."""
        if not self.leases.hold(job_id):
            # Another thread of this process delivers it now: this message is a duplicate.
            log.info("job_not_claimed", job_id=job_id, kind=kind.value, outcome="busy")
            return Outcome("busy")
        try:
            claim = self.ledger.claim(job_id, kind.family, self.leases.owner, self.leases.lease_s)
            if claim.outcome != "ok":
                # gone: already delivered or dead-lettered (a redelivery: sending again could
                # duplicate a message with no dedup key); busy/delayed: a duplicate message.
                log.info("job_not_claimed", job_id=job_id, kind=kind.value, outcome=claim.outcome)
                return Outcome(cast(State, claim.outcome))
            return self._deliver_claimed(job_id)
        finally:
            self.leases.release(job_id)

    def _deliver_claimed(self, job_id: str) -> Outcome:
        entry = self.ledger.load(job_id)
        if entry is None:
            return Outcome("gone")
        job = entry.job
        fields: dict[str, object] = {
            "job_id": job.id,
            "kind": job.kind.value,
            "family": job.family.value,
            "attempt": entry.attempts + 1,
        }
        message = job.family in (Family.TRANSACTIONAL, Family.BROADCAST)
        if message and entry.sending:
            # An earlier attempt may have reached Customer.io: settle that first (it may end the
            # job as delivered, whatever its attempts).
            outcome = self._after_ambiguous(entry, fields)
            if outcome is not None:
                return outcome
        if entry.attempts >= self.settings.max_attempts:
            # Attempts ran out without a recorded failure: workers died holding it (a poison job).
            last = (entry.last_error or {}).get("reason", "unknown")
            reason = f"gave up after {entry.attempts} attempts: {last}"
            return self._dead(entry.attempts, RuntimeError(reason), fields, entry.first_error)
        op = build_operation(job, self.settings)
        assert self.circuit is not None
        gate = self.circuit.admit(op.bucket)
        if not gate.may_send:
            self.ledger.park(job.id, op.bucket, self.leases.owner)
            log.info("parked", bucket=op.bucket, probe_in_s=round(gate.wait_s, 3), **fields)
            return Outcome("parked")
        started = time.monotonic()
        try:
            waited = self.limiter.acquire(op.bucket)
            if message:
                self.ledger.mark_sending(job.id)
            result = self.client.send(op, job_id=job.id)
        except redis.RedisError:
            self.circuit.abandon(gate, op.bucket)
            raise  # _tasks.py puts the message back; the ledger still holds the job
        except Exception as exc:
            if not isinstance(exc, DeliveryError):  # a bug must not lose the job
                log.exception("delivery_crashed", **fields)
            fate = self.judge.judge(
                exc,
                bucket=op.bucket,
                gate=gate,
                attempts_before=entry.attempts,
                enqueued_at_s=entry.enqueued_at_s,
                message=message,
            )
            return self._carry_out(entry, op.bucket, fate, exc, fields)
        self.circuit.success(op.bucket)
        remote_id = remote_id_of(job.family.value, result.body) if message else None
        receipt = None if remote_id is None else self._receipt(job, remote_id, "send")
        complete_despite_outage(lambda: self.ledger.complete(job, receipt), job_id=job.id)
        self._measure(job.family, job.kind, "delivered", waited, enqueue_latency_s(job.id))
        log.info(
            "delivered",
            status=result.status_code,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            limiter_wait_ms=round(waited * 1000, 1),
            **({"remote_id": remote_id} if remote_id else {}),
            **fields,
        )
        return Outcome("delivered", status=result.status_code)

    @staticmethod
    def _receipt(job: Job, remote_id: str, via: str) -> Receipt:
        return Receipt(job.id, job.kind.value, job.family.value, remote_id, time.time(), via)

    def _carry_out(
        self,
        entry: LedgerEntry,
        bucket: str,
        fate: Fate,
        exc: BaseException,
        fields: dict[str, object],
    ) -> Outcome:
        """Leave the job as `fate` says: deferred, parked or dead-lettered."""
        job = entry.job
        if fate.action == "dead":
            attempts = entry.attempts + 1 if fate.attempt else entry.attempts
            return self._dead(attempts, exc, fields, entry.first_error, reason=fate.reason)
        if fate.rate_limited:
            self._measure(job.family, job.kind, "rate_limited")
            self.ledger.count(job.family, "rate_limited")
            log.warning("rate_limited", status=429, retry_after_s=getattr(
                exc, "retry_after_seconds", None), **fields)  # fmt: skip
        if fate.action == "retry" and not fate.attempt:
            # Not an attempt: the job waits in Redis (not in this worker) for its slot.
            return self._defer(job.id, fate.delay_s, fate.status)
        error = _record(exc, fate.reason)
        if fate.action == "reconcile":
            # The message may have been sent: keep the mark, ask Customer.io after the settle
            # delay (the next claim does, in _after_ambiguous).
            self.ledger.record_failure(job.id, error, attempt=fate.attempt, keep_sending=True)
            self.ledger.defer(job.id, fate.delay_s, self.leases.owner, keep_sending=True)
            log.warning("reconcile_scheduled", status=fate.status, error=fate.reason,
                        in_s=round(fate.delay_s, 3), **fields)  # fmt: skip
            return Outcome("retry", fate.delay_s, fate.status)
        if fate.action == "park":
            self.ledger.record_failure(job.id, error, attempt=False)
            self.ledger.park(job.id, bucket, self.leases.owner)
            self.ledger.count(job.family, "parked")
            log.warning("parked", bucket=bucket, status=fate.status, error=fate.reason, **fields)
            return Outcome("parked", status=fate.status)
        self.ledger.record_failure(job.id, error)
        self.ledger.count(job.family, "retried")
        self._measure(job.family, job.kind, "retry")
        log.warning(
            "retry_scheduled",
            status=fate.status,
            error=fate.reason,
            delay_s=round(fate.delay_s, 3),
            **fields,
        )
        return self._defer(job.id, fate.delay_s, fate.status)

    def _after_ambiguous(self, entry: LedgerEntry, fields: dict[str, object]) -> Outcome | None:
        """An earlier attempt of this message may have reached Customer.io (a timeout after
        writing, a dropped answer, a worker that died mid-request): apply the policy.

        Returns None when the job should be sent (again) now.
        """
        job = entry.job
        since = entry.sending_since or entry.enqueued_at_s
        settle = settle_unfinished(self.settings, since)
        if settle.action == "ask":
            assert self.reconciler is not None
            finding = self.reconciler.check(job, since)
            log.info("reconciled", verdict=finding.verdict, detail=finding.detail,
                     **({"remote_id": finding.remote_id} if finding.remote_id else {}),
                     **fields)  # fmt: skip
            settle = settle_finding(
                self.settings,
                finding.verdict,
                finding.detail,
                finding.remote_id,
                entry.enqueued_at_s,
            )
            if settle.action == "delivered" and finding.remote_id is not None:
                receipt = self._receipt(job, finding.remote_id, "reconciled")
                complete_despite_outage(lambda: self.ledger.complete(job, receipt), job_id=job.id)
                self._measure(job.family, job.kind, "delivered", None, enqueue_latency_s(job.id))
                return Outcome("delivered")
        if settle.action == "send":
            self.ledger.clear_sending(job.id)
            return None
        if settle.action == "wait":  # Customer.io's listings may not show it yet; never resend
            self.ledger.defer(job.id, settle.delay_s, self.leases.owner, keep_sending=True)
            return Outcome("retry", settle.delay_s)
        return self._dead(entry.attempts, RuntimeError(settle.reason), fields, entry.first_error)

    def _measure(
        self,
        family: Family,
        kind: Kind,
        outcome: str,
        waited_s: float | None = None,
        latency_s: float | None = None,
    ) -> None:
        """Count the outcome for the fleet-wide metrics (never raises: see ops/_metrics.py)."""
        record_delivery(
            self.ledger.redis,
            family=family.value,
            kind=kind.value,
            outcome=outcome,
            latency_s=latency_s,
            limiter_wait_s=waited_s,
        )

    def _defer(self, job_id: str, delay_s: float, status: int | None) -> Outcome:
        """Park the job in Redis until `delay_s` from now (it survives this worker's death)."""
        self.ledger.defer(job_id, delay_s, self.leases.owner)
        return Outcome("retry", delay_s, status)

    def _dead(
        self,
        attempts: int,
        exc: BaseException,
        fields: dict[str, object],
        first_error: dict[str, object] | None,
        *,
        reason: str | None = None,
    ) -> Outcome:
        job_id = str(fields["job_id"])
        entry = self.ledger.load(job_id)
        if entry is None:
            return Outcome("gone")
        error = _record(exc, reason)
        self.dead_letters.add(entry.job, attempts, error, entry.first_error or first_error)
        self._measure(entry.job.family, entry.job.kind, "dead")
        log.error(
            "dead_lettered",
            status=error.status,
            reason=error.reason,
            **{**fields, "attempt": attempts},
        )
        return Outcome("dead", status=error.status)


#: After a 2xx, how long a worker keeps trying to record it while Redis is away. Giving up would
#: leave the job to be found again and, for a message, dead-lettered as ambiguous (or resent).
#: The job's lease is renewed all the while, once Redis answers again.
COMPLETE_PATIENCE_S = 60.0
_T = TypeVar("_T")


def complete_despite_outage(
    record: Callable[[], _T], *, job_id: str, sleep: Callable[[float], None] = time.sleep
) -> _T:
    """Run `record` (the write that ends an accepted job), waiting out a Redis outage."""
    deadline = time.monotonic() + COMPLETE_PATIENCE_S
    delay = 0.1
    while True:
        try:
            return record()
        except redis.RedisError as exc:
            if time.monotonic() + delay >= deadline:
                raise
            log.warning(
                "delivered_but_not_recorded_yet",
                job_id=job_id,
                error=f"{type(exc).__name__}: {exc}",
                retry_in_s=delay,
            )
            sleep(delay)
            delay = min(delay * 2, 2.0)


def _record(exc: BaseException, reason: str | None = None) -> ErrorRecord:
    status = exc.status_code if isinstance(exc, DeliveryError) else None
    excerpt = exc.body_excerpt if isinstance(exc, DeliveryError) else None
    return ErrorRecord(
        reason=reason or error_text(exc), status=status, body_excerpt=excerpt, at=time.time()
    )
