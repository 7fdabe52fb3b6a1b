"""What both drop-in clients share: the producer a call goes through, and the official clients'
conversion of values (datetimes to Unix seconds, NaN to null) before cio_worker validates them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cio_worker import produce
from cio_worker.produce import Producer


def enqueue(producer: Producer | None, kind: str, *args: Any, **kwargs: Any) -> str:
    """`producer.enqueue_<kind>(...)`, or the module-level `cio_worker.enqueue_<kind>` (the
    default producer, which `cio_worker.configure` and the integrations replace)."""
    target: Any = produce if producer is None else producer
    job_id: str = getattr(target, f"enqueue_{kind}")(*args, **kwargs)
    return job_id


def unix_seconds(value: datetime) -> int:
    """The official `customerio` client's conversion: naive datetimes are read as UTC."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return int(aware.timestamp())


def sanitize_value(value: Any) -> Any:
    """A value as the official `customerio` client sends it
    (`customerio-python/customerio/client_base.py` `_sanitize`)."""
    if isinstance(value, datetime):
        return unix_seconds(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return sanitize(value)
    if isinstance(value, list):
        return [sanitize_value(item) for item in value]
    return value


def sanitize(data: Mapping[str, Any]) -> dict[str, Any]:
    return {key: sanitize_value(value) for key, value in data.items()}
