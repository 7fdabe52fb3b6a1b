"""Each App API read, defined once and without I/O: the request it sends, how its answer is read.

_methods.py makes each function here a method of `AppClient` (which sends and sleeps) and of
`AsyncAppClient` (which awaits), with the function's name, parameters and docstring; so neither
client repeats what a read asks for, how its answer is parsed, how pages follow or what a 404 means.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cio_worker.app_api._models import (
    Broadcast,
    Campaign,
    CampaignMetrics,
    Delivery,
    Person,
    PersonRef,
    Segment,
    Trigger,
)
from cio_worker.app_api._parsers import (
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
    MAX_PAGE_SIZE,
    SEGMENTS,
    AppRequest,
    IdType,
    Resolution,
    broadcast_triggers_request,
    delivery_request,
    is_not_found,
    metrics_request,
    next_page,
    people_filter,
    person_messages_request,
    person_request,
    search_request,
)
from cio_worker.errors import RejectedError

#: What a read gives; covariant, so that a `One[Person]` is also a `One[Person | None]`.
T_co = TypeVar("T_co", covariant=True)


# -- The two shapes of a read ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class One(Generic[T_co]):
    """A read of one resource, which may not exist."""

    request: AppRequest
    parse: Callable[[Any], T_co]

    def raise_unless_not_found(self, exc: RejectedError) -> None:
        """Re-raise a refusal of this read, unless it is a 404: nothing by that id, read as None."""
        if not is_not_found(exc):
            raise exc


@dataclass(frozen=True, slots=True)
class Pages(Generic[T_co]):
    """A read of a list: its first page's request, and how an answer gives items and a cursor."""

    request: AppRequest
    parse: Callable[[Any], tuple[list[T_co], str | None]]


class Pager(Generic[T_co]):
    """Where a walk through a list's pages stands: `request` is the next one to send (None after
    the last page); each answer gives its items, then `turn()` moves on by the answer's cursor."""

    def __init__(self, read: Pages[T_co]) -> None:
        self.request: AppRequest | None = read.request
        self._parse = read.parse
        self._cursor: str | None = None
        self._seen: set[str] = set()

    def items(self, body: Any) -> list[T_co]:
        """The items in the answer to `request`."""
        items, self._cursor = self._parse(body)
        return items

    def turn(self) -> None:
        """Move to the page after the one last answered (a cursor seen twice is an error)."""
        assert self.request is not None
        self.request = next_page(self.request, self._cursor, self._seen)


# -- People ----------------------------------------------------------------------------------------
def search_people(
    filter: Mapping[str, Any] | None = None,
    *,
    email: str | None = None,
    page_size: int = MAX_PAGE_SIZE,
) -> Pages[PersonRef]:
    """Everyone matching `filter` and/or `email`, every page followed to the end."""
    return Pages(
        search_request(people_filter(filter, email), page_size=page_size), parse_search_page
    )


def iter_people(
    filter: Mapping[str, Any] | None = None,
    *,
    email: str | None = None,
    page_size: int = MAX_PAGE_SIZE,
) -> Pages[PersonRef]:
    """As search_people, one page fetched at a time as the iterator is consumed."""
    return search_people(filter, email=email, page_size=page_size)


def get_person(person_id: str, *, id_type: IdType = "id") -> One[Person]:
    """A person's attributes, identifiers, devices and subscription state; None if unknown."""
    return One(person_request(person_id, id_type), parse_person)


# -- Segments, campaigns, broadcasts ---------------------------------------------------------------
def list_segments() -> Pages[Segment]:
    """Every segment of the workspace."""
    return Pages(SEGMENTS, parse_segments)


def list_campaigns() -> Pages[Campaign]:
    """Every campaign of the workspace."""
    return Pages(CAMPAIGNS, parse_campaigns)


def list_broadcasts() -> Pages[Broadcast]:
    """Every API-triggered broadcast of the workspace."""
    return Pages(BROADCASTS, parse_broadcasts)


def get_campaign_metrics(
    campaign_id: int,
    *,
    res: Resolution = "days",
    start: object = None,
    end: object = None,
    tz: str | None = None,
) -> One[CampaignMetrics]:
    """Counts per metric and period (`res`), oldest first; None if the campaign is unknown.

    `start`/`end` are Unix seconds or aware datetimes; `tz` a region name (Customer.io's
    default is EST).
    """
    request = metrics_request(campaign_id, res=res, start=start, end=end, tz=tz)
    return One(request, lambda body: parse_metrics(body, campaign_id, res))


def get_delivery(delivery_id: str) -> One[Delivery]:
    """One delivery (a message sent to one person) and its status; None if unknown."""
    return One(delivery_request(delivery_id), parse_delivery)


# -- What was sent (the worker's reconcile asks these after an ambiguous send) --------------------
def list_person_messages(
    person_id: str,
    *,
    id_type: IdType = "id",
    start_ts: int | None = None,
    end_ts: int | None = None,
) -> Pages[Delivery]:
    """Deliveries to one person created in [start_ts, end_ts] (Unix seconds), every page."""
    request = person_messages_request(person_id, id_type=id_type, start_ts=start_ts, end_ts=end_ts)
    return Pages(request, parse_messages_page)


def list_broadcast_triggers(broadcast_id: int) -> Pages[Trigger]:
    """Every trigger of an API broadcast, with the time each was created."""
    return Pages(broadcast_triggers_request(broadcast_id), parse_triggers)
