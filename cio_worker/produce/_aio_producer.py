"""TEMPORARY: the async producer section cut out of aio.py, to be merged into its sync twin."""

from __future__ import annotations

import asyncio
import inspect
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec

import redis
import redis.asyncio
import structlog
from redis.exceptions import NoScriptError

from cio_worker import connection
from cio_worker.config import Settings

# client.py has no async client yet; until it does, this module maps answers with its function.
from cio_worker.customerio import (
    batch_item_json,
)
from cio_worker.errors import (
    EnqueueError,
)
from cio_worker.ids import new_ulid
from cio_worker.job import Job
from cio_worker.kinds import Kind
from cio_worker.produce import Producer
from cio_worker.queue import (
    ReplicaWait,
    batch_api,
    is_batched,
    queue_enqueue,
    queue_job_write,
    queue_wait,
    write_error,
)
from cio_worker.queue import _ledger_scripts as ledger_scripts
from cio_worker.queue import enqueue_call as ledger_enqueue_call

log = structlog.get_logger("cio_worker.aio")

# -- async enqueue_* -----------------------------------------------------------------------------
# The same validation, payloads and Redis scripts as cio_worker.produce._producer; only the write is
# awaited, on a redis.asyncio client, so an enqueue never blocks the event loop.

_P = ParamSpec("_P")


class _Builder(Producer):
    """Validates and builds a job exactly as `Producer` does, without touching Redis."""

    def __init__(self, settings: Settings) -> None:  # no Redis client: nothing is written here
        self.settings = settings
        self.job: Job | None = None

    def _store(self, kind: Kind, payload: dict[str, Any]) -> str:
        self.job = Job(id=new_ulid(), kind=kind, payload=payload, created_at=time.time())
        return self.job.id


def create_async_redis(settings: Settings) -> redis.asyncio.Redis:
    """An asyncio client with the same bounded timeouts as the sync one (connection.py); with a
    `sentinel://` URL it follows the master through a failover."""
    return connection.create_async_redis(settings.redis_url, timeout_s=settings.redis_timeout_s)


def _awaitable(
    method: Callable[Concatenate[Producer, _P], str],
) -> Callable[Concatenate[AsyncProducer, _P], Coroutine[Any, Any, str]]:
    """`Producer.enqueue_x` as a coroutine method: validate now, then await the write."""
    name = method.__name__

    async def call(self: AsyncProducer, /, *args: _P.args, **kwargs: _P.kwargs) -> str:
        builder = _Builder(self.settings)
        job_id = getattr(builder, name)(*args, **kwargs)
        assert builder.job is not None
        await self._store(builder.job)
        return str(job_id)

    call.__name__ = name
    call.__qualname__ = f"AsyncProducer.{name}"
    call.__doc__ = method.__doc__
    call.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    return call


