"""The producer: validate a job, give it a ULID, and store it durably in one Redis round trip.

`Producer` stores each job as it is enqueued; `BulkProducer` (from `Producer.pipeline()`) collects
them and writes large atomic flushes. Their `enqueue_*` methods are defined once, with the async
producer's, in _calls.py; _defaults.py has the module-level functions.
"""

from __future__ import annotations

import threading
from typing import Any

import redis

from cio_worker import jsonutil
from cio_worker.config import Settings
from cio_worker.connection import create_redis, get_redis
from cio_worker.errors import EnqueueError
from cio_worker.ids import new_ulid
from cio_worker.job import Job, encode_record
from cio_worker.kinds import Kind
from cio_worker.produce._calls import EnqueueCalls
from cio_worker.produce._jobs import JobDraft, new_job
from cio_worker.queue import (
    JobWriter,
    ReplicaWait,
    Router,
    ShardRecords,
    batch_api,
    batched_kinds,
    queue_exec,
    queue_multi,
    queue_wait,
    run_write,
    shard_for,
    write_error,
)

#: How long a bulk flush may wait for Redis's answer: one flush carries thousands of jobs.
BULK_READ_TIMEOUT_S = 30.0


class Producer(EnqueueCalls):
    """Stores jobs for the workers. Thread-safe; create one per process and reuse it."""

    def __init__(
        self, settings: Settings | None = None, *, redis_client: redis.Redis | None = None
    ):
        self.settings = settings or Settings.from_env()
        self.redis = redis_client or get_redis(self.settings)
        self._bulk_redis: redis.Redis | None = redis_client
        self._job_writer = JobWriter(
            self.settings, self.redis, connect=create_redis, waiting_client=redis_client
        )
        #: Whether to WAIT for a replica after each write, and the jobs none confirmed.
        self.replicas = self._job_writer.replicas

    def pipeline(self, *, flush_every: int = 10_000) -> BulkProducer:
        """A bulk producer: `with producer.pipeline() as bulk: bulk.enqueue_track(...)`.

        Calls validate and return ids at once; jobs are written when the block ends (or every
        `flush_every` jobs), each flush in one MULTI/EXEC, so a flush is stored whole or not at
        all. An exception inside the block discards the jobs not yet flushed.
        """
        if self._bulk_redis is None:
            self._bulk_redis = create_redis(
                self.settings.redis_url,
                timeout_s=self.settings.redis_timeout_s,
                read_timeout_s=max(self.settings.redis_timeout_s, BULK_READ_TIMEOUT_S),
                retries=0,
            )
        return BulkProducer(self, flush_every=flush_every)

    def _store(self, draft: JobDraft) -> str:
        """Write the job record and queue it atomically, in one round trip (queue/_routing.py);
        where the master has replicas, wait for one of them too (queue/_replication.py)."""
        job = new_job(draft)
        self._store_job(job)
        return job.id

    def _store_job(self, job: Job) -> None:
        """The write itself, for a producer that decides when to store (Django's, on commit)."""
        run_write(self._job_writer.store(job))


class _Flush:
    """The jobs of one bulk flush, each kept as its id and stored record only: batched jobs by
    shard, the others (id, kind, record) for the ledger; and the first and last ids for error
    messages."""

    __slots__ = ("records", "ledger", "first_id", "last_id")

    def __init__(self) -> None:
        self.records = ShardRecords()
        self.ledger: list[tuple[str, Kind, bytes]] = []
        self.first_id = ""
        self.last_id = ""

    @property
    def count(self) -> int:
        return self.records.count + len(self.ledger)


