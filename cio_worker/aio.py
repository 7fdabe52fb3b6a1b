"""cio_worker for asyncio applications: the same producer and App API reads, awaitable.

`enqueue_*`, `configure` and `AsyncProducer` never block the event loop: validation is the same
as the sync producer's, and only the Redis write is awaited. `AppClient` reads the App API through
the same shared `app` rate-limit bucket as the workers and the sync `cio_worker.AppClient`.
"""

from __future__ import annotations

# -- App API reads (owned by app_api/ and customerio/) ---------------------------------------------
from cio_worker.app_api._aio_reads import AppClient, AsyncHttp, acquire_app_slot

# -- Producer (owned by produce/) --------------------------------------------------------------
from cio_worker.produce._aio_producer import (
    AsyncProducer,
    configure,
    create_async_redis,
    default_producer,
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

__all__ = [
    "AppClient",
    "AsyncHttp",
    "AsyncProducer",
    "acquire_app_slot",
    "configure",
    "create_async_redis",
    "default_producer",
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
