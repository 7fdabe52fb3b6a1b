"""cio_worker for asyncio applications: the same producer and App API reads, awaitable.

`enqueue_*`, `configure` and `AsyncProducer` never block the event loop: validation is the same
as the sync producer's, and only the Redis write is awaited. `AppClient` reads the App API through
the same shared `app` rate-limit bucket as the workers and the sync `cio_worker.AppClient`.
"""

from __future__ import annotations

# -- App API reads (owned by app_api/ and customerio/) ---------------------------------------------
from cio_worker.app_api import AsyncAppClient as AppClient
from cio_worker.app_api import acquire_app_slot
from cio_worker.customerio import AsyncCustomerIoClient as AsyncHttp  # its former name

# -- Producer (owned by produce/) --------------------------------------------------------------
from cio_worker.produce import AsyncProducer, create_async_redis
from cio_worker.produce import async_configure as configure
from cio_worker.produce import async_default_producer as default_producer
from cio_worker.produce import async_enqueue_add_device as enqueue_add_device
from cio_worker.produce import async_enqueue_broadcast as enqueue_broadcast
from cio_worker.produce import async_enqueue_delete as enqueue_delete
from cio_worker.produce import async_enqueue_identify as enqueue_identify
from cio_worker.produce import async_enqueue_merge as enqueue_merge
from cio_worker.produce import async_enqueue_page as enqueue_page
from cio_worker.produce import async_enqueue_remove_device as enqueue_remove_device
from cio_worker.produce import async_enqueue_send_email as enqueue_send_email
from cio_worker.produce import async_enqueue_send_push as enqueue_send_push
from cio_worker.produce import async_enqueue_send_sms as enqueue_send_sms
from cio_worker.produce import async_enqueue_suppress as enqueue_suppress
from cio_worker.produce import async_enqueue_track as enqueue_track
from cio_worker.produce import async_enqueue_track_anonymous as enqueue_track_anonymous
from cio_worker.produce import async_enqueue_unsuppress as enqueue_unsuppress

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
