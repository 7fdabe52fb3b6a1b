"""The producer: validate a job, give it a ULID, and store it durably in one Redis transaction.

`Producer` does the work; the module-level `enqueue_*` functions wrap a default one built from
the environment on first use (as httpx's top-level `get()` wraps a `Client`).
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis
from redis.exceptions import NoScriptError

from cio_worker.config import Settings
from cio_worker.connection import create_redis, get_redis
from cio_worker.errors import EnqueueError
from cio_worker.ids import new_ulid
from cio_worker.job import Job
from cio_worker.kinds import Kind
from cio_worker.produce import _payloads as payloads
from cio_worker.queue import (
    ENQUEUE_SCRIPT,
    ReplicaWait,
    Router,
    queue_exec,
    queue_job_write,
    queue_multi,
    queue_wait,
    write_error,
)

#: How long a bulk flush may wait for Redis's answer: one flush carries thousands of jobs.
BULK_READ_TIMEOUT_S = 30.0

PersonId = str | int
Timestamp = int | datetime | None
JsonObject = Mapping[str, Any] | None
PersonRef = str | int | Mapping[str, str]


class Producer:
    """Stores jobs for the workers. Thread-safe; create one per process and reuse it."""

    def __init__(
        self, settings: Settings | None = None, *, redis_client: redis.Redis | None = None
    ):
        self.settings = settings or Settings.from_env()
        self.redis = redis_client or get_redis(self.settings)
        self._router = Router(self.settings, self.redis)
        self._bulk_redis: redis.Redis | None = redis_client if redis_client is not None else None
        #: Whether to WAIT for a replica after each write, and the jobs none confirmed.
        self.replicas = ReplicaWait(self.settings.replica_wait_ms)
        # Writes followed by WAIT go through a client whose reads may last as long as the
        # WAIT; a client given by the caller is used as it is.
        self._waiting_redis: redis.Redis | None = redis_client
        self._enqueue_script = self.redis.register_script(ENQUEUE_SCRIPT)

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

    # -- Track API -------------------------------------------------------------------------------
    def enqueue_identify(
        self, user_id: PersonId, traits: JsonObject = None, *, timestamp: Timestamp = None
    ) -> str:
        """Create or update a person. Returns the job id."""
        return self._store(Kind.IDENTIFY, payloads.identify(user_id, traits, timestamp))

    def enqueue_track(
        self,
        user_id: PersonId,
        event: str,
        properties: JsonObject = None,
        *,
        timestamp: Timestamp = None,
    ) -> str:
        """Record an event for a person; the job id is the event's dedup id."""
        return self._store(
            Kind.TRACK, payloads.event(Kind.TRACK, "user_id", user_id, event, properties, timestamp)
        )

    def enqueue_track_anonymous(
        self,
        anonymous_id: PersonId,
        event: str,
        properties: JsonObject = None,
        *,
        timestamp: Timestamp = None,
    ) -> str:
        """Record an event for an anonymous visitor (merged into the person on identify)."""
        payload = payloads.event(
            Kind.TRACK_ANONYMOUS, "anonymous_id", anonymous_id, event, properties, timestamp
        )
        return self._store(Kind.TRACK_ANONYMOUS, payload)

    def enqueue_page(
        self,
        user_id: PersonId,
        url: str,
        properties: JsonObject = None,
        *,
        timestamp: Timestamp = None,
    ) -> str:
        """Record a page view (an event whose name is the URL)."""
        return self._store(
            Kind.PAGE, payloads.event(Kind.PAGE, "user_id", user_id, url, properties, timestamp)
        )

    def enqueue_delete(self, user_id: PersonId) -> str:
        """Delete a person."""
        return self._store(Kind.DELETE, payloads.person_only(user_id))

    def enqueue_merge(self, primary: PersonRef, secondary: PersonRef) -> str:
        """Merge `secondary` into `primary` (each an id or `{"id"|"email"|"cio_id": value}`)."""
        return self._store(Kind.MERGE, payloads.merge(primary, secondary))

    def enqueue_suppress(self, user_id: PersonId) -> str:
        """Suppress a person (delete and refuse future data)."""
        return self._store(Kind.SUPPRESS, payloads.person_only(user_id))

    def enqueue_unsuppress(self, user_id: PersonId) -> str:
        """Lift a suppression."""
        return self._store(Kind.UNSUPPRESS, payloads.person_only(user_id))

    def enqueue_add_device(
        self,
        user_id: PersonId,
        device_id: str,
        platform: str,
        *,
        last_used: Timestamp = None,
        attributes: JsonObject = None,
    ) -> str:
        """Add or update a person's push device (`platform` is `ios` or `android`)."""
        payload = payloads.add_device(user_id, device_id, platform, last_used, attributes)
        return self._store(Kind.ADD_DEVICE, payload)

    def enqueue_remove_device(self, user_id: PersonId, device_id: str) -> str:
        """Remove a person's push device."""
        return self._store(Kind.REMOVE_DEVICE, payloads.remove_device(user_id, device_id))

    # -- App API ---------------------------------------------------------------------------------
    def enqueue_send_email(
        self,
        /,
        transactional_message_id: int | str,
        *,
        identifiers: Mapping[str, str | int],
        to: str | None = None,
        message_data: JsonObject = None,
        **fields: Any,
    ) -> str:
        """Send a transactional email; extra App API fields (`subject`, `from_`...) by keyword."""
        body = payloads.message(
            Kind.SEND_EMAIL, transactional_message_id, identifiers, to, message_data, fields
        )
        return self._store(Kind.SEND_EMAIL, body)

    def enqueue_send_push(
        self,
        /,
        transactional_message_id: int | str,
        *,
        identifiers: Mapping[str, str | int],
        to: str | None = None,
        message_data: JsonObject = None,
        **fields: Any,
    ) -> str:
        """Send a transactional push (`title`, `message`, `link`... by keyword)."""
        body = payloads.message(
            Kind.SEND_PUSH, transactional_message_id, identifiers, to, message_data, fields
        )
        return self._store(Kind.SEND_PUSH, body)

    def enqueue_send_sms(
        self,
        /,
        transactional_message_id: int | str,
        *,
        identifiers: Mapping[str, str | int],
        to: str | None = None,
        message_data: JsonObject = None,
        **fields: Any,
    ) -> str:
        """Send a transactional SMS."""
        body = payloads.message(
            Kind.SEND_SMS, transactional_message_id, identifiers, to, message_data, fields
        )
        return self._store(Kind.SEND_SMS, body)

    def enqueue_broadcast(
        self,
        broadcast_id: int,
        *,
        data: JsonObject = None,
        recipients: Mapping[str, Any] | None = None,
        emails: list[str] | None = None,
        ids: list[str | int] | None = None,
        per_user_data: list[Mapping[str, Any]] | None = None,
        data_file_url: str | None = None,
        id_ignore_missing: bool | None = None,
        email_ignore_missing: bool | None = None,
        email_add_duplicates: bool | None = None,
    ) -> str:
        """Trigger an API broadcast, with at most one audience key (none: the UI's audience)."""
        payload = payloads.broadcast(
            broadcast_id,
            data,
            {
                "recipients": recipients,
                "emails": emails,
                "ids": ids,
                "per_user_data": per_user_data,
                "data_file_url": data_file_url,
            },
            {
                "id_ignore_missing": id_ignore_missing,
                "email_ignore_missing": email_ignore_missing,
                "email_add_duplicates": email_add_duplicates,
            },
        )
        return self._store(Kind.BROADCAST, payload)

    # -- storage ---------------------------------------------------------------------------------
    def _store(self, kind: Kind, payload: dict[str, Any]) -> str:
        """Write the job record and queue it atomically (one script or MULTI, one round trip);
        where the master has replicas, wait for one of them too (replication.py)."""
        job = Job(id=new_ulid(), kind=kind, payload=payload, created_at=time.time())
        try:
            if self.replicas.check(self.redis):
                self._store_replicated(job)
            else:
                self._router.store([job])
        except redis.RedisError as exc:
            raise EnqueueError(
                f"Redis did not take {kind.value} job {job.id}: {exc.__class__.__name__}: {exc}"
            ) from exc
        return job.id

    def _store_replicated(self, job: Job) -> None:
        """Write `job` and `WAIT 1 <ms>` in one pipeline, on one connection (WAIT counts the
        acknowledgements of its own connection's writes). A replica's silence does not fail
        the enqueue: see replication.py for why."""
        client = self._waiting_client()
        for first_try in (True, False):
            pipe = client.pipeline(transaction=False)
            queue_job_write(pipe, job, self.settings, self._enqueue_script.sha)
            queue_wait(pipe, self.replicas)
            try:
                replies = pipe.execute(raise_on_error=False)
            except redis.TimeoutError as exc:
                raise EnqueueError(
                    f"Redis did not answer in time for {job.kind.value} job {job.id}: it may "
                    f"or may not be stored: {exc}"
                ) from exc
            error = write_error(replies[:-1])
            if isinstance(error, NoScriptError) and first_try:
                # A new master (after a failover) may not have the script yet; the write did
                # not happen, so sending it again is safe.
                client.script_load(ENQUEUE_SCRIPT)
                continue
            if error is not None:
                raise error
            self.replicas.record(replies[-1], [job])
            return

    def _waiting_client(self) -> redis.Redis:
        if self._waiting_redis is None:
            self._waiting_redis = create_redis(
                self.settings.redis_url,
                timeout_s=self.settings.redis_timeout_s,
                read_timeout_s=self.settings.redis_timeout_s + self.replicas.wait_ms / 1000,
                # A write whose answer is only late must not be sent again: it would be
                # stored twice. A refused or reset connection did not carry it.
                retry_on=(redis.ConnectionError,),
            )
        return self._waiting_redis


