"""Reads from Customer.io's App API through the shared limiter's `app` bucket: `AppClient`, and
`AsyncAppClient` for asyncio code (the face `cio_worker.aio.AppClient`).

People (search by filter, one person's attributes), segments, campaigns, a campaign's metrics,
broadcasts and one delivery's status. Every request first takes a slot from the same Redis bucket
the workers use, so reads and deliveries together stay under the App API's 10 requests/s, however
many processes read. Paged answers are followed through their `next` cursor to the end.

Each read is defined once, in reads.py (its request, its parser, paging, what a 404 means), and
made a method of both clients by _methods.py; the retry policy is defined once, in _requests.py
(`ReadAttempts`); settings, limiter and logs once, in `AppReaderBase`. What each client adds is
only the I/O: how a request is sent, how a slot is waited for, how a pause between tries is spent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import httpx
import redis

from cio_worker import logs
from cio_worker.app_api import _reads as reads
from cio_worker.app_api._methods import as_coroutine, as_method
from cio_worker.app_api._reads import One, Pager, Pages
from cio_worker.app_api._requests import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_READ_DEADLINE_S,
    AppRequest,
    ReadAttempts,
    check_app_key,
)
from cio_worker.config import Settings
from cio_worker.connection import get_redis
from cio_worker.customerio import AsyncCustomerIoClient, CustomerIoClient, route_of
from cio_worker.errors import RateLimitedError, RejectedError, RetryableError
from cio_worker.limiter import Limiter

log = logs.get_logger(__name__)

T = TypeVar("T")


class AppReaderBase:
    """What both clients share: settings, the key check, the limiter and the retry decisions."""

    def __init__(
        self,
        settings: Settings | None,
        *,
        redis_client: redis.Redis | None,
        max_wait_s: float,
        max_attempts: int,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings or Settings.from_env()
        check_app_key(self.settings)  # at construction, not at the first call
        self._limiter = Limiter(
            self.settings, redis_client or get_redis(self.settings), sleep=sleep
        )
        self._max_wait_s = max_wait_s
        self._max_attempts = max_attempts

    def _attempts(self) -> ReadAttempts:
        """The retry policy of one request."""
        return ReadAttempts(max_wait_s=self._max_wait_s, max_attempts=self._max_attempts)

    @staticmethod
    def _rate_limited(request: AppRequest, attempts: ReadAttempts, exc: RateLimitedError) -> None:
        """After a 429 (the bucket is paused already): log it; raise it past the deadline."""
        log.warning(
            "app_rate_limited", path=route_of(request.path), retry_s=exc.retry_after_seconds
        )
        attempts.rate_limited(exc)

    @staticmethod
    def _backoff(request: AppRequest, attempts: ReadAttempts, exc: RetryableError) -> float:
        """After a 5xx, 408 or transport failure: seconds to wait; raises when out of tries."""
        delay = attempts.failed(exc)
        log.warning("app_read_retry", path=route_of(request.path), error=str(exc), delay_s=delay)
        return delay


# -- The sync client -------------------------------------------------------------------------------
class AppClient(AppReaderBase):
    """Read from the App API; each request takes a slot from the shared `app` bucket first.

    Thread-safe (httpx's pool and redis-py's are). `get_*` methods return None when Customer.io
    answers 404. Errors are cio_worker's: `AuthError` (401/403), `RejectedError` (other 4xx),
    `RateLimitedError` (out of time waiting, or Redis unreachable), `ServerError`/`TransportError`
    (after `max_attempts`), `ValidationError` for bad arguments, `ConfigError` without a key.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        redis_client: redis.Redis | None = None,
        http_client: CustomerIoClient | None = None,
        max_wait_s: float = DEFAULT_READ_DEADLINE_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            settings,
            redis_client=redis_client,
            max_wait_s=max_wait_s,
            max_attempts=max_attempts,
            sleep=sleep,
        )
        self._owns_http = http_client is None
        self._http = http_client or CustomerIoClient(self.settings)
        self._sleep = sleep

    def close(self) -> None:
        """Close the HTTP connections this client opened (not one passed in)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> AppClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # How each shape of read is sent (the reads themselves follow, from reads.py) ------------------
    def _one(self, read: One[T]) -> T | None:
        try:
            body = self._call(read.request)
        except RejectedError as exc:
            read.raise_unless_not_found(exc)
            return None
        return read.parse(body)

    def _pages(self, read: Pages[T]) -> Iterator[T]:
        pager = Pager(read)
        while pager.request is not None:
            yield from pager.items(self._call(pager.request))
            pager.turn()

    def _list(self, read: Pages[T]) -> list[T]:
        return list(self._pages(read))

    def _call(self, request: AppRequest) -> Any:
        """One request's JSON answer, after a limiter slot; retried as ReadAttempts decides."""
        attempts = self._attempts()
        operation = request.operation()
        while True:
            self._take_slot(attempts)
            try:
                return self._http.send(operation).body
            except RateLimitedError as exc:  # a 429: pause the bucket for every process
                self._limiter.report_429("app", exc.retry_after_seconds)
                self._rate_limited(request, attempts, exc)
            except RetryableError as exc:  # 5xx, 408, timeouts, connection failures
                self._sleep(self._backoff(request, attempts, exc))

    def _take_slot(self, attempts: ReadAttempts) -> None:
        while True:
            try:
                self._limiter.acquire("app")
                return
            except RateLimitedError as exc:  # the slot is over a second away: wait, ask again
                self._sleep(attempts.slot_wait(exc))

    # The reads --------------------------------------------------------------------------------
    search_people = as_method(_list, reads.search_people)
    iter_people = as_method(_pages, reads.iter_people)
    get_person = as_method(_one, reads.get_person)
    list_segments = as_method(_list, reads.list_segments)
    list_campaigns = as_method(_list, reads.list_campaigns)
    list_broadcasts = as_method(_list, reads.list_broadcasts)
    get_campaign_metrics = as_method(_one, reads.get_campaign_metrics)
    get_delivery = as_method(_one, reads.get_delivery)
    list_person_messages = as_method(_list, reads.list_person_messages)
    list_broadcast_triggers = as_method(_list, reads.list_broadcast_triggers)


