"""Reading from Customer.io's App API: typed requests and answers, through the shared App bucket."""

from __future__ import annotations

from cio_worker.app_api._client import AppClient, AsyncAppClient, acquire_app_slot
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
)
from cio_worker.app_api._parsers import (
    parse_delivery,
    parse_metrics,
    parse_person,
    parse_search_page,
    parse_segments,
)
from cio_worker.app_api._requests import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_READ_DEADLINE_S,
    MAX_PAGE_SIZE,
    AppRequest,
    IdType,
    Resolution,
    delivery_request,
    metrics_request,
    people_filter,
    person_request,
    search_request,
)

__all__ = [
    "AppClient",
    "AppRequest",
    "AsyncAppClient",
    "Broadcast",
    "Campaign",
    "CampaignMetrics",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_READ_DEADLINE_S",
    "Delivery",
    "Device",
    "IdType",
    "MAX_PAGE_SIZE",
    "Person",
    "PersonRef",
    "Resolution",
    "Segment",
    "Trigger",
    "acquire_app_slot",
    "delivery_request",
    "delivery_status",
    "metrics_request",
    "parse_delivery",
    "parse_metrics",
    "parse_person",
    "parse_search_page",
    "parse_segments",
    "people_filter",
    "person_request",
    "search_request",
]
