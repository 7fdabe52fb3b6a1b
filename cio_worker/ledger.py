"""The job ledger: each job's payload, attempts and errors, kept in Redis until the job ends.

The Celery message carries only the job id. A job whose record is gone has already ended
(delivered or dead-lettered), so a redelivered message is recognised and dropped: that is how a
crash between a 2xx and the acknowledgement never sends a transactional email twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from cio_worker import keys
from cio_worker.envelope import task_message
from cio_worker.kinds import Family, queue_name
from cio_worker.payloads import Job


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


class JobLedger:
    """Reads and ends jobs. Every change that ends a job is one MULTI/EXEC transaction."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self.redis = redis_client

    def load(self, job_id: str) -> LedgerEntry | None:
        raw = self.redis.hgetall(keys.job(job_id))
        if not raw or b"job" not in raw:
            return None
        return LedgerEntry(
            job=Job.from_json(raw[b"job"]),
            attempts=int(raw.get(b"attempts", 0)),
            first_error=_json(raw.get(b"first_error")),
            last_error=_json(raw.get(b"last_error")),
        )

    def record_failure(self, job_id: str, error: ErrorRecord) -> int:
        """Count a failed attempt; return the attempts so far."""
        encoded = json.dumps(error.to_dict())
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(keys.job(job_id), "first_error", encoded)
        pipe.hset(keys.job(job_id), "last_error", encoded)
        pipe.hincrby(keys.job(job_id), "attempts", 1)
        return int(pipe.execute()[-1])

    def complete(self, job: Job) -> None:
        """The job was accepted by Customer.io: forget it and count it."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.job(job.id))
        pipe.hincrby(keys.stats(), f"{job.family.value}:delivered", 1)
        pipe.execute()

    def count(self, family: Family, outcome: str, amount: int = 1) -> None:
        self.redis.hincrby(keys.stats(), f"{family.value}:{outcome}", amount)

    def requeue(self, job: Job, *, pipe: redis.client.Pipeline | None = None) -> None:
        """Store `job` afresh (attempts 0) and queue its task message, keeping its id."""
        target = pipe or self.redis.pipeline(transaction=True)
        target.delete(keys.job(job.id))
        target.hset(
            keys.job(job.id),
            mapping={"job": job.to_json(), "attempts": 0, "requeued_at": time.time()},
        )
        target.lpush(queue_name(job.family), task_message(job.id, job.kind))
        if pipe is None:
            target.execute()


def stats(redis_client: redis.Redis) -> dict[str, int]:
    """All counters `<family>:<outcome>` (enqueued, delivered, retried, rate_limited, dead)."""
    raw: dict[bytes, bytes] = redis_client.hgetall(keys.stats())  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in raw.items()}


def _json(raw: bytes | str | None) -> dict[str, Any] | None:
    return json.loads(raw) if raw else None
