"""Reads from Customer.io's App API through the shared limiter's `app` bucket.

People (search by filter, one person's attributes), segments, campaigns, a campaign's metrics,
broadcasts and one delivery's status. Every request first takes a slot from the same Redis bucket
the workers use, so reads and deliveries together stay under the App API's 10 requests/s, however
many processes read. Paged answers are followed through their `next` cursor to the end.

Requests are built and answers parsed into typed results by pure functions in this module;
`cio_worker.aio.AppClient` is the async twin and shares them and the retry policy (`ReadAttempts`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode

import redis
import structlog

from cio_worker import validation
from cio_worker.backoff import compute_backoff_s
from cio_worker.client import CustomerIoClient
from cio_worker.config import Settings
from cio_worker.connection import get_redis
from cio_worker.errors import (
    ConfigError,
    RateLimitedError,
    RejectedError,
    RetryableError,
    UnexpectedResponseError,
    ValidationError,
)
from cio_worker.limiter import Limiter
from cio_worker.operations import HttpOperation, segment

log = structlog.get_logger("cio_worker.app_client")

T = TypeVar("T")
IdType = Literal["id", "email", "cio_id"]
Resolution = Literal["hours", "days", "weeks", "months"]

#: Customer.io's largest page for a people search; fewer pages spend fewer of the 10 requests/s.
MAX_PAGE_SIZE = 1000
#: How long one read may wait in total for limiter slots, 429 pauses and retries, seconds.
DEFAULT_MAX_WAIT_S = 60.0
#: Tries of one request that meets 5xx, 408 or a connection failure (reads are idempotent).
DEFAULT_MAX_ATTEMPTS = 4
#: Backoff between those tries: full jitter from 0.5 s, at most 8 s.
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0
#: A 429 or a busy bucket with no hint waits this long.
DEFAULT_RATE_LIMIT_WAIT_S = 1.0

_FILTER_KEYS = ("and", "or", "not", "segment", "attribute")
_RESOLUTIONS = ("hours", "days", "weeks", "months")


# -- Typed results ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PersonRef:
    """One person a search matched, by Customer.io's identifiers (any may be unset but cio_id)."""

    cio_id: str | None
    id: str | None
    email: str | None


@dataclass(frozen=True, slots=True)
class Device:
    """A person's mobile device; `last_used` in Unix seconds."""

    id: str
    platform: str | None
    last_used: int | None


@dataclass(frozen=True, slots=True)
class Person:
    """A profile: identifiers, attributes (Customer.io keeps their values as strings), the Unix
    time each attribute was last set, subscription state and devices."""

    cio_id: str | None
    id: str | None
    email: str | None
    attributes: dict[str, Any]
    timestamps: dict[str, int]
    unsubscribed: bool
    devices: tuple[Device, ...]


@dataclass(frozen=True, slots=True)
class Segment:
    """A segment; `state` is its build state (`finished` when done), `progress` a percentage."""

    id: int
    name: str
    description: str | None
    type: str | None
    state: str | None
    progress: int | None
    tags: tuple[str, ...]
    created_at: int | None
    updated_at: int | None


@dataclass(frozen=True, slots=True)
class Campaign:
    """A campaign; `state` is running, draft or stopped; times in Unix seconds."""

    id: int
    name: str
    state: str | None
    active: bool | None
    type: str | None
    created: int | None
    updated: int | None
    first_started: int | None
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Broadcast:
    """An API-triggered broadcast; times in Unix seconds."""

    id: int
    name: str
    state: str | None
    active: bool | None
    created: int | None
    updated: int | None
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CampaignMetrics:
    """Counts per metric (sent, delivered, opened, bounced...), one per period of `res`,
    oldest first."""

    campaign_id: int
    res: str
    series: dict[str, tuple[int, ...]]

    @property
    def totals(self) -> dict[str, int]:
        """Each metric summed over all periods."""
        return {metric: sum(counts) for metric, counts in self.series.items()}


