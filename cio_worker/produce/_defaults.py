"""The module-level `enqueue_*` functions, on default producers built from the environment on
first use (as httpx's top-level `get()` wraps a `Client`).

`cio_worker.enqueue_<kind>` uses one `Producer` per process; `cio_worker.aio.enqueue_<kind>`
(here `async_enqueue_<kind>`) one `AsyncProducer` per event loop, since a redis.asyncio client
belongs to the loop it first ran on. `configure` and `async_configure` replace them.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable

import redis
import redis.asyncio

from cio_worker.config import Settings
from cio_worker.produce import _jobs as jobs
from cio_worker.produce._async_producer import AsyncProducer
from cio_worker.produce._calls import P, Pending, on_default, on_default_async
from cio_worker.produce._jobs import JobDraft
from cio_worker.produce._producer import Producer

_default: Producer | None = None
_default_lock = threading.Lock()
# Kept weakly: a closed loop's producer goes with it.
_async_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncProducer] = (
    weakref.WeakKeyDictionary()
)


def default_producer() -> Producer:
    """The producer the module-level `enqueue_*` functions use, built from the environment."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Producer()
        return _default


def configure(
    settings: Settings | None = None,
    *,
    redis_client: redis.Redis | None = None,
    producer: Producer | None = None,
) -> Producer:
    """Replace the default producer (for applications that build `Settings` in code, and tests).

    `producer`: install this one as it is (an integration's producer: Django's, which stores on
    commit, or `cio_worker.testing`'s, which keeps jobs in memory); then `settings` and
    `redis_client` must be None."""
    global _default
    if producer is not None and (settings is not None or redis_client is not None):
        raise TypeError("configure(producer=...) takes no settings or redis_client")
    with _default_lock:
        _default = producer or Producer(settings, redis_client=redis_client)
        return _default


def async_default_producer() -> AsyncProducer:
    """The async producer of the running loop, built from the environment on first use."""
    loop = asyncio.get_running_loop()
    producer = _async_defaults.get(loop)
    if producer is None:
        producer = _async_defaults[loop] = AsyncProducer()
    return producer


def async_configure(
    settings: Settings | None = None,
    *,
    redis_client: redis.asyncio.Redis | None = None,
    producer: AsyncProducer | None = None,
) -> AsyncProducer:
    """Replace the running loop's default async producer (`producer`: install this one)."""
    if producer is not None and (settings is not None or redis_client is not None):
        raise TypeError("configure(producer=...) takes no settings or redis_client")
    installed = producer or AsyncProducer(settings, redis_client=redis_client)
    _async_defaults[asyncio.get_running_loop()] = installed
    return installed


def _on_defaults(build: Callable[P, JobDraft]) -> tuple[Callable[P, str], Callable[P, Pending]]:
    """The call `build` defines, on the default producer and on the loop's async one."""
    return on_default(build, default_producer), on_default_async(build, async_default_producer)


# -- Track API -----------------------------------------------------------------------------------
enqueue_identify, async_enqueue_identify = _on_defaults(jobs.identify)
enqueue_track, async_enqueue_track = _on_defaults(jobs.track)
enqueue_track_anonymous, async_enqueue_track_anonymous = _on_defaults(jobs.track_anonymous)
enqueue_page, async_enqueue_page = _on_defaults(jobs.page)
enqueue_delete, async_enqueue_delete = _on_defaults(jobs.delete)
enqueue_merge, async_enqueue_merge = _on_defaults(jobs.merge)
enqueue_suppress, async_enqueue_suppress = _on_defaults(jobs.suppress)
enqueue_unsuppress, async_enqueue_unsuppress = _on_defaults(jobs.unsuppress)
enqueue_add_device, async_enqueue_add_device = _on_defaults(jobs.add_device)
enqueue_remove_device, async_enqueue_remove_device = _on_defaults(jobs.remove_device)
# -- App API -------------------------------------------------------------------------------------
enqueue_send_email, async_enqueue_send_email = _on_defaults(jobs.send_email)
enqueue_send_push, async_enqueue_send_push = _on_defaults(jobs.send_push)
enqueue_send_sms, async_enqueue_send_sms = _on_defaults(jobs.send_sms)
enqueue_broadcast, async_enqueue_broadcast = _on_defaults(jobs.broadcast)
