"""TEMPORARY: the async App API section cut out of aio.py, to be merged into its sync twin."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import httpx
import redis
import redis.asyncio
import structlog

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
    route_of,
)
from cio_worker.errors import (
    RateLimitedError,
    RejectedError,
    RetryableError,
    TransportError,
)
from cio_worker.limiter import Limiter

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