# -- The async client ------------------------------------------------------------------------------
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


class AsyncAppClient(AppReaderBase):
    """Read from the App API from asyncio code, through the shared `app` bucket.

    `async with AppClient() as app: people = await app.search_people(email="ada@example.com")`.
    Methods, results and errors are those of the sync `AppClient`, as coroutines (`iter_people`
    gives an async iterator). One instance belongs to one event loop (its connections do).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        redis_client: redis.Redis | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_wait_s: float = DEFAULT_READ_DEADLINE_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        super().__init__(
            settings, redis_client=redis_client, max_wait_s=max_wait_s, max_attempts=max_attempts
        )
        self._http = AsyncCustomerIoClient(self.settings, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncAppClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # How each shape of read is awaited (the reads themselves follow, from reads.py) ---------------
    async def _one(self, read: One[T]) -> T | None:
        try:
            body = await self._call(read.request)
        except RejectedError as exc:
            read.raise_unless_not_found(exc)
            return None
        return read.parse(body)

    async def _pages(self, read: Pages[T]) -> AsyncIterator[T]:
        pager = Pager(read)
        while pager.request is not None:
            for item in pager.items(await self._call(pager.request)):
                yield item
            pager.turn()

    async def _list(self, read: Pages[T]) -> list[T]:
        return [item async for item in self._pages(read)]

    async def _call(self, request: AppRequest) -> Any:
        """As `AppClient._call`; the limiter's Redis calls run in a thread, waits are awaited."""
        attempts = self._attempts()
        operation = request.operation()
        while True:
            await acquire_app_slot(self._limiter, attempts)
            try:
                return (await self._http.send(operation)).body
            except RateLimitedError as exc:  # a 429: pause the bucket for every process
                await asyncio.to_thread(self._limiter.report_429, "app", exc.retry_after_seconds)
                self._rate_limited(request, attempts, exc)
            except RetryableError as exc:  # 5xx, 408, timeouts, connection failures
                await asyncio.sleep(self._backoff(request, attempts, exc))

    # The reads, as coroutines (iter_people: an async iterator) ----------------------------------
    search_people = as_coroutine(_list, reads.search_people)
    iter_people = as_method(_pages, reads.iter_people)
    get_person = as_coroutine(_one, reads.get_person)
    list_segments = as_coroutine(_list, reads.list_segments)
    list_campaigns = as_coroutine(_list, reads.list_campaigns)
    list_broadcasts = as_coroutine(_list, reads.list_broadcasts)
    get_campaign_metrics = as_coroutine(_one, reads.get_campaign_metrics)
    get_delivery = as_coroutine(_one, reads.get_delivery)
    list_person_messages = as_coroutine(_list, reads.list_person_messages)
    list_broadcast_triggers = as_coroutine(_list, reads.list_broadcast_triggers)
