"""A drop-in for the official `customerio` package (3.x): change only the import.

    from cio_worker.compat.customerio import CustomerIO, APIClient, SendEmailRequest

    cio = CustomerIO(site_id, api_key, region=Regions.EU)
    cio.track(customer_id="5", name="purchased", data={"price": 23.45})

Same class names, constructor arguments, methods and signatures as `customerio` 3.2. Each call
checks its input (the official client's blank checks, then cio_worker's validation), stores one
job durably and returns its id; the workers send the request the official client would have
sent (tests/test_compat_customerio.py proves it call by call against the sandbox). Errors are
`CustomerIOException`, with cio_worker's `ValidationError`/`EnqueueError` as the cause.

Differences (docs/migrating.md): the HTTP arguments are accepted and ignored (the workers'
settings decide); the region and credentials are the workers' (`CUSTOMERIO_REGION`,
`CUSTOMERIO_SITE_ID`...); an event's `id` is cio_worker's job id, so passing `id=` is refused;
`batch` has no equivalent (the workers batch by themselves, `CIO_WORKER_BATCH`). A keyword-only
`producer=` picks the producer (default: cio_worker's default producer).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cio_worker.compat._app import (
    APIClient,
    SendEmailRequest,
    SendInAppRequest,
    SendInboxMessageRequest,
    SendPushRequest,
    SendSMSRequest,
    SendWhatsAppRequest,
)
from cio_worker.compat._client_base import (
    ClientBase,
    CustomerIOException,
    Region,
    Regions,
    required,
    unsupported_call,
)
from cio_worker.compat._common import sanitize, unix_seconds
from cio_worker.produce import Producer

__all__ = [
    "APIClient",
    "CustomerIO",
    "CustomerIOException",
    "Region",
    "Regions",
    "SendEmailRequest",
    "SendInAppRequest",
    "SendInboxMessageRequest",
    "SendPushRequest",
    "SendSMSRequest",
    "SendWhatsAppRequest",
]

#: Person identifier types of `merge_customers` (the official `customerio.constants`).
ID, EMAIL, CIOID = "id", "email", "cio_id"
#: The device fields Track v1 knows besides `id` and `platform`.
_DEVICE_FIELDS = ("last_used", "attributes")


class CustomerIO(ClientBase):
    """The Track API client (`customerio.CustomerIO`): every call enqueues one job."""

    def __init__(
        self,
        site_id: str | None = None,
        api_key: str | None = None,
        host: str | None = None,
        region: Region = Regions.US,
        port: int | None = None,
        url_prefix: str | None = None,
        json_encoder: object = None,
        retries: int = 3,
        timeout: float = 10,
        backoff_factor: float = 0.02,
        use_connection_pooling: bool = True,
        *,
        producer: Producer | None = None,
    ) -> None:
        super().__init__(region, retries, timeout, backoff_factor, use_connection_pooling, producer)
        self.site_id = site_id  # not a secret; the API key is not kept (the workers hold it)
        self.host = host or region.track_host
        self.port = port or 443
        self.url_prefix = url_prefix or "/api/v1"
        if json_encoder is not None:
            warnings.warn(
                "With the switch to using requests library the `json_encoder` param is no "
                "longer used.",
                DeprecationWarning,
                stacklevel=2,
            )

    def identify(self, id: str | int, **kwargs: Any) -> str:
        """Identify a single customer by their unique id, and optionally add attributes."""
        required("identify", "id", id)
        return self._enqueue("identify", id, sanitize(kwargs))

    def track(
        self,
        customer_id: str | int,
        name: str,
        data: Mapping[str, Any] | None = None,
        id: str | None = None,
        timestamp: int | datetime | None = None,
    ) -> str:
        """Track an event for a given customer_id."""
        required("track", "customer_id", customer_id)
        return self._event("track", customer_id, name, data, id, timestamp)

    def track_anonymous(
        self,
        anonymous_id: str | int,
        name: str,
        data: Mapping[str, Any] | None = None,
        id: str | None = None,
        timestamp: int | datetime | None = None,
    ) -> str:
        """Track an event for a given anonymous_id.

        The official client sends an event without `anonymous_id` when it is blank (Customer.io
        keeps it unattached); cio_worker refuses a blank id instead."""
        return self._event("track_anonymous", anonymous_id, name, data, id, timestamp)

    def pageview(self, customer_id: str | int, page: str, **data: Any) -> str:
        """Track a pageview for a given customer_id."""
        required("pageview", "customer_id", customer_id)
        return self._enqueue("page", customer_id, page, sanitize(data))

    def backfill(
        self, customer_id: str | int, name: str, timestamp: int | str | datetime, **data: Any
    ) -> str:
        """Backfill an event (track with timestamp) for a given customer_id."""
        required("backfill", "customer_id", customer_id)
        if isinstance(timestamp, datetime):
            seconds = unix_seconds(timestamp)
        else:
            try:
                seconds = int(timestamp)
            except Exception as e:
                raise CustomerIOException(f"{timestamp} is not a valid timestamp ({e})") from e
        return self._enqueue("track", customer_id, name, sanitize(data), timestamp=seconds)

    def delete(self, customer_id: str | int) -> str:
        """Delete a customer profile."""
        required("delete", "customer_id", customer_id)
        return self._enqueue("delete", customer_id)

    def add_device(self, customer_id: str | int, device_id: str, platform: str, **data: Any) -> str:
        """Add a device to a customer profile (`last_used`, `attributes` by keyword)."""
        required("add_device", "customer_id", customer_id)
        required("add_device", "device_id", device_id)
        required("add_device", "platform", platform)
        unknown = sorted(set(data) - set(_DEVICE_FIELDS))
        if unknown:
            raise CustomerIOException(
                f"add_device: {unknown[0]} is not a device field; Track v1 devices take "
                f"{', '.join(_DEVICE_FIELDS)}"
            )
        fields = sanitize(data)
        return self._enqueue(
            "add_device",
            customer_id,
            device_id,
            platform,
            last_used=fields.get("last_used"),
            attributes=fields.get("attributes"),
        )

    def delete_device(self, customer_id: str | int, device_id: str) -> str:
        """Delete a device from a customer profile."""
        required("delete_device", "customer_id", customer_id)
        required("delete_device", "device_id", device_id)
        return self._enqueue("remove_device", customer_id, device_id)

    def suppress(self, customer_id: str | int) -> str:
        required("suppress", "customer_id", customer_id)
        return self._enqueue("suppress", customer_id)

    def unsuppress(self, customer_id: str | int) -> str:
        required("unsuppress", "customer_id", customer_id)
        return self._enqueue("unsuppress", customer_id)

    def is_valid_id_type(self, id_type: str) -> bool:
        return id_type in {ID, EMAIL, CIOID}

    def merge_customers(
        self,
        primary_id_type: str,
        primary_id: str | int,
        secondary_id_type: str,
        secondary_id: str | int,
    ) -> str:
        """Merge secondary profile into primary profile."""
        if not self.is_valid_id_type(primary_id_type):
            raise CustomerIOException("invalid primary id type")
        if not self.is_valid_id_type(secondary_id_type):
            raise CustomerIOException("invalid secondary id type")
        if primary_id is None or primary_id == "":
            raise CustomerIOException("primary customer_id cannot be blank")
        if secondary_id is None or secondary_id == "":
            raise CustomerIOException("secondary customer_id cannot be blank")
        return self._enqueue(
            "merge", {primary_id_type: primary_id}, {secondary_id_type: secondary_id}
        )

    batch = unsupported_call(
        "batch",
        "call identify/track/... one by one: the workers group Track jobs into "
        "/api/v2/batch requests themselves (CIO_WORKER_BATCH=on, the default)",
    )
    send_request = unsupported_call(
        "send_request", "a raw request has no job; use the method of the call you need"
    )

    def _event(
        self,
        call: str,
        person: str | int,
        name: str,
        data: Mapping[str, Any] | None,
        id: str | None,
        timestamp: int | datetime | str | None,
    ) -> str:
        if id is not None:
            raise CustomerIOException(
                f"{call}: id is not accepted: cio_worker sends each event's job id (the id "
                "this call returns) as its dedup id, so a retried event is counted once"
            )
        return self._enqueue(
            call, person, name, sanitize(data or {}), timestamp=_event_timestamp(timestamp)
        )


def _event_timestamp(value: int | datetime | str | None) -> int | None:
    """The official client's event timestamp: a datetime in Unix seconds, an int as given, any
    other value through `int()`, dropped when that fails."""
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, datetime):
        return unix_seconds(value)
    try:
        return int(value)
    except (ValueError, TypeError, OverflowError):
        return None
