"""Speaking to Customer.io: the HTTP client (sync and async) and the requests each job becomes."""

from __future__ import annotations

from cio_worker.customerio._answers import Answer, refused_items
from cio_worker.customerio._batch_items import (
    BATCHABLE,
    ITEM_SLACK_BYTES,
    MAX_BATCH_BYTES,
    PIPELINES_BATCH_PATH,
    REQUEST_LIMIT_BYTES,
    TRACK_BATCH_PATH,
    batch_body,
    batch_item,
    batchable,
    fitting_count,
    records_body,
)
from cio_worker.customerio._http import (
    MAX_CONNECTIONS,
    USER_AGENT,
    AsyncCustomerIoClient,
    CustomerIoClient,
    get_client,
)
from cio_worker.customerio._operations import (
    STRICT_HEADERS,
    Api,
    HttpOperation,
    build_operation,
    email_headers_json,
    route_of,
    segment,
)

__all__ = [
    "refused_items",
    "Answer",
    "Api",
    "AsyncCustomerIoClient",
    "BATCHABLE",
    "CustomerIoClient",
    "HttpOperation",
    "ITEM_SLACK_BYTES",
    "MAX_BATCH_BYTES",
    "MAX_CONNECTIONS",
    "PIPELINES_BATCH_PATH",
    "STRICT_HEADERS",
    "TRACK_BATCH_PATH",
    "USER_AGENT",
    "batch_body",
    "REQUEST_LIMIT_BYTES",
    "batch_item",
    "records_body",
    "fitting_count",
    "batchable",
    "build_operation",
    "email_headers_json",
    "get_client",
    "route_of",
    "segment",
]
