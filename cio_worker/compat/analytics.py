"""A drop-in for Customer.io's Pipelines SDK (`customerio-cdp-analytics`): change only the import.

    from cio_worker.compat import analytics   # was: from customerio import analytics

    analytics.write_key = "..."
    analytics.identify("42", {"email": "ada@example.com"})
    analytics.track("42", "Order Completed", {"total": 30})

The SDK's module-level settings and calls, and its `Client`, with its signatures. Each call
validates, stores one job durably, and returns `(True, msg)` as the SDK does, `msg["messageId"]`
being the job id (the `messageId` the workers send). Nothing waits in memory, so `flush()`,
`join()` and `shutdown()` return at once and no event is dropped when a queue fills: a job Redis
did not take raises `EnqueueError` in the call. For the workers to send these calls through the
Pipelines API as the SDK does, run them with `CIO_WORKER_DATA_API=pipelines`.

The HTTP settings (`host`, `gzip`, `timeout`, `max_retries`, `sync_mode`, `max_queue_size`,
`proxies`, threads, upload sizes) are accepted and ignored: delivery is the workers' job. The
workers' `CUSTOMERIO_PIPELINES_API_KEY` is the key used, whatever `write_key` says. `send=False`
returns without storing. `screen`, `group`, and the `context`, `integrations`, `message_id`,
`category` arguments have no cio_worker job: they raise `NotImplementedError` (docs/migrating.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from cio_worker.compat._common import enqueue
from cio_worker.produce import Producer

__all__ = [
    "Client",
    "alias",
    "flush",
    "group",
    "identify",
    "join",
    "page",
    "screen",
    "shutdown",
    "track",
]

Id = str | int | float
Timestamp = datetime | int | None


class Client:
    """The SDK's `Client`: same constructor and calls, each call one durable job."""

    class DefaultConfig:
        write_key: str | None = None
        host: str | None = None
        on_error: Callable[..., Any] | None = None
        debug = False
        send = True
        sync_mode = False
        max_queue_size = 10000
        gzip = False
        timeout = 15
        max_retries = 10
        proxies: Mapping[str, str] | None = None
        thread = 1
        upload_interval = 0.5
        upload_size = 100

    log = logging.getLogger("customerio")

    def __init__(
        self,
        write_key: str | None = DefaultConfig.write_key,
        host: str | None = DefaultConfig.host,
        debug: bool = DefaultConfig.debug,
        max_queue_size: int = DefaultConfig.max_queue_size,
        send: bool = DefaultConfig.send,
        on_error: Callable[..., Any] | None = DefaultConfig.on_error,
        gzip: bool = DefaultConfig.gzip,
        max_retries: int = DefaultConfig.max_retries,
        sync_mode: bool = DefaultConfig.sync_mode,
        timeout: float = DefaultConfig.timeout,
        proxies: Mapping[str, str] | None = DefaultConfig.proxies,
        thread: int = DefaultConfig.thread,
        upload_size: int = DefaultConfig.upload_size,
        upload_interval: float = DefaultConfig.upload_interval,
        *,
        producer: Producer | None = None,
    ) -> None:
        # The key is not kept: the workers deliver with CUSTOMERIO_PIPELINES_API_KEY.
        self.host, self.on_error, self.debug, self.send = host, on_error, debug, send
        self.sync_mode, self.gzip, self.timeout, self.proxies = sync_mode, gzip, timeout, proxies
        #: The producer calls enqueue through; None: cio_worker's default producer.
        self.producer = producer
        if debug:
            self.log.setLevel(logging.DEBUG)

    def identify(
        self,
        user_id: Id | None = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: Timestamp = None,
        anonymous_id: Id | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> tuple[bool, dict[str, Any]]:
        _unsupported("identify", context=context, integrations=integrations, message_id=message_id)
        if anonymous_id is not None:
            raise _unsupported_error(
                "identify", "anonymous_id", "cio_worker's identify names a person by user_id only"
            )
        msg: dict[str, Any] = {
            "type": "identify",
            "userId": _text(user_id),
            "traits": dict(traits or {}),
        }
        return self._enqueue(msg, "identify", msg["userId"], msg["traits"], timestamp=timestamp)

    def track(
        self,
        user_id: Id | None = None,
        event: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: Timestamp = None,
        anonymous_id: Id | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> tuple[bool, dict[str, Any]]:
        _unsupported("track", context=context, integrations=integrations, message_id=message_id)
        props = dict(properties or {})
        if user_id is not None and anonymous_id is not None:
            raise _unsupported_error(
                "track", "anonymous_id", "an event names either a user_id or an anonymous_id"
            )
        if user_id is None and anonymous_id is not None:
            msg: dict[str, Any] = {
                "type": "track",
                "anonymousId": _text(anonymous_id),
                "event": event,
            }
            return self._enqueue(
                {**msg, "properties": props},
                "track_anonymous",
                msg["anonymousId"],
                event,
                props,
                timestamp=timestamp,
            )
        msg = {"type": "track", "userId": _text(user_id), "event": event, "properties": props}
        return self._enqueue(msg, "track", msg["userId"], event, props, timestamp=timestamp)

    def alias(
        self,
        previous_id: Id | None = None,
        user_id: Id | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: Timestamp = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> tuple[bool, dict[str, Any]]:
        """Merge `previous_id`'s profile into `user_id`'s (a cio_worker merge)."""
        _unsupported("alias", context=context, integrations=integrations, message_id=message_id)
        if timestamp is not None:
            raise _unsupported_error("alias", "timestamp", "a merge happens when it is sent")
        msg: dict[str, Any] = {
            "type": "alias",
            "userId": _text(user_id),
            "previousId": _text(previous_id),
        }
        return self._enqueue(msg, "merge", msg["userId"], msg["previousId"])

    def page(
        self,
        user_id: Id | None = None,
        category: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: Timestamp = None,
        anonymous_id: Id | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> tuple[bool, dict[str, Any]]:
        """A page view of a known person, named `name`. The workers send `name` as the page's
        name and, unless `properties` has one, as `properties.url` too."""
        _unsupported(
            "page",
            context=context,
            integrations=integrations,
            message_id=message_id,
            category=category,
            anonymous_id=anonymous_id,
        )
        props = dict(properties or {})
        msg: dict[str, Any] = {
            "type": "page",
            "userId": _text(user_id),
            "name": name,
            "properties": props,
        }
        return self._enqueue(msg, "page", msg["userId"], name, props, timestamp=timestamp)

    def screen(self, *args: Any, **kwargs: Any) -> tuple[bool, dict[str, Any]]:
        raise _unsupported_error(
            "screen", "screen", "cio_worker has no screen job; track an event instead"
        )

    def group(self, *args: Any, **kwargs: Any) -> tuple[bool, dict[str, Any]]:
        raise _unsupported_error(
            "group", "group", "cio_worker has no group job; keep the official SDK for groups"
        )

    def flush(self) -> None:
        """Returns at once: every call was stored durably when it returned."""

    def join(self) -> None:
        """Returns at once: there is no consumer thread."""

    def shutdown(self) -> None:
        """Returns at once (`flush` and `join` have nothing to wait for)."""

    def _enqueue(
        self, msg: dict[str, Any], kind: str, *args: Any, **kwargs: Any
    ) -> tuple[bool, dict[str, Any]]:
        if self.send:
            msg["messageId"] = enqueue(self.producer, kind, *args, **kwargs)
        return True, msg


def _text(value: Id | None) -> str | None:
    """An id as the SDK sends it: a string (it stringifies numbers)."""
    return None if value is None else str(value)


def _unsupported(call: str, **arguments: object) -> None:
    for name, value in arguments.items():
        if value not in (None, {}):
            raise _unsupported_error(call, name, _REASONS.get(name, "cio_worker has no field"))


def _unsupported_error(call: str, argument: str, reason: str) -> NotImplementedError:
    return NotImplementedError(f"{call}: {argument} is not supported: {reason} (docs/migrating.md)")


_REASONS = {
    "context": "cio_worker's jobs carry no Pipelines context",
    "integrations": "cio_worker's jobs carry no integrations",
    "message_id": "cio_worker sends the job id as messageId, so a retried call is counted once",
    "category": "cio_worker's page job has no category",
    "anonymous_id": "cio_worker's page job names a person by user_id only",
}

# -- The SDK's module-level settings and calls ---------------------------------------------------
write_key = Client.DefaultConfig.write_key
host = Client.DefaultConfig.host
on_error = Client.DefaultConfig.on_error
debug = Client.DefaultConfig.debug
send = Client.DefaultConfig.send
sync_mode = Client.DefaultConfig.sync_mode
max_queue_size = Client.DefaultConfig.max_queue_size
gzip = Client.DefaultConfig.gzip
timeout = Client.DefaultConfig.timeout
max_retries = Client.DefaultConfig.max_retries
#: cio_worker's addition: the producer the default client enqueues through (None: the default).
producer: Producer | None = None

default_client: Client | None = None


def track(*args: Any, **kwargs: Any) -> tuple[bool, dict[str, Any]]:
    """Send a track call."""
    return _proxy("track", *args, **kwargs)  # type: ignore[no-any-return]


def identify(*args: Any, **kwargs: Any) -> tuple[bool, dict[str, Any]]:
    """Send a identify call."""
    return _proxy("identify", *args, **kwargs)  # type: ignore[no-any-return]


def group(*args: Any, **kwargs: Any) -> tuple[bool, dict[str, Any]]:
    """Not supported (`Client.group`)."""
    return _proxy("group", *args, **kwargs)  # type: ignore[no-any-return]


def alias(*args: Any, **kwargs: Any) -> tuple[bool, dict[str, Any]]:
    """Send a alias call."""
    return _proxy("alias", *args, **kwargs)  # type: ignore[no-any-return]


def page(*args: Any, **kwargs: Any) -> tuple[bool, dict[str, Any]]:
    """Send a page call."""
    return _proxy("page", *args, **kwargs)  # type: ignore[no-any-return]


def screen(*args: Any, **kwargs: Any) -> tuple[bool, dict[str, Any]]:
    """Not supported (`Client.screen`)."""
    return _proxy("screen", *args, **kwargs)  # type: ignore[no-any-return]


def flush() -> None:
    """Returns at once: every call was stored when it returned."""
    _proxy("flush")


def join() -> None:
    """Returns at once."""
    _proxy("join")


def shutdown() -> None:
    """Returns at once."""
    _proxy("flush")
    _proxy("join")


def _proxy(method: str, *args: Any, **kwargs: Any) -> Any:
    """Create the default client if there is none, and call it (as the SDK does: settings
    changed after the first call do not reach it)."""
    global default_client
    if not default_client:
        default_client = Client(
            write_key,
            host=host,
            debug=debug,
            max_queue_size=max_queue_size,
            send=send,
            on_error=on_error,
            gzip=gzip,
            max_retries=max_retries,
            sync_mode=sync_mode,
            timeout=timeout,
            producer=producer,
        )
    return getattr(default_client, method)(*args, **kwargs)
