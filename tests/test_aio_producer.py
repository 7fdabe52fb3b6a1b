"""cio_worker.aio's producer: the same enqueue_* as coroutines, writing the same records."""

from __future__ import annotations

import asyncio
import inspect

import pytest
import redis
import redis.asyncio

import cio_worker
from cio_worker import aio, keys
from cio_worker.config import Settings
from cio_worker.errors import EnqueueError, ValidationError
from cio_worker.queue._ledger import stats
from cio_worker.queue._shards import SHARDS, BatchQueue

NAMES = [name for name in cio_worker.__all__ if name.startswith("enqueue_")]


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


class TestAsyncProducer:
    def test_every_enqueue_function_has_an_async_twin_with_the_same_signature(self) -> None:
        for name in NAMES:
            method = getattr(aio.AsyncProducer, name)
            assert inspect.iscoroutinefunction(method), name
            assert inspect.iscoroutinefunction(getattr(aio, name)), name
            sync = inspect.signature(getattr(cio_worker.Producer, name))
            assert inspect.signature(method) == sync, name
            assert inspect.signature(getattr(aio, name)) == inspect.signature(
                getattr(cio_worker, name)
            ), name

    def test_writes_the_same_records_as_the_sync_producer(
        self, batch_settings: Settings, redis_client: redis.Redis
    ) -> None:
        """A batched identify lands in its shard; an email gets its Celery message."""

        async def main() -> tuple[str, str]:
            producer = aio.AsyncProducer(batch_settings)
            try:
                first = await producer.enqueue_identify("u-1", {"plan": "pro"})
                second = await producer.enqueue_send_email(
                    3, identifiers={"id": "u-1"}, to="a@example.com"
                )
                return first, second
            finally:
                await producer.aclose()

        identify, email = run(main())
        queue = BatchQueue(redis_client, "track")
        assert queue.depth() == 1
        entry = next(e for shard in range(SHARDS) if (e := queue.load(shard, identify)) is not None)
        assert entry.job.payload["traits"] == {"plan": "pro"}
        assert redis_client.llen("cio.transactional") == 1
        assert redis_client.hget(keys.job(email), "state") == b"queued"
        assert stats(redis_client) == {"track:enqueued": 1, "transactional:enqueued": 1}

    def test_validation_errors_are_raised_before_anything_is_written(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        async def main() -> None:
            producer = aio.AsyncProducer(settings)
            try:
                with pytest.raises(ValidationError, match="event"):
                    await producer.enqueue_track("u-1", "")
            finally:
                await producer.aclose()

        run(main())
        assert redis_client.dbsize() == 0

    def test_redis_down_is_an_enqueue_error(self, settings: Settings) -> None:
        async def main() -> None:
            producer = aio.AsyncProducer(
                settings.replace(redis_url="redis://127.0.0.1:1/0", redis_timeout_s=0.2)
            )
            try:
                with pytest.raises(EnqueueError, match="did not take track job"):
                    await producer.enqueue_track("u-1", "Viewed")
            finally:
                await producer.aclose()

        run(main())

    def test_module_functions_use_the_loops_default_producer(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        async def main() -> str:
            aio.configure(settings)
            return await aio.enqueue_suppress("u-9")

        job_id = run(main())
        assert redis_client.hget(keys.job(job_id), "kind") == b"suppress"
