"""Where a job goes: a batch shard (batch_queue.py) or a Celery queue (ledger.py).

One decision shared by the producer and by dead-letter replay, so a replayed job travels the way
a new one would, keeping its place in its person's order.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from cio_worker.config import Settings
from cio_worker.customerio import BATCHABLE, batch_item_json
from cio_worker.job import Job
from cio_worker.queue._ledger import JobLedger
from cio_worker.queue._shards import BatchQueue


def batch_api(settings: Settings) -> str:
    """The API batched jobs go to: `track` (v2 batch) or `pipelines` (/v1/batch)."""
    return "pipelines" if settings.data_api == "pipelines" else "track"


def is_batched(job: Job, settings: Settings) -> bool:
    return settings.batch and job.kind in BATCHABLE


class Router:
    """Stores jobs where the workers will look for them."""

    def __init__(self, settings: Settings, redis_client: redis.Redis) -> None:
        self.settings = settings
        self.ledger = JobLedger(redis_client)
        self.batches = BatchQueue(redis_client, batch_api(settings))

    def store(
        self,
        jobs: Sequence[Job],
        *,
        replace: bool = False,
        pipe: redis.client.Pipeline | None = None,
    ) -> None:
        """Store `jobs`; with `pipe`, only queue the commands (the caller executes)."""
        batched = [
            (job, batch_item_json(job, self.batches.api))
            for job in jobs
            if is_batched(job, self.settings)
        ]
        if batched:
            self.batches.enqueue(batched, replace=replace, pipe=pipe)
        for job in jobs:
            if not is_batched(job, self.settings):
                if replace:
                    self.ledger.requeue(job, pipe=pipe)
                else:
                    self.ledger.enqueue(job, pipe=pipe)
