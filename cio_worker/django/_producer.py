"""The producer a Django project's `enqueue_*` calls use: inside `transaction.atomic()` the job
is stored when the outermost transaction commits, and not at all if it rolls back.

The job is validated and given its id at the call, as any enqueue (a bad argument raises there,
and the id is returned at once); only the Redis write waits for `transaction.on_commit`. Django
runs the callbacks of the outermost transaction once it has committed, and drops those registered
inside a savepoint that rolls back, so a job enqueued there is dropped with it. Outside a
transaction (autocommit), under `immediately()`, or with `CIO_WORKER_ON_COMMIT = False`, a job is
stored at the call, as by `cio_worker.Producer`.

A write that fails at commit time (Redis away) cannot undo the commit. It is logged as an error
carrying the job's id and kind, and `enqueue_failed` is sent with the whole job, so the
application can keep it (an outbox table) and enqueue it again; it is not raised, since raising
from an `on_commit` callback would turn a committed request into a 500 and make Django skip every
later callback of that commit, other jobs' included (docs/django.md, "When Redis is away at
commit").
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from functools import partial

import redis
from django.db import connections, transaction  # type: ignore[import-untyped]
from django.dispatch import Signal  # type: ignore[import-untyped]

from cio_worker import logs
from cio_worker.config import Settings
from cio_worker.errors import EnqueueError
from cio_worker.job import Job
from cio_worker.produce import JobDraft, Producer, new_job

log = logs.get_logger(__name__)

#: Sent when a job deferred to commit could not be stored then: `job_id`, `kind` (str),
#: `payload` (the job's, personal data: keep it as carefully as the row it came with), `error`.
enqueue_failed = Signal()

_immediate: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "cio_worker_django_immediate", default=False
)


@contextlib.contextmanager
def immediately() -> Iterator[None]:
    """Within this block, enqueues are stored at the call even inside `transaction.atomic()`
    (for an event that must go out whether or not the transaction commits)."""
    token = _immediate.set(True)
    try:
        yield
    finally:
        _immediate.reset(token)


class OnCommitProducer(Producer):
    """A `cio_worker.Producer` whose enqueues inside a transaction of database `database` are
    stored when it commits (see the module). Thread-safe, as Django's connections are per thread.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        redis_client: redis.Redis | None = None,
        database: str = "default",
        on_commit: bool = True,
    ) -> None:
        super().__init__(settings, redis_client=redis_client)
        self.database = database
        self.on_commit = on_commit

    def defers(self) -> bool:
        """Whether an enqueue made now waits for a commit."""
        return (
            self.on_commit
            and not _immediate.get()
            and bool(connections[self.database].in_atomic_block)
        )

    def _store(self, draft: JobDraft) -> str:
        if not self.defers():
            return super()._store(draft)
        job = new_job(draft)
        transaction.on_commit(partial(self._store_committed, job), using=self.database, robust=True)
        return job.id

    def _store_committed(self, job: Job) -> None:
        """Store `job` now that its transaction has committed; a failure is logged and signalled,
        never raised (see the module)."""
        try:
            self._store_job(job)
        except Exception as exc:  # EnqueueError, or anything unforeseen: never silent
            reason = str(exc) if isinstance(exc, EnqueueError) else f"{type(exc).__name__}: {exc}"
            log.error(
                "enqueue after commit failed: the transaction committed, the job is not stored",
                job_id=job.id,
                kind=job.kind.value,
                error=reason,
            )
            enqueue_failed.send(
                sender=type(self),
                job_id=job.id,
                kind=job.kind.value,
                payload=job.payload,
                error=exc,
            )
