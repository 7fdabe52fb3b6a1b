"""What `CustomerIO` and `APIClient` share: the official package's exception, regions and
constructor arguments, and the producer each call enqueues through.

The arguments that configure HTTP (host, port, url, retries, timeout, backoff, pooling) are
accepted and kept as attributes, as the official clients keep them, and otherwise ignored:
delivery is the workers' job, and its URLs, retries and timeouts are their settings
(`CUSTOMERIO_REGION`, `CIO_WORKER_MAX_ATTEMPTS`, `CIO_WORKER_HTTP_TIMEOUT_S`...). Credentials are
accepted and not kept: the workers hold them (`CUSTOMERIO_SITE_ID`, `..._API_KEY`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

from cio_worker.compat._common import enqueue
from cio_worker.errors import CioWorkerError
from cio_worker.produce import Producer

T = TypeVar("T")


class CustomerIOException(Exception):
    """What the official package raises; here for bad input and for a job Redis did not take
    (the cio_worker error, `ValidationError` or `EnqueueError`, is its `__cause__`)."""


class Region(NamedTuple):
    name: str
    track_host: str
    api_host: str


class Regions:
    US = Region("us", "track.customer.io", "api.customer.io")
    EU = Region("eu", "track-eu.customer.io", "api-eu.customer.io")


class ClientBase:
    """Holds the official clients' HTTP settings (unused) and the producer calls go through."""

    def __init__(
        self,
        region: Any,
        retries: int,
        timeout: float,
        backoff_factor: float,
        use_connection_pooling: bool,
        producer: Producer | None,
    ) -> None:
        # The official check is `isinstance(region, Region)`; a `Regions.EU` imported from the
        # official package is accepted too. Which region the data goes to is CUSTOMERIO_REGION.
        if getattr(region, "name", None) not in ("us", "eu"):
            raise CustomerIOException("invalid region provided")
        self.region = region
        self.retries = retries
        self.timeout = timeout
        self.backoff_factor = backoff_factor
        self.use_connection_pooling = use_connection_pooling
        #: The producer calls enqueue through; None: cio_worker's default producer.
        self.producer = producer

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to close: calls hold no connection of their own (the producer's is shared)."""

    def _enqueue(self, kind: str, *args: Any, **kwargs: Any) -> str:
        with customerio_errors():
            return enqueue(self.producer, kind, *args, **kwargs)


@contextmanager
def customerio_errors() -> Iterator[None]:
    """cio_worker's errors raised as `CustomerIOException`, the one the official client raises,
    so callers' `except CustomerIOException` keep working."""
    try:
        yield
    except CioWorkerError as exc:
        raise CustomerIOException(str(exc)) from exc


def required(call: str, field: str, value: object) -> None:
    """The official client's blank checks, with its messages."""
    if value is None or value == "":
        raise CustomerIOException(f"{field} cannot be blank in {call}")


def unsupported_call(name: str, alternative: str) -> Callable[..., Any]:
    """A method of the official client that cio_worker has no job for."""

    def call(self: object, *args: object, **kwargs: object) -> Any:
        raise NotImplementedError(
            f"{name}: cio_worker has no job for this call; {alternative} (docs/migrating.md)"
        )

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"Not offered by cio_worker: {alternative}."
    return call
