"""What a failed delivery means for its job: the one place that decides "exception -> fate".

Both delivery paths (_deliverer.py, one request per job; _batcher.py, many jobs per request) call
`FailureJudge.judge` and then carry out the `Fate` it returns; neither decides on its own.

The rules, in order:

1. **Rate limited** (the shared bucket is busy or paused, or Customer.io answered 429): try again
   after the hinted delay; never an attempt. A 429 pauses the bucket for the whole fleet
   (`Limiter.report_429`) and, being an answer, tells the circuit the API is up.
2. **Transient** (5xx, 408, timeout, connection refused, DNS failure): counted by the family's
   circuit (limiter/_circuit.py), then
   - a job older than `CIO_WORKER_RETRY_FOR_S` (since its enqueue or replay) is dead-lettered:
     nothing retries forever;
   - a transactional send or broadcast trigger whose request may have reached Customer.io (it
     has no dedup key) follows `CIO_WORKER_AMBIGUOUS_MESSAGES`: `reconcile` (the default) waits
     `CIO_WORKER_RECONCILE_SETTLE_S`, then asks Customer.io whether it was sent (_reconcile.py)
     before sending again; `dead` dead-letters it; `retry` sends it again like an event;
   - **family unhealthy** (the circuit is open, or this failure opened it): the job is *parked*
     until the circuit closes, and no attempt is spent: the outage is not the job's fault;
   - **family healthy** (others succeed): the failure is the job's own: one attempt, exponential
     backoff with full jitter, dead-lettered once `CIO_WORKER_MAX_ATTEMPTS` are spent. A batch of
     several jobs is the exception: its failure belongs to no single job, so it spends no
     attempt and its jobs are next sent one per request (`split`), where attempts are their own.
3. **Permanent** (400/401/403/404/413/422...): dead-letter at once. The API answered, so the
   circuit hears a success.
4. **Anything else** (a bug): dead-letter at once, so an operator sees it; the job is kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Literal

from cio_worker.backoff import compute_backoff_s
from cio_worker.config import Settings
from cio_worker.errors import (
    DeliveryError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    TransportError,
)
from cio_worker.limiter import Circuit, Gate, Health, Limiter

Failure = Literal["rate_limited", "transient", "permanent", "crash"]
Action = Literal["retry", "park", "reconcile", "dead"]


@dataclass(frozen=True, slots=True)
class Fate:
    """What to do with the job (or batch) whose delivery failed."""

    action: Action
    #: retry: seconds until the next try.
    delay_s: float = 0.0
    #: Count one attempt against the job (each job of the batch).
    attempt: bool = False
    #: Why: the dead letter's reason, or the error a retry records.
    reason: str = ""
    #: The last HTTP status, if any.
    status: int | None = None
    #: A batch: send its jobs one per request next time.
    split: bool = False
    #: A 429 (for the counters and the `rate_limited` log line).
    rate_limited: bool = False


def classify(exc: BaseException) -> Failure:
    """Which of the four kinds of failure `exc` is (errors.py's tree decides)."""
    if isinstance(exc, RateLimitedError):
        return "rate_limited"
    if isinstance(exc, RetryableError):
        return "transient"
    if isinstance(exc, PermanentError):
        return "permanent"
    return "crash"


def error_text(exc: BaseException) -> str:
    """`exc` as one line for logs and dead letters, led by its HTTP status when it has one."""
    status = exc.status_code if isinstance(exc, DeliveryError) else None
    text = str(exc)
    if status and not text.startswith(str(status)):
        text = f"{status}: {text}"
    return text or type(exc).__name__


def out_of_time(enqueued_at_s: float, settings: Settings, now_s: float | None = None) -> bool:
    """Has the job spent its whole retry budget (`CIO_WORKER_RETRY_FOR_S`)?"""
    now = time.time() if now_s is None else now_s
    return now - enqueued_at_s >= settings.retry_for_s


def out_of_time_reason(settings: Settings, exc: BaseException) -> str:
    """The dead letter's reason for a job whose retry budget is spent."""
    days = settings.retry_for_s / 86_400
    budget = f"{days:g} days" if days >= 1 else f"{settings.retry_for_s:g} s"
    return (
        f"not delivered within {budget} of its enqueue (CIO_WORKER_RETRY_FOR_S); last error: "
        f"{error_text(exc)}"
    )


def decide(
    failure: Failure,
    exc: BaseException,
    *,
    settings: Settings,
    attempts_before: int,
    enqueued_at_s: float,
    health: Health,
    message: bool = False,
    jobs: int = 1,
    now_s: float | None = None,
) -> Fate:
    """The fate of a failed delivery, given the family's health after it (a pure function).

    `attempts_before`: attempts the job (the batch's most tried job) had spent before this one;
    `message`: a transactional send or broadcast trigger (no dedup key at Customer.io); `jobs`:
    how many jobs the request carried.
    """
    status = exc.status_code if isinstance(exc, DeliveryError) else None
    text = error_text(exc)
    if failure == "rate_limited":
        assert isinstance(exc, RateLimitedError)
        delay = exc.retry_after_seconds if exc.retry_after_seconds is not None else 1.0
        return Fate("retry", delay, reason=text, status=status, rate_limited=status == 429)
    if failure == "permanent":
        return Fate("dead", attempt=True, reason=text, status=status)
    if failure == "crash":
        return Fate("dead", attempt=True, reason=f"delivery crashed: {text}", status=status)
    assert isinstance(exc, RetryableError)
    if out_of_time(enqueued_at_s, settings, now_s):
        return Fate("dead", reason=out_of_time_reason(settings, exc), status=status)
    ambiguous = isinstance(exc, TransportError) and exc.request_sent and message
    if ambiguous and settings.ambiguous_messages == "reconcile":
        return Fate(
            "reconcile",
            settings.reconcile_settle_s,
            attempt=health.healthy,
            reason=f"ambiguous: {text}; Customer.io will be asked whether it was sent",
            status=status,
        )
    if ambiguous and settings.ambiguous_messages == "dead":
        reason = (
            f"ambiguous: {text}; the request may have reached Customer.io and a message has no "
            "dedup key (CIO_WORKER_AMBIGUOUS_MESSAGES=dead)"
        )
        return Fate("dead", attempt=True, reason=reason, status=status)
    if not health.healthy:
        return Fate("park", reason=text, status=status)
    if jobs > 1:
        delay = _backoff(settings, attempts_before + 1, exc.retry_after_seconds)
        return Fate("retry", delay, reason=text, status=status, split=True)
    attempts = attempts_before + 1
    if attempts >= settings.max_attempts:
        return Fate(
            "dead", attempt=True, reason=f"gave up after {attempts} attempts: {text}", status=status
        )
    delay = _backoff(settings, attempts, exc.retry_after_seconds)
    return Fate("retry", delay, attempt=True, reason=text, status=status)


def _backoff(settings: Settings, attempt: int, retry_after_s: float | None) -> float:
    return compute_backoff_s(
        attempt,
        base_s=settings.backoff_base_s,
        max_s=settings.backoff_max_s,
        retry_after_s=retry_after_s,
    )


SettleAction = Literal["send", "wait", "ask", "delivered", "dead"]


@dataclass(frozen=True, slots=True)
class Settle:
    """What to do with a message claimed again while an earlier attempt may have reached
    Customer.io (a worker died mid-request, or the answer was never recorded)."""

    action: SettleAction
    #: wait: seconds until the job is claimed again (still marked as sending).
    delay_s: float = 0.0
    #: dead: the dead letter's reason.
    reason: str = ""


def settle_unfinished(settings: Settings, since_s: float, now_s: float | None = None) -> Settle:
    """`CIO_WORKER_AMBIGUOUS_MESSAGES` applied to a message whose last attempt never ended:
    `retry` sends it again, `dead` dead-letters it, `reconcile` asks Customer.io once its
    listings have had `CIO_WORKER_RECONCILE_SETTLE_S` to show the attempt."""
    policy = settings.ambiguous_messages
    if policy == "retry":
        return Settle("send")
    if policy == "dead":
        return Settle(
            "dead",
            reason=(
                "ambiguous: a worker died while the request was in flight (or could not record "
                "the answer before Redis came back), so it may have reached Customer.io, and a "
                "message has no dedup key (CIO_WORKER_AMBIGUOUS_MESSAGES=dead)"
            ),
        )
    now = time.time() if now_s is None else now_s
    wait = since_s + settings.reconcile_settle_s - now
    return Settle("wait", wait) if wait > 0 else Settle("ask")


def settle_finding(
    settings: Settings,
    verdict: Literal["found", "not_found", "unclear", "unavailable"],
    detail: str,
    remote_id: str | None,
    enqueued_at_s: float,
    now_s: float | None = None,
) -> Settle:
    """What Customer.io's answer to "was it sent?" means: found, it was delivered; not found,
    send it; the lookup failed, ask again later (never resend blindly) until the retry budget
    is spent; unclear (two unknown deliveries, a forbidden listing), dead-letter with the why."""
    if verdict == "found" and remote_id is not None:
        return Settle("delivered")
    if verdict == "not_found":
        return Settle("send")
    if verdict == "unavailable" and not out_of_time(enqueued_at_s, settings, now_s):
        return Settle("wait", max(1.0, min(settings.reconcile_settle_s, settings.backoff_max_s)))
    return Settle(
        "dead",
        reason=f"ambiguous: {detail}; not sent again (CIO_WORKER_AMBIGUOUS_MESSAGES=reconcile)",
    )


@dataclass
class FailureJudge:
    """Tells the fleet what a failure means (limiter, circuit), then decides the job's fate."""

    settings: Settings
    limiter: Limiter
    circuit: Circuit

    def judge(
        self,
        exc: BaseException,
        *,
        bucket: str,
        gate: Gate,
        attempts_before: int,
        enqueued_at_s: float,
        message: bool = False,
        jobs: int = 1,
    ) -> Fate:
        failure = classify(exc)
        health = Health(healthy=True)
        if failure == "transient":
            health = self.circuit.failure(bucket, gate.token)
        elif failure == "rate_limited" and isinstance(exc, RateLimitedError):
            if exc.status_code == 429:
                self.circuit.success(bucket)  # an answer: the API is up
            else:
                self.circuit.abandon(gate, bucket)  # nothing was sent
        elif failure == "permanent":
            self.circuit.success(bucket)
        else:
            self.circuit.abandon(gate, bucket)
        fate = decide(
            failure,
            exc,
            settings=self.settings,
            attempts_before=attempts_before,
            enqueued_at_s=enqueued_at_s,
            health=health,
            message=message,
            jobs=jobs,
        )
        if fate.rate_limited and isinstance(exc, RateLimitedError):
            # Every worker now waits for the bucket's pause: so does this job.
            until = self.limiter.report_429(bucket, exc.retry_after_seconds)
            fate = replace(fate, delay_s=max(fate.delay_s, until - time.time()))
        if fate.action == "retry" and not fate.attempt and not fate.split:
            # A wait that is no attempt (a limiter hint, a 429) is capped like any backoff.
            fate = replace(fate, delay_s=min(fate.delay_s, self.settings.backoff_max_s))
        return fate