class BulkProducer(Producer):
    """Collects jobs and writes them in large atomic flushes (see `Producer.pipeline`).

    While one flush is on its way to Redis, the caller goes on building the next one: the write
    runs in a helper thread (the wait for Redis releases the GIL), at most one at a time.

    No failure is silent. Whatever a flush meets (a Redis error, a value Redis cannot encode, a
    bug), it becomes an `EnqueueError` raised by the next call that flushes, or when the block
    ends, saying how many jobs that flush held and whether they were stored (none, or unknown
    when Redis may have run the write before failing to answer), how many earlier flushes stored
    (`stored`), and how many jobs collected since were discarded. If the block itself raises,
    its exception wins and carries the flush failure as a note.
    """

    #: Jobs per script call inside a flush: big enough to amortise the round trip, small enough
    #: not to stall Redis for other clients.
    CHUNK = 1000

    def __init__(self, parent: Producer, *, flush_every: int) -> None:
        self.settings = parent.settings
        assert parent._bulk_redis is not None
        self.redis = parent._bulk_redis
        self._router = Router(self.settings, self.redis)
        self._bulk_redis = None
        # The bulk client's reads already allow far longer than any WAIT.
        self.replicas = ReplicaWait(self.settings.replica_wait_ms)
        self._flush_every = max(1, flush_every)
        self._buffer: list[Job] = []
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
        self._buffer.clear()  # the block failed: its unflushed jobs are discarded (documented)
        try:
            self._wait_for_writer()  # let a running flush finish
        except EnqueueError as error:  # the block's own exception wins, but says this too
            exc.add_note(f"Also, a background bulk flush failed: {error}")

    def _store(self, kind: Kind, payload: dict[str, Any]) -> str:
        job = Job(id=new_ulid(), kind=kind, payload=payload, created_at=time.time())
        self._buffer.append(job)
        if len(self._buffer) >= self._flush_every:
            self._wait_for_writer()  # a failure is raised here, buffer and this job counted
            jobs, self._buffer = self._buffer, []
            self._writer = threading.Thread(
                target=self._write_in_background, args=(jobs,), name="cio-bulk-writer"
            )
            self._writer.start()
        return job.id

    def flush(self) -> int:
        """Write the collected jobs now, in one MULTI/EXEC; return how many were written."""
        self._wait_for_writer()
        jobs, self._buffer = self._buffer, []
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
        discarded, self._buffer = len(self._buffer), []
        if discarded:
            raise EnqueueError(
                f"{error}; the {discarded} job(s) enqueued after that flush (ids already "
                "returned, or this call's) were discarded, not stored"
            ) from error
        raise error

    def _write_in_background(self, jobs: list[Job]) -> None:
        # Catch everything: an exception escaping here would end the thread with a line on
        # stderr and the caller would never know these jobs were lost.
        try:
            self._write(jobs)
        except EnqueueError as exc:
            self._writer_error = exc
        except BaseException as exc:  # not an Exception (SystemExit...): _write let it through
            self._writer_error = self._flush_error(jobs, exc, "they may or may not be stored")
            self._writer_error.__cause__ = exc

    def _flush_error(self, jobs: list[Job], exc: BaseException, outcome: str) -> EnqueueError:
        return EnqueueError(
            f"bulk flush of {len(jobs)} jobs ({jobs[0].id}..{jobs[-1].id}) failed, {outcome} "
            f"({self.stored} stored by earlier flushes): {exc.__class__.__name__}: {exc}"
        )

    def _write(self, jobs: list[Job]) -> int:
        if not jobs:
            return 0
        try:
            replicated = self.replicas.check(self.redis)  # before any write: nothing stored
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
        self.stored += len(jobs)
        if replicated:
            self.replicas.record(replies[-1], jobs)
        return len(jobs)

    def _prepare(self, jobs: list[Job], *, replicated: bool) -> Any:
        """A pipeline holding one MULTI/EXEC of every job; with `replicated`, followed by
        `WAIT 1 <ms>` on the same connection, in the same round trip (MULTI and EXEC are then
        sent as commands of a plain pipeline, since WAIT inside a transaction does not wait)."""
        pipe = self.redis.pipeline(transaction=not replicated)
        if replicated:
            queue_multi(pipe)
        for start in range(0, len(jobs), self.CHUNK):
            self._router.store(jobs[start : start + self.CHUNK], pipe=pipe)
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


