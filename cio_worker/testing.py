"""A test mode for applications: enqueued jobs are kept in memory, not stored in Redis.

    import cio_worker
    from cio_worker.testing import capture

    def test_signup_tracks_the_event():
        with capture() as jobs:
            signup(email="ada@example.com")          # calls cio_worker.enqueue_track(...)
        jobs.assert_enqueued("track", user_id="ada@example.com", event="Signed Up")

Every call is validated exactly as a real enqueue is: the capturing producers are `Producer` and
`AsyncProducer` subclasses, so each `enqueue_*` runs the same job builder (produce/_jobs.py), and
a bad field raises the same `ValidationError`. Only the store differs: the job goes through the
JSON Redis would hold and into a list, and nothing connects to Redis. `jobs.deliver(sandbox_url)`
then sends each captured job through the worker's own request builder and HTTP client, so a
test can check what Customer.io would receive. With pytest, the `cio_jobs` fixture
(cio_worker/pytest_plugin.py) does the `with capture()` for one test.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, overload

from cio_worker.config import Settings
from cio_worker.customerio import Answer, CustomerIoClient, build_operation
from cio_worker.job import Job
from cio_worker.kinds import Kind
from cio_worker.produce import (
    AsyncProducer,
    BulkProducer,
    JobDraft,
    Producer,
    async_configure,
    async_default_producer,
    configure,
    default_producer,
    new_job,
)

__all__ = [
    "AsyncCapturingProducer",
    "CapturedJobs",
    "CapturingProducer",
    "capture",
    "current",
]

_active: list[CapturedJobs] = []
_active_lock = threading.Lock()


def current() -> CapturedJobs | None:
    """The innermost active `capture()`, if any (integrations such as
    `cio_worker.fastapi.lifespan` install its producer instead of a real one)."""
    with _active_lock:
        return _active[-1] if _active else None


class CapturedJobs(Sequence[Job]):
    """The jobs enqueued while a capture is active, in order, as a worker would read them."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._jobs: list[Job] = []
        self._lock = threading.Lock()
        self._delivered = 0
        #: The producer `cio_worker.enqueue_*` use while the capture is active.
        self.producer = CapturingProducer(self, settings)
        #: Its asyncio twin (`cio_worker.aio.enqueue_*`); see `install_async`.
        self.async_producer = AsyncCapturingProducer(self, settings)

    # -- Sequence ----------------------------------------------------------------------------
    @overload
    def __getitem__(self, index: int) -> Job: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Job]: ...
    def __getitem__(self, index: int | slice) -> Job | Sequence[Job]:
        with self._lock:
            return self._jobs[index]

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def __iter__(self) -> Iterator[Job]:
        with self._lock:
            return iter(list(self._jobs))

    def __repr__(self) -> str:
        return f"<CapturedJobs: {len(self)} job(s)>"

    # -- Asserting -----------------------------------------------------------------------------
    def of_kind(self, kind: Kind | str) -> list[Job]:
        """The captured jobs of `kind` (`"track"` or `Kind.TRACK`), in enqueue order."""
        wanted = _kind(kind)
        return [job for job in self if job.kind is wanted]

    def assert_enqueued(self, kind: Kind | str, /, **fields: Any) -> list[Job]:
        """The jobs of `kind` whose payload has each of `fields` with exactly that value; at
        least one, else AssertionError listing what was enqueued. The payload is the stored
        one: ids and names as given, `properties`/`traits` as JSON objects, `timestamp` as Unix
        seconds (a datetime given to enqueue is converted)."""
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        wanted = _kind(kind)
        jobs = self.of_kind(wanted)
        unknown = sorted({name for name in fields if all(name not in j.payload for j in jobs)})
        if jobs and unknown:
            known = sorted({name for job in jobs for name in job.payload})
            raise AssertionError(
                f"{wanted.value} payloads have no field {', '.join(map(repr, unknown))} "
                f"(their fields: {', '.join(known)})"
            )
        matching = [job for job in jobs if _matches(job, fields)]
        if not matching:
            wanted_text = ", ".join(f"{name}={value!r}" for name, value in fields.items())
            raise AssertionError(
                f"no {wanted.value} job{' with ' + wanted_text if wanted_text else ''} was "
                f"enqueued; {self._listing()}"
            )
        return matching

    def assert_nothing_enqueued(self) -> None:
        __tracebackhide__ = True
        if len(self):
            raise AssertionError(f"expected no job to be enqueued; {self._listing()}")

    def clear(self) -> None:
        """Forget every captured job."""
        with self._lock:
            self._jobs.clear()
            self._delivered = 0

    def _listing(self) -> str:
        jobs = list(self)
        if not jobs:
            return "nothing was enqueued"
        lines = "\n".join(f"  {job.kind.value} {job.payload!r}" for job in jobs)
        return f"{len(jobs)} job(s) were:\n{lines}"

    # -- Delivering ----------------------------------------------------------------------------
    def deliver(self, sandbox_url: str) -> list[Answer]:
        """Send each captured job not delivered yet to the sandbox at `sandbox_url`
        (`cio-worker sandbox`), one request each, built and sent as a worker sends it (with
        the application's `CIO_WORKER_DATA_API`, but the sandbox's URL and credentials, never
        Customer.io's). Returns the answers; a job the sandbox refuses raises the worker's
        `DeliveryError` (e.g. `RejectedError` with the sandbox's reason), as it would be
        dead-lettered. Requests go one at a time: no rate limiter, no batching."""
        settings = sandbox_settings(sandbox_url)
        client = CustomerIoClient(settings)
        answers = []
        try:
            while (job := self._next_undelivered()) is not None:
                answers.append(client.send(build_operation(job, settings), job_id=job.id))
                with self._lock:
                    self._delivered += 1
        finally:
            client.close()
        return answers

    def _next_undelivered(self) -> Job | None:
        with self._lock:
            return self._jobs[self._delivered] if self._delivered < len(self._jobs) else None

    # -- Installing ----------------------------------------------------------------------------
    def install_async(self) -> AsyncCapturingProducer:
        """Make `async_producer` the running event loop's default, for a loop started after
        the capture began (`asyncio.run(...)` in a test): call it first thing in the coroutine.
        The loop's default goes with the loop."""
        return self._install_async()

    def _install_async(self) -> AsyncCapturingProducer:
        async_configure(producer=self.async_producer)
        return self.async_producer

    def _record(self, draft: JobDraft) -> Job:
        """The job a real store would hold: encoded to the JSON Redis would be given (a value
        Redis could not take fails here the same way), read back as a worker reads it."""
        job = new_job(draft)
        return Job.from_json(job.to_json().encode("utf-8"))

    def _keep(self, jobs: Sequence[Job]) -> None:
        with self._lock:
            self._jobs.extend(jobs)