class BulkProducer(Producer):
    """Collects jobs and writes them in large atomic flushes (see `Producer.pipeline`).

    While one flush is on its way to Redis, the caller goes on building the next one: the write
    runs in a helper thread (the wait for Redis releases the GIL), at most one at a time. A
    job is kept as its id and stored record only (a `Job` and its payload dicts would keep the
    garbage collector busy across tens of thousands of jobs), encoded from the JSON validation
    already made where it made one.

    No failure is silent. Whatever a flush meets (a Redis error, a value Redis cannot encode, a
    bug), it becomes an `EnqueueError` raised by the next call that flushes, or when the block
    ends, saying how many jobs that flush held and whether they were stored (none, or unknown
    when Redis may have run the write before failing to answer), how many earlier flushes stored
    (`stored`), and how many jobs collected since were discarded. If the block itself raises,
    its exception wins and carries the flush failure as a note.
    """

    def __init__(self, parent: Producer, *, flush_every: int) -> None:
        self.settings = parent.settings
        assert parent._bulk_redis is not None
        self.redis = parent._bulk_redis
        self._router = Router(self.settings, self.redis)
        self._api = batch_api(self.settings)
        self._batched = batched_kinds(self.settings)
        self._bulk_redis = None
        # The bulk client's reads already allow far longer than any WAIT.
        self.replicas = ReplicaWait(self.settings.replica_wait_ms)
        self._flush_every = max(1, flush_every)
        self._buffer = _Flush()
        self._writer: threading.Thread | None = None
        #: A background flush's failure, kept for the caller (see `_wait_for_writer`).
        self._writer_error: EnqueueError | None = None
        #: Jobs written so far by this bulk producer.
        self.stored = 0

    def __enter__(self) -> BulkProducer:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self.flush()
            return
        self._buffer = _Flush()  # the block failed: its unflushed jobs are discarded (documented)
        try:
            self._wait_for_writer()  # let a running flush finish
        except EnqueueError as error:  # the block's own exception wins, but says this too
            exc.add_note(f"Also, a background bulk flush failed: {error}")

    def _store(self, draft: JobDraft) -> str:
        kind, payload, payload_json = draft
        job_id = new_ulid()
        buffer = self._buffer
        try:
            record = encode_record(kind, payload_json or jsonutil.dumps_bytes(payload))
        except (TypeError, ValueError) as exc:  # only a payload that skipped validation
            raise EnqueueError(
                f"{kind.value} job {job_id} cannot be stored as JSON: {exc}"
            ) from exc
        if kind in self._batched:
            buffer.records.add(shard_for(payload), job_id, record)
        else:
            buffer.ledger.append((job_id, kind, record))
        if not buffer.first_id:
            buffer.first_id = job_id
        buffer.last_id = job_id
        if buffer.count >= self._flush_every:
            self._wait_for_writer()  # a failure is raised here, buffer and this job counted
            self._buffer = _Flush()
            self._writer = threading.Thread(
                target=self._write_in_background, args=(buffer,), name="cio-bulk-writer"
            )
            self._writer.start()
        return job_id

    def flush(self) -> int:
        """Write the collected jobs now, in one MULTI/EXEC; return how many were written."""
        self._wait_for_writer()
        jobs, self._buffer = self._buffer, _Flush()
        return self._write(jobs)

    def _wait_for_writer(self) -> None:
        """Wait for the background flush; if it failed, raise its error, discarding the jobs
        collected since (a caller who goes on after the error starts from an empty buffer)."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._writer_error is None:
            return
        error, self._writer_error = self._writer_error, None
        discarded, self._buffer = self._buffer.count, _Flush()
        if discarded:
            raise EnqueueError(
                f"{error}; the {discarded} job(s) enqueued after that flush (ids already "
                "returned, or this call's) were discarded, not stored"
            ) from error
        raise error

    def _write_in_background(self, jobs: _Flush) -> None:
        # Catch everything: an exception escaping here would end the thread with a line on
        # stderr and the caller would never know these jobs were lost.
        try:
            self._write(jobs)
        except EnqueueError as exc:
            self._writer_error = exc
        except BaseException as exc:  # not an Exception (SystemExit...): _write let it through
            self._writer_error = self._flush_error(jobs, exc, "they may or may not be stored")
            self._writer_error.__cause__ = exc

    def _flush_error(self, jobs: _Flush, exc: BaseException, outcome: str) -> EnqueueError:
        return EnqueueError(
            f"bulk flush of {jobs.count} jobs ({jobs.first_id}..{jobs.last_id}) failed, {outcome} "
            f"({self.stored} stored by earlier flushes): {exc.__class__.__name__}: {exc}"
        )

    def _write(self, jobs: _Flush) -> int:
        count = jobs.count
        if not count:
            return 0
        try:
            # Before any write: nothing stored.
            replicated = run_write(self.replicas.checking(self.redis))
            pipe = self._prepare(jobs, replicated=replicated)  # nothing sent yet
        except Exception as exc:
            raise self._flush_error(jobs, exc, "none of them stored") from exc
        try:
            replies = self._execute(pipe, replicated=replicated)
        except redis.TimeoutError as exc:
            # The request went out; Redis may have run it. Saying "not stored" could make the
            # caller enqueue everything twice.
            raise self._flush_error(jobs, exc, "they may or may not be stored") from exc
        except redis.ConnectionError as exc:
            # Refused while connecting: nothing was sent. Lost mid-exchange: the MULTI..EXEC
            # may have been written whole and run before the connection broke.
            sent = not _failed_to_connect(exc)
            outcome = "they may or may not be stored" if sent else "none of them stored"
            raise self._flush_error(jobs, exc, outcome) from exc
        except (redis.RedisError, UnicodeError) as exc:
            # Refused by Redis (the transaction did not run), or not sent: redis-py encodes
            # the whole MULTI..EXEC before writing a byte (DataError and UnicodeError come
            # from there).
            raise self._flush_error(jobs, exc, "none of them stored") from exc
        except Exception as exc:  # unforeseen: do not claim either way
            raise self._flush_error(jobs, exc, "they may or may not be stored") from exc
        self.stored += count
        if replicated:
            self.replicas.record(replies[-1], count, jobs.last_id)
        return count

    def _prepare(self, jobs: _Flush, *, replicated: bool) -> Any:
        """A pipeline holding one MULTI/EXEC of every job; with `replicated`, followed by
        `WAIT 1 <ms>` on the same connection, in the same round trip (MULTI and EXEC are then
        sent as commands of a plain pipeline, since WAIT inside a transaction does not wait)."""
        pipe = self.redis.pipeline(transaction=not replicated)
        if replicated:
            queue_multi(pipe)
        if jobs.records.count:
            jobs.records.queue_writes(pipe, self._api)
        if jobs.ledger:
            self._router.ledger.enqueue_records(jobs.ledger, pipe=pipe)
        if replicated:
            queue_exec(pipe)
            queue_wait(pipe, self.replicas)
        return pipe

    def _execute(self, pipe: Any, *, replicated: bool) -> list[Any]:
        if not replicated:
            result: list[Any] = pipe.execute()
            return result
        replies: list[Any] = pipe.execute(raise_on_error=False)
        error = write_error(replies[:-1])
        if error is not None:
            raise error
        return replies


def _failed_to_connect(exc: redis.ConnectionError) -> bool:
    """Whether redis-py failed to open the connection (`Error 111 connecting to host:port.`),
    as opposed to losing one that may have carried the write."""
    return " connecting to " in str(exc)