class AsyncProducer:
    """`Producer` for asyncio: the same `enqueue_*` methods, awaitable. One per event loop."""

    def __init__(
        self, settings: Settings | None = None, *, redis_client: redis.asyncio.Redis | None = None
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.redis = redis_client or create_async_redis(self.settings)
        self._batch_api = batch_api(self.settings)
        self._ledger_script = self.redis.register_script(ledger_scripts.ENQUEUE)
        #: Whether to WAIT for a replica after each write, and the jobs none confirmed.
        self.replicas = ReplicaWait(self.settings.replica_wait_ms)
        # As in Producer: writes followed by WAIT use a client whose reads may last that long.
        self._waiting_redis: redis.asyncio.Redis | None = redis_client

    async def _store(self, job: Job) -> None:
        try:
            if await self.replicas.check_async(self.redis):
                await self._store_replicated(job)
            elif is_batched(job, self.settings):
                item = batch_item_json(job, self._batch_api)
                pipe = self.redis.pipeline(transaction=True)
                queue_enqueue(pipe, self._batch_api, [(job, item)])
                await pipe.execute()
            else:
                script_keys, args = ledger_enqueue_call(job)
                await self._ledger_script(keys=script_keys, args=args)
        except redis.RedisError as exc:
            raise EnqueueError(
                f"Redis did not take {job.kind.value} job {job.id}: {exc.__class__.__name__}: {exc}"
            ) from exc

    async def _store_replicated(self, job: Job) -> None:
        """The write and `WAIT 1 <ms>` in one pipeline, as `Producer._store_replicated`."""
        client = self._waiting_client()
        for first_try in (True, False):
            pipe = client.pipeline(transaction=False)
            queue_job_write(pipe, job, self.settings, self._ledger_script.sha)
            queue_wait(pipe, self.replicas)
            try:
                replies = await pipe.execute(raise_on_error=False)
            except redis.TimeoutError as exc:
                raise EnqueueError(
                    f"Redis did not answer in time for {job.kind.value} job {job.id}: it may "
                    f"or may not be stored: {exc}"
                ) from exc
            error = write_error(replies[:-1])
            if isinstance(error, NoScriptError) and first_try:
                await client.script_load(ledger_scripts.ENQUEUE)  # new master: not run, resend
                continue
            if error is not None:
                raise error
            self.replicas.record(replies[-1], [job])
            return

    def _waiting_client(self) -> redis.asyncio.Redis:
        if self._waiting_redis is None:
            self._waiting_redis = connection.create_async_redis(
                self.settings.redis_url,
                timeout_s=self.settings.redis_timeout_s,
                read_timeout_s=self.settings.redis_timeout_s + self.replicas.wait_ms / 1000,
                retry_on=(redis.ConnectionError,),  # a late write must not be sent twice
            )
        return self._waiting_redis

    async def aclose(self) -> None:
        if self._waiting_redis is not None and self._waiting_redis is not self.redis:
            await connection.close_async_redis(self._waiting_redis)
        await connection.close_async_redis(self.redis)

    enqueue_identify = _awaitable(Producer.enqueue_identify)
    enqueue_track = _awaitable(Producer.enqueue_track)
    enqueue_track_anonymous = _awaitable(Producer.enqueue_track_anonymous)
    enqueue_page = _awaitable(Producer.enqueue_page)
    enqueue_delete = _awaitable(Producer.enqueue_delete)
    enqueue_merge = _awaitable(Producer.enqueue_merge)
    enqueue_suppress = _awaitable(Producer.enqueue_suppress)
    enqueue_unsuppress = _awaitable(Producer.enqueue_unsuppress)
    enqueue_add_device = _awaitable(Producer.enqueue_add_device)
    enqueue_remove_device = _awaitable(Producer.enqueue_remove_device)
    enqueue_send_email = _awaitable(Producer.enqueue_send_email)
    enqueue_send_push = _awaitable(Producer.enqueue_send_push)
    enqueue_send_sms = _awaitable(Producer.enqueue_send_sms)
    enqueue_broadcast = _awaitable(Producer.enqueue_broadcast)


# A redis.asyncio client belongs to the loop it first ran on, so the default producer is kept
# per event loop (weakly: a closed loop's producer goes with it).
_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncProducer] = (
    weakref.WeakKeyDictionary()
)


def default_producer() -> AsyncProducer:
    """The async producer of the running loop, built from the environment on first use."""
    loop = asyncio.get_running_loop()
    producer = _defaults.get(loop)
    if producer is None:
        producer = _defaults[loop] = AsyncProducer()
    return producer


def configure(
    settings: Settings | None = None, *, redis_client: redis.asyncio.Redis | None = None
) -> AsyncProducer:
    """Replace the running loop's default async producer."""
    producer = _defaults[asyncio.get_running_loop()] = AsyncProducer(
        settings, redis_client=redis_client
    )
    return producer


def _on_default(
    method: Callable[Concatenate[AsyncProducer, _P], Coroutine[Any, Any, str]],
) -> Callable[_P, Coroutine[Any, Any, str]]:
    async def call(*args: _P.args, **kwargs: _P.kwargs) -> str:
        return await method(default_producer(), *args, **kwargs)

    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    signature = inspect.signature(method)
    call.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=list(signature.parameters.values())[1:]
    )
    return call


enqueue_identify = _on_default(AsyncProducer.enqueue_identify)
enqueue_track = _on_default(AsyncProducer.enqueue_track)
enqueue_track_anonymous = _on_default(AsyncProducer.enqueue_track_anonymous)
enqueue_page = _on_default(AsyncProducer.enqueue_page)
enqueue_delete = _on_default(AsyncProducer.enqueue_delete)
enqueue_merge = _on_default(AsyncProducer.enqueue_merge)
enqueue_suppress = _on_default(AsyncProducer.enqueue_suppress)
enqueue_unsuppress = _on_default(AsyncProducer.enqueue_unsuppress)
enqueue_add_device = _on_default(AsyncProducer.enqueue_add_device)
enqueue_remove_device = _on_default(AsyncProducer.enqueue_remove_device)
enqueue_send_email = _on_default(AsyncProducer.enqueue_send_email)
enqueue_send_push = _on_default(AsyncProducer.enqueue_send_push)
enqueue_send_sms = _on_default(AsyncProducer.enqueue_send_sms)
enqueue_broadcast = _on_default(AsyncProducer.enqueue_broadcast)
