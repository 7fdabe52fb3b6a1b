"""Deliver one job: ledger -> limiter -> client -> outcome. Plain code; tasks.py only wraps it.

The outcome decides the job's fate and depends only on the error class (errors.py):
- 2xx: the ledger forgets the job *before* the Celery message is acknowledged, so a redelivery
  after a crash finds no record and sends nothing (no second email).
- RateLimitedError (bucket busy, limiter down, or 429): retry after the hinted delay; the job's
  attempts are untouched, and a 429 pauses the bucket for every worker.
- other RetryableError: count an attempt; back off with jitter, or dead-letter once attempts run
  out. A transactional send or broadcast whose request may have reached Customer.io (a timeout
  after writing) is dead-lettered when CIO_WORKER_AMBIGUOUS_MESSAGES=dead: it has no dedup key.
- PermanentError (400/401/403/404/413/422...), or any unexpected exception: dead-letter at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import structlog

from cio_worker.backoff import compute_backoff_s
from cio_worker.client import CustomerIoClient
from cio_worker.config import Settings
from cio_worker.deadletter import DeadLetterStore
from cio_worker.errors import (
    DeliveryError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    TransportError,
)
from cio_worker.kinds import Family
from cio_worker.ledger import ErrorRecord, JobLedger
from cio_worker.limiter import Limiter
from cio_worker.operations import build_operation

log = structlog.get_logger("cio_worker.delivery")

State = Literal["delivered", "retry", "dead", "gone"]


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

    def run(self, job_id: str) -> Outcome:
        entry = self.ledger.load(job_id)
        if entry is None:
            # Already delivered or dead-lettered: this message is a redelivery. Sending again
            # could duplicate a message that has no dedup key.
            log.info("job_already_finished", job_id=job_id)
            return Outcome("gone")
        job = entry.job
        op = build_operation(job, self.settings)
        started = time.monotonic()
        fields: dict[str, object] = {
            "job_id": job.id,
            "kind": job.kind.value,
            "family": job.family.value,
            "attempt": entry.attempts + 1,
        }
        try:
            waited = self.limiter.acquire(op.bucket)
            result = self.client.send(op, job_id=job.id)
        except RateLimitedError as exc:
            if exc.status_code == 429:
                self.limiter.pause(op.bucket, exc.retry_after_seconds)
                self.ledger.count(job.family, "rate_limited")
                log.warning(
                    "rate_limited", status=429, retry_after_s=exc.retry_after_seconds, **fields
                )
            delay = exc.retry_after_seconds if exc.retry_after_seconds is not None else 1.0
            return Outcome("retry", min(delay, self.settings.backoff_max_s), exc.status_code)
        except RetryableError as exc:
            return self._retry_or_dead(entry.attempts, exc, fields)
        except PermanentError as exc:
            return self._dead(entry.attempts + 1, exc, fields, entry.first_error)
        except Exception as exc:  # a bug must not lose the job: keep it for an operator
            log.exception("delivery_crashed", **fields)
            return self._dead(entry.attempts + 1, exc, fields, entry.first_error)
        self.ledger.complete(job)
        log.info(
            "delivered",
            status=result.status_code,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            limiter_wait_ms=round(waited * 1000, 1),
            **fields,
        )
        return Outcome("delivered", status=result.status_code)

    def _retry_or_dead(
        self, attempts_before: int, exc: RetryableError, fields: dict[str, object]
    ) -> Outcome:
        job_id = str(fields["job_id"])
        error = _record(exc)
        attempts = self.ledger.record_failure(job_id, error)
        family = Family(str(fields["family"]))
        ambiguous = (
            isinstance(exc, TransportError)
            and exc.request_sent
            and family in (Family.TRANSACTIONAL, Family.BROADCAST)
        )
        if ambiguous and self.settings.ambiguous_messages == "dead":
            reason = (
                f"ambiguous: {error.reason}; the request may have reached Customer.io and a "
                "message has no dedup key (CIO_WORKER_AMBIGUOUS_MESSAGES=dead)"
            )
            return self._dead(attempts, exc, fields, None, reason=reason)
        if attempts >= self.settings.max_attempts:
            reason = f"gave up after {attempts} attempts: {error.reason}"
            return self._dead(attempts, exc, fields, None, reason=reason)
        delay = compute_backoff_s(
            attempts,
            base_s=self.settings.backoff_base_s,
            max_s=self.settings.backoff_max_s,
            retry_after_s=exc.retry_after_seconds,
        )
        self.ledger.count(family, "retried")
        log.warning(
            "retry_scheduled",
            status=exc.status_code,
            error=error.reason,
            delay_s=round(delay, 3),
            **fields,
        )
        return Outcome("retry", delay, exc.status_code)

    def _dead(
        self,
        attempts: int,
        exc: Exception,
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
        log.error(
            "dead_lettered",
            status=error.status,
            reason=error.reason,
            **{**fields, "attempt": attempts},
        )
        return Outcome("dead", status=error.status)


def _record(exc: Exception, reason: str | None = None) -> ErrorRecord:
    status = exc.status_code if isinstance(exc, DeliveryError) else None
    excerpt = exc.body_excerpt if isinstance(exc, DeliveryError) else None
    text = reason or (
        f"{status}: {exc}" if status and not str(exc).startswith(str(status)) else str(exc)
    )
    return ErrorRecord(
        reason=text or type(exc).__name__, status=status, body_excerpt=excerpt, at=time.time()
    )