#: A delivery's metrics from first to last reached; `status` is the latest (ties go later).
DELIVERY_METRICS = (
    "created", "drafted", "attempted", "sent", "delivered", "opened", "clicked", "converted",
    "unsubscribed", "dropped", "suppressed", "deferred", "undeliverable", "failed", "bounced",
    "spammed",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message sent to one person; `metrics` maps each metric reached to its Unix time."""

    id: str
    status: str | None
    type: str | None
    recipient: str | None
    customer_id: str | None
    campaign_id: int | None
    broadcast_id: int | None
    action_id: int | None
    created: int | None
    metrics: dict[str, int]
    failure_message: str | None
    forgotten: bool


def delivery_status(metrics: Mapping[str, int]) -> str | None:
    """The metric reached last; on equal times the one later in a delivery's life."""
    rank = {name: index for index, name in enumerate(DELIVERY_METRICS)}
    if not metrics:
        return None
    return max(metrics, key=lambda name: (metrics[name], rank.get(name, -1)))


# -- Parsers: strict about the shape Customer.io promises, lenient about optional fields ----------
def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UnexpectedResponseError(f"{where}: expected a JSON object")
    return value


def _items(body: object, key: str, where: str) -> list[Mapping[str, Any]]:
    items = _object(body, where).get(key)
    if not isinstance(items, list) or not all(isinstance(item, Mapping) for item in items):
        raise UnexpectedResponseError(f"{where}: `{key}` is not a list of objects")
    return items


def _cursor(body: object) -> str | None:
    value = _object(body, "page").get("next")
    return str(value) if value else None


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _flag(value: object) -> bool | None:
    # Profile attributes come back as strings: "true"/"false".
    return value if isinstance(value, bool) else {"true": True, "false": False}.get(str(value))


def _tags(value: object) -> tuple[str, ...]:
    return tuple(str(tag) for tag in value) if isinstance(value, list) else ()


def _id(item: Mapping[str, Any], where: str) -> int:
    value = _int(item.get("id"))
    if value is None:
        raise UnexpectedResponseError(f"{where}: an item has no integer id")
    return value


def parse_search_page(body: object) -> tuple[list[PersonRef], str | None]:
    """One page of `POST /v1/customers`: `identifiers` (or the older `ids`) and `next`."""
    where = "POST /v1/customers"
    if "identifiers" in _object(body, where):
        people = [
            PersonRef(_text(i.get("cio_id")), _text(i.get("id")), _text(i.get("email")))
            for i in _items(body, "identifiers", where)
        ]
    else:
        ids = _object(body, where).get("ids")
        if not isinstance(ids, list):
            raise UnexpectedResponseError(f"{where}: neither `identifiers` nor `ids` is a list")
        people = [PersonRef(None, _text(value), None) for value in ids]
    return people, _cursor(body)


def parse_person(body: object) -> Person:
    """`GET /v1/customers/{id}/attributes`: `{"customer": {...}}`."""
    customer = _object(_object(body, "attributes").get("customer"), "attributes: customer")
    identifiers = customer.get("identifiers") or {}
    attributes = dict(customer.get("attributes") or {})
    timestamps = customer.get("timestamps") or {}
    devices = customer.get("devices") or []
    return Person(
        cio_id=_text(identifiers.get("cio_id") or attributes.get("cio_id")),
        id=_text(identifiers.get("id") or customer.get("id")),
        email=_text(identifiers.get("email") or attributes.get("email")),
        attributes=attributes,
        timestamps={name: t for name, t in timestamps.items() if _int(t) is not None},
        unsubscribed=bool(_flag(customer.get("unsubscribed", attributes.get("unsubscribed")))),
        devices=tuple(
            Device(str(d.get("id")), _text(d.get("platform")), _int(d.get("last_used")))
            for d in devices
            if isinstance(d, Mapping) and d.get("id") is not None
        ),
    )


def parse_segments(body: object) -> tuple[list[Segment], str | None]:
    """`GET /v1/segments`: `{"segments": [...]}`."""
    where = "GET /v1/segments"
    segments = [
        Segment(
            id=_id(s, where),
            name=str(s.get("name", "")),
            description=_text(s.get("description")),
            type=_text(s.get("type")),
            state=_text(s.get("state")),
            progress=_int(s.get("progress")),
            tags=_tags(s.get("tags")),
            created_at=_int(s.get("created_at")),
            updated_at=_int(s.get("updated_at")),
        )
        for s in _items(body, "segments", where)
    ]
    return segments, _cursor(body)


def parse_campaigns(body: object) -> tuple[list[Campaign], str | None]:
    """`GET /v1/campaigns`: `{"campaigns": [...]}`."""
    where = "GET /v1/campaigns"
    campaigns = [
        Campaign(
            id=_id(c, where),
            name=str(c.get("name", "")),
            state=_text(c.get("state")),
            active=_flag(c.get("active")),
            type=_text(c.get("type")),
            created=_int(c.get("created")),
            updated=_int(c.get("updated")),
            first_started=_int(c.get("first_started")),
            tags=_tags(c.get("tags")),
        )
        for c in _items(body, "campaigns", where)
    ]
    return campaigns, _cursor(body)


def parse_broadcasts(body: object) -> tuple[list[Broadcast], str | None]:
    """`GET /v1/broadcasts`: `{"broadcasts": [...]}`."""
    where = "GET /v1/broadcasts"
    broadcasts = [
        Broadcast(
            id=_id(b, where),
            name=str(b.get("name", "")),
            state=_text(b.get("state")),
            active=_flag(b.get("active")),
            created=_int(b.get("created")),
            updated=_int(b.get("updated")),
            tags=_tags(b.get("tags")),
        )
        for b in _items(body, "broadcasts", where)
    ]
    return broadcasts, _cursor(body)


def parse_metrics(body: object, campaign_id: int, res: str) -> CampaignMetrics:
    """`GET /v1/campaigns/{id}/metrics`: `{"metric": {"series": {name: [count, ...]}}}`."""
    where = f"GET /v1/campaigns/{campaign_id}/metrics"
    series = _object(_object(_object(body, where).get("metric"), where).get("series"), where)
    parsed: dict[str, tuple[int, ...]] = {}
    for metric, counts in series.items():
        if not isinstance(counts, list) or any(_int(count) is None for count in counts):
            raise UnexpectedResponseError(f"{where}: series {metric!r} is not a list of counts")
        parsed[str(metric)] = tuple(int(count) for count in counts)
    return CampaignMetrics(campaign_id, res, parsed)


def parse_delivery(body: object) -> Delivery:
    """`GET /v1/messages/{id}`: `{"message": {...}}`."""
    message = _object(_object(body, "message").get("message"), "GET /v1/messages: message")
    raw_metrics = message.get("metrics") or {}
    metrics = {str(name): int(t) for name, t in raw_metrics.items() if _int(t) is not None}
    return Delivery(
        id=str(message.get("id", "")),
        status=delivery_status(metrics),
        type=_text(message.get("type")),
        recipient=_text(message.get("recipient")),
        customer_id=_text(message.get("customer_id")),
        campaign_id=_int(message.get("campaign_id")),
        broadcast_id=_int(message.get("broadcast_id")),
        action_id=_int(message.get("action_id")),
        created=_int(message.get("created")),
        metrics=metrics,
        failure_message=_text(message.get("failure_message")),
        forgotten=bool(message.get("forgotten")),
    )


@dataclass(frozen=True, slots=True)
class AppRequest:
    """One App API read: method, path (segments already encoded), query pairs, JSON body."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    json: dict[str, Any] | None = None

    def with_start(self, cursor: str) -> AppRequest:
        """The same request asking for the page that starts at `cursor`."""
        query = tuple(pair for pair in self.query if pair[0] != "start")
        return replace(self, query=(*query, ("start", cursor)))

    def operation(self) -> HttpOperation:
        """The request as client.py sends it, drawing from the `app` bucket."""
        path = f"{self.path}?{urlencode(self.query)}" if self.query else self.path
        return HttpOperation("app", "app", self.method, path, self.json)


# -- Request builders: validate the caller's input, name the field that breaks a rule ------------
def people_filter(filter: Mapping[str, Any] | None, email: str | None) -> dict[str, Any]:
    """The audience filter for a search: `filter`, `email`, or both joined with `and`."""
    conditions: list[dict[str, Any]] = []
    if email is not None:
        if not isinstance(email, str) or not email.strip():
            raise ValidationError("email", "must be a non-empty string")
        conditions.append({"attribute": {"field": "email", "operator": "eq", "value": email}})
    if filter is not None:
        check_filter("filter", filter)
        conditions.append(dict(filter))
    if not conditions:
        raise ValidationError("filter", "give a filter or an email to search for")
    return conditions[0] if len(conditions) == 1 else {"and": conditions}


def check_filter(field: str, value: object) -> None:
    """Customer.io's audience filter: one of and/or (lists), not, segment {id}, attribute."""
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ValidationError(
            field, f"must be an object with exactly one of {', '.join(_FILTER_KEYS)}"
        )
    ((key, inner),) = value.items()
    where = f"{field}.{key}"
    if key in ("and", "or"):
        if not isinstance(inner, list) or not inner:
            raise ValidationError(where, "must be a non-empty list of filters")
        for index, item in enumerate(inner):
            check_filter(f"{where}[{index}]", item)
    elif key == "not":
        check_filter(where, inner)
    elif key == "segment":
        if not isinstance(inner, Mapping) or not _is_int(inner.get("id")):
            raise ValidationError(f"{where}.id", "must be an integer segment id")
    elif key == "attribute":
        _check_attribute(where, inner)
    else:
        raise ValidationError(field, f"unknown key {key!r}; use one of {', '.join(_FILTER_KEYS)}")


def _check_attribute(where: str, inner: object) -> None:
    if not isinstance(inner, Mapping):
        raise ValidationError(where, "must be an object with field, operator and value")
    if not isinstance(inner.get("field"), str) or not inner["field"]:
        raise ValidationError(f"{where}.field", "must be a non-empty attribute name")
    operator = validation.choice(f"{where}.operator", inner.get("operator"), ("eq", "exists"))
    if operator == "eq" and not isinstance(inner.get("value"), str | int | float | bool):
        raise ValidationError(f"{where}.value", "is required with eq (a string or number)")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def search_request(filter: dict[str, Any], *, page_size: int = MAX_PAGE_SIZE) -> AppRequest:
    """`POST /v1/customers?limit=N`: the first page of people matching `filter`."""
    if not _is_int(page_size) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValidationError("page_size", f"must be an integer from 1 to {MAX_PAGE_SIZE}")
    return AppRequest("POST", "/v1/customers", (("limit", str(page_size)),), {"filter": filter})


def person_request(person_id: str, id_type: IdType = "id") -> AppRequest:
    """`GET /v1/customers/{id}/attributes[?id_type=...]`."""
    text = validation.identifier("person_id", person_id)
    kind = validation.choice("id_type", id_type, ("id", "email", "cio_id"))
    query = () if kind == "id" else (("id_type", kind),)
    return AppRequest("GET", f"/v1/customers/{segment(text)}/attributes", query)


def metrics_request(
    campaign_id: int,
    *,
    res: Resolution = "days",
    start: object = None,
    end: object = None,
    tz: str | None = None,
) -> AppRequest:
    """`GET /v1/campaigns/{id}/metrics?version=2&res=...` (version 1 is deprecated)."""
    if not _is_int(campaign_id) or campaign_id < 1:
        raise ValidationError("campaign_id", "must be a positive integer")
    query = [("version", "2"), ("res", validation.choice("res", res, _RESOLUTIONS))]
    for name, value in (("start", start), ("end", end)):
        seconds = validation.timestamp(name, value)
        if seconds is not None:
            query.append((name, str(seconds)))
    if tz is not None:
        if not isinstance(tz, str) or not tz.strip():
            raise ValidationError("tz", "must be a region time zone such as America/New_York")
        query.append(("tz", tz))
    return AppRequest("GET", f"/v1/campaigns/{campaign_id}/metrics", tuple(query))


def delivery_request(delivery_id: str) -> AppRequest:
    """`GET /v1/messages/{delivery_id}`."""
    text = validation.identifier("delivery_id", delivery_id, max_bytes=1000)
    return AppRequest("GET", f"/v1/messages/{segment(text)}")


SEGMENTS = AppRequest("GET", "/v1/segments")
CAMPAIGNS = AppRequest("GET", "/v1/campaigns")
BROADCASTS = AppRequest("GET", "/v1/broadcasts")


# -- The retry policy both clients share -----------------------------------------------------------
def limiter_unavailable(exc: RateLimitedError) -> bool:
    """True if the limiter failed because Redis is unreachable (waiting will not help soon)."""
    return isinstance(exc.__cause__, redis.RedisError)


class ReadAttempts:
    """Decides, after each failure of one request, whether to wait and try again, and how long.

    429s and a busy bucket cost no attempt, only time (bounded by `max_wait_s` for the request);
    5xx, 408 and connection failures use up one of `max_attempts`, with backoff between them.
    """

    def __init__(self, *, max_wait_s: float, max_attempts: int) -> None:
        self._deadline = time.monotonic() + max_wait_s
        self._max_attempts = max_attempts
        self._failures = 0

    def _within_deadline(self, delay_s: float, exc: RetryableError) -> float:
        if time.monotonic() + delay_s > self._deadline:
            raise exc
        return delay_s

    def slot_wait(self, exc: RateLimitedError) -> float:
        """Seconds to sleep before asking the limiter again; re-raises when Redis is down."""
        if limiter_unavailable(exc):
            raise exc  # fail closed at once: nothing is sent unmetered, and nobody waits for it
        return self._within_deadline(exc.retry_after_seconds or DEFAULT_RATE_LIMIT_WAIT_S, exc)

    def rate_limited(self, exc: RateLimitedError) -> None:
        """After a 429 (the bucket is paused, so the next slot waits): give up past the deadline."""
        self._within_deadline(exc.retry_after_seconds or DEFAULT_RATE_LIMIT_WAIT_S, exc)

    def failed(self, exc: RetryableError) -> float:
        """Seconds to back off after a 5xx/408/transport failure; re-raises when out of tries."""
        self._failures += 1
        if self._failures >= self._max_attempts:
            raise exc
        delay = compute_backoff_s(
            self._failures,
            base_s=BACKOFF_BASE_S,
            max_s=BACKOFF_MAX_S,
            retry_after_s=exc.retry_after_seconds,
        )
        return self._within_deadline(delay, exc)


def next_page(request: AppRequest, cursor: str | None, seen: set[str]) -> AppRequest | None:
    """The request for the page after this one, or None at the end of the list."""
    if not cursor:
        return None
    if cursor in seen:  # a server bug must not become an endless loop
        raise UnexpectedResponseError(f"{request.path}: cursor {cursor!r} came back twice")
    seen.add(cursor)
    return request.with_start(cursor)


def check_app_key(settings: Settings) -> None:
    """Fail at construction, not at the first call, when the App API key is missing."""
    if not settings.app_api_key:
        raise ConfigError("CUSTOMERIO_APP_API_KEY: not set; the App API needs it")


def is_not_found(exc: RejectedError) -> bool:
    return exc.status_code == 404


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
                log.warning("app_rate_limited", path=request.path, retry_s=exc.retry_after_seconds)
                attempts.rate_limited(exc)
            except RetryableError as exc:  # 5xx, 408, timeouts, connection failures
                delay = attempts.failed(exc)
                log.warning("app_read_retry", path=request.path, error=str(exc), delay_s=delay)
                self._sleep(delay)

    def _take_slot(self, attempts: ReadAttempts) -> None:
        while True:
            try:
                self._limiter.acquire("app")
                return
            except RateLimitedError as exc:  # the slot is over a second away: wait, ask again
                self._sleep(attempts.slot_wait(exc))


__all__ = [
    "DEFAULT_MAX_WAIT_S",
    "MAX_PAGE_SIZE",
    "AppClient",
    "AppRequest",
    "Broadcast",
    "Campaign",
    "CampaignMetrics",
    "Delivery",
    "Device",
    "Person",
    "PersonRef",
    "ReadAttempts",
    "Segment",
    "UnexpectedResponseError",
]
