"""Reads from Customer.io's App API through the shared limiter's `app` bucket.

People (search by filter, one person's attributes), segments, campaigns, a campaign's metrics,
broadcasts and one delivery's status. Every request first takes a slot from the same Redis bucket
the workers use, so reads and deliveries together stay under the App API's 10 requests/s, however
many processes read. Paged answers are followed through their `next` cursor to the end.

Requests are built by pure functions in app_requests.py (with the retry policy, `ReadAttempts`)
and answers parsed into the typed results of app_models.py; this module re-exports both.
`cio_worker.aio.AppClient` is the async twin and shares all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import redis
import structlog

from cio_worker.app_api._models import (
    Broadcast,
    Campaign,
    CampaignMetrics,
    Delivery,
    Device,
    Person,
    PersonRef,
    Segment,
    Trigger,
    delivery_status,
    parse_broadcasts,
    parse_campaigns,
    parse_delivery,
    parse_messages_page,
    parse_metrics,
    parse_person,
    parse_search_page,
    parse_segments,
    parse_triggers,
)
from cio_worker.app_api._requests import (
    BROADCASTS,
    CAMPAIGNS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_WAIT_S,
    MAX_PAGE_SIZE,
    SEGMENTS,
    AppRequest,
    IdType,
    ReadAttempts,
    Resolution,
    T,
    broadcast_triggers_request,
    check_app_key,
    delivery_request,
    is_not_found,
    metrics_request,
    next_page,
    people_filter,
    person_messages_request,
    person_request,
    search_request,
)
from cio_worker.config import Settings
from cio_worker.connection import get_redis
from cio_worker.customerio import CustomerIoClient, route_of
from cio_worker.errors import (
    RateLimitedError,
    RejectedError,
    RetryableError,
    UnexpectedResponseError,
)
from cio_worker.limiter import Limiter

log = structlog.get_logger("cio_worker.app_client")


# -- The sync client -------------------------------------------------------------------------------
class AppClient:
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
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings or Settings.from_env()
        check_app_key(self.settings)
        self._limiter = Limiter(
            self.settings, redis_client or get_redis(self.settings), sleep=sleep
        )
        self._owns_http = http_client is None
        self._http = http_client or CustomerIoClient(self.settings)
        self._max_wait_s = max_wait_s
        self._max_attempts = max_attempts
        self._sleep = sleep

    def close(self) -> None:
        """Close the HTTP connections this client opened (not one passed in)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> AppClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # People ---------------------------------------------------------------------------------------
    def search_people(
        self,
        filter: Mapping[str, Any] | None = None,
        *,
        email: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> list[PersonRef]:
        """Everyone matching `filter` and/or `email`, every page followed to the end."""
        return list(self.iter_people(filter, email=email, page_size=page_size))

    def iter_people(
        self,
        filter: Mapping[str, Any] | None = None,
        *,
        email: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[PersonRef]:
        """As search_people, one page fetched at a time as the iterator is consumed."""
        request = search_request(people_filter(filter, email), page_size=page_size)
        return self._pages(request, parse_search_page)

    def get_person(self, person_id: str, *, id_type: IdType = "id") -> Person | None:
        """A person's attributes, identifiers, devices and subscription state; None if unknown."""
        return self._one(person_request(person_id, id_type), parse_person)

    # Segments, campaigns, broadcasts --------------------------------------------------------------
    def list_segments(self) -> list[Segment]:
        return list(self._pages(SEGMENTS, parse_segments))

    def list_campaigns(self) -> list[Campaign]:
        return list(self._pages(CAMPAIGNS, parse_campaigns))

    def list_broadcasts(self) -> list[Broadcast]:
        return list(self._pages(BROADCASTS, parse_broadcasts))

    def get_campaign_metrics(
        self,
        campaign_id: int,
        *,
        res: Resolution = "days",
        start: object = None,
        end: object = None,
        tz: str | None = None,
    ) -> CampaignMetrics | None:
        """Counts per metric and period (`res`), oldest first; None if the campaign is unknown.

        `start`/`end` are Unix seconds or aware datetimes; `tz` a region name (Customer.io's
        default is EST).
        """
        request = metrics_request(campaign_id, res=res, start=start, end=end, tz=tz)
        return self._one(request, lambda body: parse_metrics(body, campaign_id, res))

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        """One delivery (a message sent to one person) and its status; None if unknown."""
        return self._one(delivery_request(delivery_id), parse_delivery)

    # What was sent (reconcile.py asks these after an ambiguous send) -----------------------------
    def list_person_messages(
        self,
        person_id: str,
        *,
        id_type: IdType = "id",
        start_ts: int | None = None,
        end_ts: int | None = None,
    ) -> list[Delivery]:
        """Deliveries to one person created in [start_ts, end_ts] (Unix seconds), every page."""
        request = person_messages_request(
            person_id, id_type=id_type, start_ts=start_ts, end_ts=end_ts
        )
        return list(self._pages(request, parse_messages_page))

    def list_broadcast_triggers(self, broadcast_id: int) -> list[Trigger]:
        """Every trigger of an API broadcast, with the time each was created."""
        return list(self._pages(broadcast_triggers_request(broadcast_id), parse_triggers))

    # Plumbing -------------------------------------------------------------------------------------
    def _one(self, request: AppRequest, parse: Callable[[Any], T]) -> T | None:
        try:
            body = self._call(request)
        except RejectedError as exc:
            if is_not_found(exc):
                return None
            raise
        return parse(body)

    def _pages(
        self, request: AppRequest, parse: Callable[[Any], tuple[list[T], str | None]]
    ) -> Iterator[T]:
        seen: set[str] = set()
        current: AppRequest | None = request
        while current is not None:
            items, cursor = parse(self._call(current))
            yield from items
            current = next_page(current, cursor, seen)

    def _call(self, request: AppRequest) -> Any:
        """One request's JSON answer, after a limiter slot; retried as ReadAttempts decides."""
        attempts = ReadAttempts(max_wait_s=self._max_wait_s, max_attempts=self._max_attempts)
        operation = request.operation()
        while True:
            self._take_slot(attempts)
            try:
                return self._http.send(operation).body
            except RateLimitedError as exc:  # a 429: pause the bucket for every process
                self._limiter.report_429("app", exc.retry_after_seconds)
                log.warning(
                    "app_rate_limited", path=route_of(request.path), retry_s=exc.retry_after_seconds
                )
                attempts.rate_limited(exc)
            except RetryableError as exc:  # 5xx, 408, timeouts, connection failures
                delay = attempts.failed(exc)
                log.warning(
                    "app_read_retry", path=route_of(request.path), error=str(exc), delay_s=delay
                )
                self._sleep(delay)

    def _take_slot(self, attempts: ReadAttempts) -> None:
        while True:
            try:
                self._limiter.acquire("app")
                return
            except RateLimitedError as exc:  # the slot is over a second away: wait, ask again
                self._sleep(attempts.slot_wait(exc))


__all__ = [
    "AppClient",
    "AppRequest",
    "BROADCASTS",
    "Broadcast",
    "CAMPAIGNS",
    "Campaign",
    "CampaignMetrics",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_WAIT_S",
    "Delivery",
    "Device",
    "IdType",
    "MAX_PAGE_SIZE",
    "Person",
    "PersonRef",
    "ReadAttempts",
    "Resolution",
    "SEGMENTS",
    "Segment",
    "Trigger",
    "UnexpectedResponseError",
    "check_app_key",
    "delivery_request",
    "delivery_status",
    "is_not_found",
    "metrics_request",
    "next_page",
    "parse_broadcasts",
    "parse_campaigns",
    "parse_delivery",
    "parse_metrics",
    "parse_person",
    "parse_search_page",
    "parse_segments",
    "people_filter",
    "person_request",
    "search_request",
]
