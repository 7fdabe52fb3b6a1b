"""Dead letters of batched delivery: a job leaves its shard and enters the dead-letter queue in
one transaction, so it is never in both or in neither (worker/_batcher.py decides when)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from cio_worker import logs
from cio_worker.config import Settings
from cio_worker.errors import DeliveryError
from cio_worker.ops import record_delivery
from cio_worker.queue import BatchItem, BatchQueue, DeadLetterStore, ErrorRecord, TakenBatch
from cio_worker.worker._fate import out_of_time, out_of_time_reason

log = logs.get_logger(__name__)


@dataclass
class BatchLetters:
    settings: Settings
    redis: redis.Redis
    queue: BatchQueue
    dead_letters: DeadLetterStore

    def exhausted(self, shard: int, job_id: str, attempts: int) -> None:
        """Dead-letter a job that spent its attempts, naming its last error."""
        entry = self.queue.load(shard, job_id)
        last = (entry.last_error or {}).get("reason", "unknown") if entry else "unknown"
        reason = f"gave up after {attempts} attempts: {last}"
        self.dead_letter(shard, job_id, attempts, reason, None)

    def out_of_time(
        self, batch: TakenBatch, sendable: list[BatchItem], exc: DeliveryError
    ) -> list[BatchItem]:
        """Dead-letter the jobs whose retry budget is spent; return the others."""
        since = self.queue.enqueued_at_s(batch.shard, [item.job_id for item in sendable])
        keep = []
        for item, started in zip(sendable, since, strict=True):
            if out_of_time(started, self.settings):
                reason = out_of_time_reason(self.settings, exc)
                self.dead_letter(batch.shard, item.job_id, item.attempts, reason, exc.status_code)
            else:
                keep.append(item)
        return keep

    def dead_letter(
        self, shard: int, job_id: str, attempts: int, reason: str, status: int | None
    ) -> None:
        """Move one job to the dead-letter queue and out of its shard, in one transaction."""
        entry = self.queue.load(shard, job_id)
        if entry is None:
            return
        error = ErrorRecord(reason=reason, status=status, body_excerpt=None, at=time.time())
        pipe = self.redis.pipeline(transaction=True)
        self.dead_letters.add(entry.job, attempts, error, entry.first_error, pipe=pipe)
        self.queue.forget(shard, job_id, pipe=pipe)
        pipe.execute()
        self.dead_letters.trim(error.at)
        record_delivery(self.redis, family="track", kind=entry.job.kind.value, outcome="dead",
                        latency_s=None, limiter_wait_s=None)  # fmt: skip
        log.error("dead_lettered", job_id=job_id, kind=entry.job.kind.value, family="track",
                  status=status, reason=reason, attempt=attempts)  # fmt: skip