_default: Producer | None = None
_default_lock = threading.Lock()


def default_producer() -> Producer:
    """The producer the module-level `enqueue_*` functions use, built from the environment."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Producer()
        return _default


def configure(
    settings: Settings | None = None, *, redis_client: redis.Redis | None = None
) -> Producer:
    """Replace the default producer (for applications that build `Settings` in code, and tests)."""
    global _default
    with _default_lock:
        _default = Producer(settings, redis_client=redis_client)
        return _default


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _on_default(method: Callable[Concatenate[Producer, _P], _R]) -> Callable[_P, _R]:
    """A module-level function with `method`'s signature and docs, calling the default producer."""

    @functools.wraps(method)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return method(default_producer(), *args, **kwargs)

    # Show the signature without `self` in help() and IDEs (wraps would expose the method's).
    signature = inspect.signature(method)
    call.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=list(signature.parameters.values())[1:]
    )
    return call


enqueue_identify = _on_default(Producer.enqueue_identify)
enqueue_track = _on_default(Producer.enqueue_track)
enqueue_track_anonymous = _on_default(Producer.enqueue_track_anonymous)
enqueue_page = _on_default(Producer.enqueue_page)
enqueue_delete = _on_default(Producer.enqueue_delete)
enqueue_merge = _on_default(Producer.enqueue_merge)
enqueue_suppress = _on_default(Producer.enqueue_suppress)
enqueue_unsuppress = _on_default(Producer.enqueue_unsuppress)
enqueue_add_device = _on_default(Producer.enqueue_add_device)
enqueue_remove_device = _on_default(Producer.enqueue_remove_device)
enqueue_send_email = _on_default(Producer.enqueue_send_email)
enqueue_send_push = _on_default(Producer.enqueue_send_push)
enqueue_send_sms = _on_default(Producer.enqueue_send_sms)
enqueue_broadcast = _on_default(Producer.enqueue_broadcast)