def sandbox_settings(sandbox_url: str) -> Settings:
    """Settings that reach only the sandbox: the environment without any CUSTOMERIO_* variable
    (credentials, base URLs, region), with CIO_WORKER_SANDBOX_URL = `sandbox_url`."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMERIO_")}
    return Settings.from_env({**environ, "CIO_WORKER_SANDBOX_URL": sandbox_url})


class CapturingProducer(Producer):
    """A `Producer` whose jobs go to a `CapturedJobs` list. It has no Redis client."""

    def __init__(self, jobs: CapturedJobs, settings: Settings | None = None) -> None:
        # Not Producer.__init__: that builds a Redis client and a job writer.
        self.settings = settings or Settings.from_env()
        self.captured = jobs

    def _store(self, draft: JobDraft) -> str:
        job = self.captured._record(draft)
        self.captured._keep([job])
        return job.id

    def pipeline(self, *, flush_every: int = 10_000) -> BulkProducer:
        """A bulk producer whose flushes go to the same list (an exception inside the block
        discards the jobs not flushed yet, as a real one does)."""
        return CapturingBulkProducer(self, flush_every=flush_every)


class CapturingBulkProducer(BulkProducer):
    """`Producer.pipeline()` in test mode: collects, and keeps the jobs when it flushes."""

    def __init__(self, parent: CapturingProducer, *, flush_every: int) -> None:
        # Not BulkProducer.__init__: no Redis client, no writer thread.
        self.settings = parent.settings
        self.captured = parent.captured
        self._flush_every = max(1, flush_every)
        self._collected: list[Job] = []
        self.stored = 0

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self.flush()
        else:
            self._collected.clear()

    def _store(self, draft: JobDraft) -> str:
        job = self.captured._record(draft)
        self._collected.append(job)
        if len(self._collected) >= self._flush_every:
            self.flush()
        return job.id

    def flush(self) -> int:
        jobs, self._collected = self._collected, []
        self.captured._keep(jobs)
        self.stored += len(jobs)
        return len(jobs)


class AsyncCapturingProducer(AsyncProducer):
    """An `AsyncProducer` whose jobs go to a `CapturedJobs` list. It has no Redis client."""

    def __init__(self, jobs: CapturedJobs, settings: Settings | None = None) -> None:
        # Not AsyncProducer.__init__: that builds a Redis client and a job writer.
        self.settings = settings or Settings.from_env()
        self.captured = jobs

    async def _store(self, draft: JobDraft) -> str:
        job = self.captured._record(draft)
        self.captured._keep([job])
        return job.id

    async def aclose(self) -> None:
        """Nothing to close."""


class capture:  # noqa: N801 - used as a function: `with capture() as jobs:`
    """Capture every job enqueued inside the block (see the module).

    While active, `cio_worker.enqueue_*` and `cio_worker.Producer`-typed code given
    `jobs.producer` keep jobs in memory; `cio_worker.aio.enqueue_*` too on the event loop
    running when the block starts (if any), and on any loop that calls `jobs.install_async()`
    or runs `cio_worker.fastapi.lifespan`. On exit the previous default producers come back.
    Captures nest: the innermost one gets the jobs.
    """

    def __init__(self, *, settings: Settings | None = None) -> None:
        self.jobs = CapturedJobs(settings)
        self._previous: Producer | None = None
        self._previous_async: AsyncProducer | None = None

    def __enter__(self) -> CapturedJobs:
        # default_producer() builds the environment's producer if none was used yet: its Redis
        # client connects on its first command, which never comes while the capture is active.
        self._previous = default_producer()
        if _running_loop() is not None:
            self._previous_async = async_default_producer()
            self.jobs._install_async()
        configure(producer=self.jobs.producer)
        with _active_lock:
            _active.append(self.jobs)
        return self.jobs

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with _active_lock:
            _active.remove(self.jobs)
        configure(producer=self._previous)
        if self._previous_async is not None and _running_loop() is not None:
            async_configure(producer=self._previous_async)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _kind(kind: Kind | str) -> Kind:
    if isinstance(kind, Kind):
        return kind
    try:
        return Kind(kind)
    except ValueError:
        names = ", ".join(k.value for k in Kind)
        raise ValueError(f"kind: {kind!r} is not a job kind (one of: {names})") from None


def _matches(job: Job, fields: dict[str, Any]) -> bool:
    return all(name in job.payload and job.payload[name] == value for name, value in fields.items())
