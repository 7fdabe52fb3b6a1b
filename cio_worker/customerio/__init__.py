"""Speaking to Customer.io: the HTTP client (sync and async) and the requests each job becomes."""

from __future__ import annotations

from cio_worker.customerio._answers import Answer
from cio_worker.customerio._batch_items import (
    BATCHABLE,
    MAX_BATCH_BYTES,
    PIPELINES_BATCH_PATH,
    TRACK_BATCH_PATH,
    batch_body,
    batch_item_json,
    batchable,
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
    "Answer",
    "Api",
    "AsyncCustomerIoClient",
    "BATCHABLE",
    "CustomerIoClient",
    "HttpOperation",
    "MAX_BATCH_BYTES",
    "MAX_CONNECTIONS",
    "PIPELINES_BATCH_PATH",
    "STRICT_HEADERS",
    "TRACK_BATCH_PATH",
    "USER_AGENT",
    "batch_body",
    "batch_item_json",
    "batchable",
    "build_operation",
    "email_headers_json",
    "get_client",
    "route_of",
    "segment",
]
