"""The asyncio producer: the same `enqueue_*` calls as `Producer`, with the Redis write awaited.

Validation, payloads and the write itself (queue/_routing.py) are the sync producer's; only the
client is redis.asyncio's, so an enqueue never blocks the event loop.
"""

from __future__ import annotations

import redis.asyncio

from cio_worker import connection
from cio_worker.config import Settings
from cio_worker.produce._calls import EnqueueCalls
from cio_worker.produce._jobs import JobDraft, new_job
from cio_worker.queue import JobWriter, run_write_async


def create_async_redis(settings: Settings) -> redis.asyncio.Redis:
    """An asyncio client with the same bounded timeouts as the sync one (connection.py); with a
    `sentinel://` URL it follows the master through a failover."""
    return connection.create_async_redis(settings.redis_url, timeout_s=settings.redis_timeout_s)


class AsyncProducer(EnqueueCalls):
    """`Producer` for asyncio: the same `enqueue_*` methods, awaitable. One per event loop."""

    def __init__(
        self, settings: Settings | None = None, *, redis_client: redis.asyncio.Redis | None = None
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.redis = redis_client or create_async_redis(self.settings)
        self._job_writer = JobWriter(
            self.settings,
            self.redis,
            connect=connection.create_async_redis,
            waiting_client=redis_client,
        )
        #: Whether to WAIT for a replica after each write, and the jobs none confirmed.
        self.replicas = self._job_writer.replicas

    async def _store(self, draft: JobDraft) -> str:
        job = new_job(draft)
        await run_write_async(self._job_writer.store(job))
        return job.id

    async def aclose(self) -> None:
        waiting = self._job_writer.waiting_client
        if waiting is not None and waiting is not self.redis:
            await connection.close_async_redis(waiting)
        await connection.close_async_redis(self.redis)
