"""App API requests: built from the caller's input (validated, naming the field that breaks a
rule), and the retry policy the sync and async clients share (`ReadAttempts`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlencode

import redis

from cio_worker import validation
from cio_worker.backoff import compute_backoff_s
from cio_worker.config import Settings
from cio_worker.customerio import HttpOperation, route_of, segment
from cio_worker.errors import (
    ConfigError,
    RateLimitedError,
    RejectedError,
    RetryableError,
    UnexpectedResponseError,
    ValidationError,
)

IdType = Literal["id", "email", "cio_id"]
Resolution = Literal["hours", "days", "weeks", "months"]

#: Customer.io's largest page for a people search; fewer pages spend fewer of the 10 requests/s.
MAX_PAGE_SIZE = 1000
#: The default `max_wait_s`: how long one request of a read (a page of a list is one request) may
#: wait in all for limiter slots, 429 pauses and retries before it gives up, seconds.
DEFAULT_READ_DEADLINE_S = 60.0
#: Tries of one request that meets 5xx, 408 or a connection failure (reads are idempotent).
DEFAULT_MAX_ATTEMPTS = 4
#: Backoff between those tries: full jitter from 0.5 s, at most 8 s.
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0
#: A 429 or a busy bucket with no hint waits this long.
DEFAULT_RATE_LIMIT_WAIT_S = 1.0

_FILTER_KEYS = ("and", "or", "not", "segment", "attribute")
_RESOLUTIONS = ("hours", "days", "weeks", "months")


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
        """The request as the customerio client sends it, drawing from the `app` bucket."""
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


def person_messages_request(
    person_id: str,
    *,
    id_type: IdType = "id",
    start_ts: int | None = None,
    end_ts: int | None = None,
    limit: int = 100,
) -> AppRequest:
    """`GET /v1/customers/{id}/messages`: deliveries to one person, newest first."""
    text = validation.identifier("person_id", person_id, max_bytes=1000)
    query = [("id_type", id_type), ("limit", str(limit))]
    query += [(k, str(v)) for k, v in (("start_ts", start_ts), ("end_ts", end_ts)) if v is not None]
    return AppRequest("GET", f"/v1/customers/{segment(text)}/messages", tuple(query))


def broadcast_triggers_request(broadcast_id: int) -> AppRequest:
    """`GET /v1/broadcasts/{id}/triggers`: the triggers of one API broadcast."""
    if not _is_int(broadcast_id) or broadcast_id < 1:
        raise ValidationError("broadcast_id", f"must be a positive integer, got {broadcast_id!r}")
    return AppRequest("GET", f"/v1/broadcasts/{broadcast_id}/triggers")


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
        raise UnexpectedResponseError(f"{route_of(request.path)}: cursor came back twice")
    seen.add(cursor)
    return request.with_start(cursor)


def check_app_key(settings: Settings) -> None:
    """Fail at construction, not at the first call, when the App API key is missing."""
    if not settings.app_api_key:
        raise ConfigError("CUSTOMERIO_APP_API_KEY: not set; the App API needs it")


def is_not_found(exc: RejectedError) -> bool:
    return exc.status_code == 404
