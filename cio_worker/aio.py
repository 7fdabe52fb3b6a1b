"""cio_worker for asyncio applications.

Sections:
- HTTP and limiter plumbing that never blocks the event loop (`AsyncHttp`, `acquire_app_slot`);
- App API reads: `AppClient`, the async twin of `cio_worker.AppClient` (same requests,
  parsers, typed results and retry policy; only the waiting and the I/O differ);
- `AsyncProducer` and the module-level `enqueue_*` coroutines: the producer API, awaitable.

The limiter is the same Redis bucket the workers and sync readers use: its one script call runs in
a worker thread (`asyncio.to_thread`) so a slow Redis cannot stall the loop, and the wait for the
slot is an `asyncio.sleep`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx
import redis
import redis.asyncio
import structlog
from redis.exceptions import NoScriptError

from cio_worker import connection
from cio_worker.app_api import (
    BROADCASTS,
    CAMPAIGNS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_WAIT_S,
    MAX_PAGE_SIZE,
    SEGMENTS,
    AppRequest,
    Broadcast,
    Campaign,
    CampaignMetrics,
    Delivery,
    IdType,
    Person,
    PersonRef,
    ReadAttempts,
    Resolution,
    Segment,
    check_app_key,
    delivery_request,
    is_not_found,
    metrics_request,
    next_page,
    parse_broadcasts,
    parse_campaigns,
    parse_delivery,
    parse_metrics,
    parse_person,
    parse_search_page,
    parse_segments,
    people_filter,
    person_request,
    search_request,
)
from cio_worker.config import Settings
from cio_worker.connection import get_redis

# client.py has no async client yet; until it does, this module maps answers with its function.
from cio_worker.customerio import (
    MAX_CONNECTIONS,
    USER_AGENT,
    Delivered,
    HttpOperation,
    _outcome,
    batch_item_json,
    route_of,
)
from cio_worker.errors import (
    EnqueueError,
    RateLimitedError,
    RejectedError,
    RetryableError,
    TransportError,
)
from cio_worker.ids import new_ulid
from cio_worker.job import Job
from cio_worker.kinds import Kind
from cio_worker.limiter import Limiter
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

T = TypeVar("T")


# -- Plumbing --------------------------------------------------------------------------------------
class AsyncHttp:
    """The App API over one `httpx.AsyncClient`, answers mapped to errors.py as client.py does."""

    def __init__(
        self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        check_app_key(settings)
        timeout = httpx.Timeout(settings.http_timeout_s, connect=min(settings.http_timeout_s, 5.0))
        self._http = httpx.AsyncClient(
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
            ),
            follow_redirects=False,  # a cross-host redirect must not carry our Authorization
        )
        self._base = settings.app_url
        self._settings = settings

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, op: HttpOperation) -> Delivered:
        """One request; return on 2xx, raise a `DeliveryError` subclass otherwise."""
        headers = {**op.headers, "Authorization": f"Bearer {self._settings.app_api_key}"}
        started = time.monotonic()
        try:
            response = await self._http.request(
                op.method, self._base + op.path, json=op.json, headers=headers
            )
        except httpx.TimeoutException as exc:
            sent = not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            message = f"{type(exc).__name__} after {self._settings.http_timeout_s:g}s"
            raise TransportError(message, request_sent=sent) from exc
        except httpx.TransportError as exc:
            sent = not isinstance(exc, httpx.ConnectError)
            raise TransportError(f"{type(exc).__name__}: {exc}", request_sent=sent) from exc
        return _outcome(op, response, time.monotonic() - started, None)


async def acquire_app_slot(limiter: Limiter, attempts: ReadAttempts) -> None:
    """Wait, without blocking the loop, for a slot in the shared `app` bucket.

    Raises RateLimitedError when Redis is unreachable or the slot is beyond the read's deadline.
    """
    while True:
        granted, wait_s = await asyncio.to_thread(limiter.reserve, "app")
        if granted:
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            return
        busy = RateLimitedError(f"app bucket busy for {wait_s:.3f}s", retry_after_seconds=wait_s)
        await asyncio.sleep(attempts.slot_wait(busy))


# -- App API reads ---------------------------------------------------------------------------------
class AppClient:
    """Read from the App API from asyncio code, through the shared `app` bucket.

    `async with AppClient() as app: people = await app.search_people(email="ada@example.com")`.
    Methods, results and errors are those of `cio_worker.app_api._client.AppClient`. One instance
    belongs to one event loop (its HTTP connections do).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        redis_client: redis.Redis | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self._http = AsyncHttp(self.settings, transport=transport)
        self._limiter = Limiter(self.settings, redis_client or get_redis(self.settings))
        self._max_wait_s = max_wait_s
        self._max_attempts = max_attempts

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AppClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def search_people(
        self,
        filter: Mapping[str, Any] | None = None,
        *,
        email: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> list[PersonRef]:
        """Everyone matching `filter` and/or `email`, every page followed to the end."""
        return [
            person async for person in self.iter_people(filter, email=email, page_size=page_size)
        ]

    def iter_people(
        self,
        filter: Mapping[str, Any] | None = None,
        *,
        email: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncIterator[PersonRef]:
        """As search_people, one page fetched at a time as the iterator is consumed."""
        request = search_request(people_filter(filter, email), page_size=page_size)
        return self._pages(request, parse_search_page)

    async def get_person(self, person_id: str, *, id_type: IdType = "id") -> Person | None:
        return await self._one(person_request(person_id, id_type), parse_person)

    async def list_segments(self) -> list[Segment]:
        return [segment async for segment in self._pages(SEGMENTS, parse_segments)]

    async def list_campaigns(self) -> list[Campaign]:
        return [campaign async for campaign in self._pages(CAMPAIGNS, parse_campaigns)]

    async def list_broadcasts(self) -> list[Broadcast]:
        return [broadcast async for broadcast in self._pages(BROADCASTS, parse_broadcasts)]

    async def get_campaign_metrics(
        self,
        campaign_id: int,
        *,
        res: Resolution = "days",
        start: object = None,
        end: object = None,
        tz: str | None = None,
    ) -> CampaignMetrics | None:
        request = metrics_request(campaign_id, res=res, start=start, end=end, tz=tz)
        return await self._one(request, lambda body: parse_metrics(body, campaign_id, res))

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        return await self._one(delivery_request(delivery_id), parse_delivery)

    async def _one(self, request: AppRequest, parse: Callable[[Any], T]) -> T | None:
        try:
            body = await self._call(request)
        except RejectedError as exc:
            if is_not_found(exc):
                return None
            raise
        return parse(body)

    async def _pages(
        self, request: AppRequest, parse: Callable[[Any], tuple[list[T], str | None]]
    ) -> AsyncIterator[T]:
        seen: set[str] = set()
        current: AppRequest | None = request
        while current is not None:
            items, cursor = parse(await self._call(current))
            for item in items:
                yield item
            current = next_page(current, cursor, seen)

    async def _call(self, request: AppRequest) -> Any:
        attempts = ReadAttempts(max_wait_s=self._max_wait_s, max_attempts=self._max_attempts)
        operation = request.operation()
        while True:
            await acquire_app_slot(self._limiter, attempts)
            try:
                return (await self._http.send(operation)).body
            except RateLimitedError as exc:  # a 429: pause the bucket for every process
                await asyncio.to_thread(self._limiter.report_429, "app", exc.retry_after_seconds)
                log.warning(
                    "app_rate_limited", path=route_of(request.path), retry_s=exc.retry_after_seconds
                )
                attempts.rate_limited(exc)
            except RetryableError as exc:  # 5xx, 408, timeouts, connection failures
                delay = attempts.failed(exc)
                log.warning(
                    "app_read_retry", path=route_of(request.path), error=str(exc), delay_s=delay
                )
                await asyncio.sleep(delay)


__all__ = ["AppClient", "AsyncHttp", "acquire_app_slot"]


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
