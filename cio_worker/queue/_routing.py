"""Where a job goes, a batch shard (_shards.py) or a Celery queue (_ledger.py), and the write that
puts it there.

`route` is the one decision, for every writer: the producers (sync, asyncio, bulk) and dead-letter
replay, so a replayed job travels the way a new one would, keeping its place in its person's
order. `Router` writes many jobs on the sync client (bulk flushes, replay); `JobWriter` writes one
job at a time for the sync and the asyncio producers alike.

`JobWriter` does no I/O itself: `store(job)` is a generator. Each request it yields is a callable
that sends one round trip on the writer's client and returns the answer (on a redis.asyncio
client, an awaitable of it: redis-py's two clients have the same methods). The answer is sent back
into the generator, or the exception the request raised is thrown in, and the generator decides
what it means. `run_write` runs a write for the sync producer, `run_write_async` for the asyncio
one: the write, its replica WAIT and its errors are defined once, and both producers send the
same commands.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator, Sequence
from functools import partial
from typing import Any, Generic, TypeVar

import redis
import redis.asyncio
from redis.commands.core import AsyncScript, Script
from redis.exceptions import NoScriptError

from cio_worker.config import Settings
from cio_worker.customerio import batchable
from cio_worker.errors import EnqueueError
from cio_worker.job import Job
from cio_worker.kinds import Kind
from cio_worker.queue import _ledger_scripts as ledger_scripts
from cio_worker.queue._ledger import JobLedger, enqueue_call
from cio_worker.queue._replication import (
    ReplicaWait,
    queue_exec,
    queue_multi,
    queue_wait,
    write_error,
)
from cio_worker.queue._shards import BatchQueue, queue_enqueue

T = TypeVar("T")
#: A sync or an asyncio client: a `JobWriter` sends on either.
C = TypeVar("C", redis.Redis, redis.asyncio.Redis)
#: One round trip: sends a request, returns the answer (sync) or an awaitable of it (asyncio).
Request = Callable[[], Any]
#: A write: yields requests, is sent their answers, returns its result (see the module).
Write = Generator[Request, Any, T]


def batch_api(settings: Settings) -> str:
    """The API batched jobs go to: `track` (v2 batch) or `pipelines` (/v1/batch)."""
    return "pipelines" if settings.data_api == "pipelines" else "track"


def batched_kinds(settings: Settings) -> frozenset[Kind]:
    """The kinds that go to the batch shards with these settings (none without batching)."""
    return batchable(batch_api(settings)) if settings.batch else frozenset()


def is_batched(job: Job, settings: Settings) -> bool:
    return job.kind in batched_kinds(settings)


def route(jobs: Sequence[Job], settings: Settings) -> tuple[list[Job], list[Job]]:
    """The batched jobs and the jobs for the ledger."""
    batched: list[Job] = []
    ledger: list[Job] = []
    kinds = batched_kinds(settings)
    for job in jobs:
        (batched if job.kind in kinds else ledger).append(job)
    return batched, ledger


class Router:
    """Stores jobs where the workers will look for them, on the sync client."""

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
        batched, ledger = route(jobs, self.settings)
        if batched:
            self.batches.enqueue(batched, replace=replace, pipe=pipe)
        if ledger:
            stats_field = "requeued" if replace else "enqueued"
            self.ledger.enqueue_many(ledger, replace=replace, stats_field=stats_field, pipe=pipe)


class JobWriter(Generic[C]):
    """Stores single jobs for a producer, in one round trip each (see the module).

    With no replica to wait for, a batched job's shard writes go in one MULTI/EXEC and any other
    job is the ledger's ENQUEUE script (EVALSHA; redis-py loads the script on NOSCRIPT). Where
    the master has replicas attached, the same write is followed by `WAIT 1 <ms>` in one
    pipeline (_replication.py).
    """

    def __init__(
        self,
        settings: Settings,
        client: C,
        *,
        connect: Callable[..., C],
        waiting_client: C | None = None,
    ) -> None:
        self.settings = settings
        self.client: C = client
        #: Whether to WAIT for a replica after each write, and the jobs none confirmed.
        self.replicas = ReplicaWait(settings.replica_wait_ms)
        self._api = batch_api(settings)
        self._script: Script | AsyncScript = client.register_script(ledger_scripts.ENQUEUE)
        #: Builds a client like `client` (connection.create_redis or create_async_redis).
        self._connect: Callable[..., C] = connect
        #: The client writes followed by WAIT go through (see `_waiting`); None until needed.
        self.waiting_client: C | None = waiting_client

    def store(self, job: Job) -> Write[None]:
        """Write `job` where the workers look for it, waiting for a replica if one is attached.

        Raises `EnqueueError` if Redis did not take it.
        """
        try:
            if (yield from self.replicas.checking(self.client)):
                yield from self._store_and_wait(job)
                return
            batched, _ = route([job], self.settings)
            if batched:
                yield partial(self._transaction, batched)
            else:
                script_keys, args = enqueue_call(job)
                yield partial(self._script, keys=script_keys, args=args)
        except redis.RedisError as exc:
            raise EnqueueError(
                f"Redis did not take {job.kind.value} job {job.id}: {exc.__class__.__name__}: {exc}"
            ) from exc

    def _transaction(self, batched: list[Job]) -> Any:
        pipe = self.client.pipeline(transaction=True)
        queue_enqueue(pipe, self._api, batched)
        return pipe.execute()

    def _store_and_wait(self, job: Job) -> Write[None]:
        """Write `job` and `WAIT 1 <ms>` in one pipeline, on one connection (WAIT counts the
        acknowledgements of its own connection's writes). A replica's silence does not fail
        the enqueue: see _replication.py for why."""
        client = self._waiting()
        for first_try in (True, False):
            try:
                replies = yield partial(self._write_and_wait, client, job)
            except redis.TimeoutError as exc:
                raise EnqueueError(
                    f"Redis did not answer in time for {job.kind.value} job {job.id}: it may "
                    f"or may not be stored: {exc}"
                ) from exc
            error = write_error(replies[:-1])
            if isinstance(error, NoScriptError) and first_try:
                # A new master (after a failover) may not have the script yet; the write did
                # not happen, so sending it again is safe.
                yield partial(client.script_load, ledger_scripts.ENQUEUE)
                continue
            if error is not None:
                raise error
            self.replicas.record(replies[-1], 1, job.id)
            return

    def _write_and_wait(self, client: C, job: Job) -> Any:
        """On a plain pipeline: the ledger's ENQUEUE script by its SHA, or, for a batched job,
        the shard writes between MULTI and EXEC; then WAIT, outside the transaction."""
        pipe = client.pipeline(transaction=False)
        batched, _ = route([job], self.settings)
        if batched:
            queue_multi(pipe)
            queue_enqueue(pipe, self._api, batched)
            queue_exec(pipe)
        else:
            script_keys, args = enqueue_call(job)
            pipe.evalsha(self._script.sha, len(script_keys), *script_keys, *args)
        queue_wait(pipe, self.replicas)
        return pipe.execute(raise_on_error=False)

    def _waiting(self) -> C:
        """A client whose reads may last as long as the WAIT; a client given by the caller is
        used as it is."""
        if self.waiting_client is None:
            self.waiting_client = self._connect(
                self.settings.redis_url,
                timeout_s=self.settings.redis_timeout_s,
                read_timeout_s=self.settings.redis_timeout_s + self.replicas.wait_ms / 1000,
                # A write whose answer is only late must not be sent again: it would be
                # stored twice. A refused or reset connection did not carry it.
                retry_on=(redis.ConnectionError,),
            )
        return self.waiting_client


async def run_write_async(write: Write[T]) -> T:
    """Run `write`: send each request, awaiting its answer where it is awaitable, and hand the
    answer, or the exception, back to the write, which decides what a failure means."""
    answer: Any = None
    failure: Exception | None = None
    while True:
        try:
            request = write.send(answer) if failure is None else write.throw(failure)
        except StopIteration as done:
            result: T = done.value
            return result
        try:
            answer, failure = request(), None
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception as exc:
            answer, failure = None, exc


def run_write(write: Write[T]) -> T:
    """Run `write` on a sync client. No answer is awaitable there, so `run_write_async` ends at
    its first step, without an event loop: the one loop serves both producers."""
    steps = run_write_async(write)
    try:
        steps.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    steps.close()
    raise TypeError("run_write was given an asyncio client's write: use run_write_async")
