"""cio_worker: durable, rate-limited delivery of customer data and messages to Customer.io.

Application code calls `enqueue_*`; Celery workers (`celery -A cio_worker worker`) deliver.
"""

from __future__ import annotations

import typing as _typing

from cio_worker.app_api import AppClient
from cio_worker.config import Settings
from cio_worker.errors import (
    AuthError,
    CioWorkerError,
    ConfigError,
    DeliveryError,
    EnqueueError,
    PermanentError,
    RateLimitedError,
    RejectedError,
    RetryableError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
    ValidationError,
    WebhookSignatureError,
)
from cio_worker.produce import (
    BulkProducer,
    Producer,
    configure,
    enqueue_add_device,
    enqueue_broadcast,
    enqueue_delete,
    enqueue_identify,
    enqueue_merge,
    enqueue_page,
    enqueue_remove_device,
    enqueue_send_email,
    enqueue_send_push,
    enqueue_send_sms,
    enqueue_suppress,
    enqueue_track,
    enqueue_track_anonymous,
    enqueue_unsuppress,
)
from cio_worker.version import __version__

if _typing.TYPE_CHECKING:
    from celery import Celery

__all__ = [
    "AppClient",
    "AuthError",
    "BulkProducer",
    "CioWorkerError",
    "ConfigError",
    "DeliveryError",
    "EnqueueError",
    "PermanentError",
    "Producer",
    "RateLimitedError",
    "RejectedError",
    "RetryableError",
    "ServerError",
    "Settings",
    "TransportError",
    "UnexpectedResponseError",
    "ValidationError",
    "WebhookSignatureError",
    "__version__",
    "configure",
    "enqueue_add_device",
    "enqueue_broadcast",
    "enqueue_delete",
    "enqueue_identify",
    "enqueue_merge",
    "enqueue_page",
    "enqueue_remove_device",
    "enqueue_send_email",
    "enqueue_send_push",
    "enqueue_send_sms",
    "enqueue_suppress",
    "enqueue_track",
    "enqueue_track_anonymous",
    "enqueue_unsuppress",
]


def __getattr__(name: str) -> _typing.Any:
    # `celery -A cio_worker` looks up `cio_worker.app`. Building it lazily keeps Celery out of
    # web processes that only enqueue.
    if name == "app":
        from cio_worker.worker import app

        return app
    raise AttributeError(f"module 'cio_worker' has no attribute {name!r}")


if _typing.TYPE_CHECKING:
    app: Celery
