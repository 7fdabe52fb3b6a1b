"""Customer.io over httpx: a sync and an async client over one shared base, as httpx has them.

Everything but the I/O lives once, in `BaseCustomerIoClient`: httpx's options, the URL and
credentials of each API, and the mapping of transport failures to `TransportError` (answers are
mapped in _answers.py). Only this module catches httpx errors; it re-raises ours (errors.py) `from`
them. Credentials go into headers here and nowhere else, and never into a message or a log line.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from cio_worker.config import Settings
from cio_worker.customerio._answers import Answer, outcome
from cio_worker.customerio._operations import Api, HttpOperation
from cio_worker.errors import ConfigError, RejectedError, TransportError
from cio_worker.version import __version__

USER_AGENT = (
    f"cio-worker/{__version__} (+https://pypi.org/project/cio-worker/) httpx/{httpx.__version__}"
)
#: Connections kept open per host; more than a worker's threads never help.
MAX_CONNECTIONS = 32


class BaseCustomerIoClient:
    """What both clients share: the options of their httpx client, and each request's URL,
    credentials and transport errors. Subclasses add only the sending."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._base = {
            "track": settings.track_url,
            "app": settings.app_url,
            "pipelines": settings.pipelines_url,
        }

    def _httpx_options(self) -> dict[str, Any]:
        """Keyword arguments for `httpx.Client` or `httpx.AsyncClient`."""
        timeout_s = self.settings.http_timeout_s
        return {
            "timeout": httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            "headers": {"User-Agent": USER_AGENT, "Accept": "application/json"},
            "limits": httpx.Limits(
                max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
            ),
            # A cross-host redirect must not carry our Authorization header.
            "follow_redirects": False,
        }

    def _request(
        self, http: httpx.Client | httpx.AsyncClient, op: HttpOperation, job_id: str | None
    ) -> httpx.Request:
        """`op` as `http` sends it: exact URL, client headers, the API's credential."""
        headers = {**op.headers, "Authorization": self._authorization(op.api)}
        if op.content is not None:
            headers["Content-Type"] = "application/json"
        return http.build_request(
            op.method,
            _exact_url(self._base[op.api], op, job_id),
            json=op.json if op.content is None else None,
            content=op.content,
            headers=headers,
        )

    @contextmanager
    def _transport_errors(self, job_id: str | None) -> Iterator[None]:
        """httpx's failures to get an answer, raised as `TransportError`."""
        try:
            yield
        except httpx.TimeoutException as exc:
            # A connect or pool timeout means nothing left this process; a read or write timeout
            # means Customer.io may have acted on the request: the outcome is unknown.
            sent = not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            raise TransportError(
                f"{type(exc).__name__} after {self.settings.http_timeout_s:g}s",
                request_sent=sent,
                job_id=job_id,
            ) from exc
        except httpx.TransportError as exc:
            sent = not isinstance(exc, httpx.ConnectError)
            raise TransportError(
                f"{type(exc).__name__}: {exc}", request_sent=sent, job_id=job_id
            ) from exc

    def _authorization(self, api: Api) -> str:
        s = self.settings
        if api == "app":
            if not s.app_api_key:
                raise ConfigError("CUSTOMERIO_APP_API_KEY: not set; the App API needs it")
            return f"Bearer {s.app_api_key}"
        if api == "pipelines":
            if not s.pipelines_api_key:
                raise ConfigError(
                    "CUSTOMERIO_PIPELINES_API_KEY: not set; the Pipelines API needs it"
                )
            return _basic(s.pipelines_api_key, "")
        if not (s.site_id and s.track_api_key):
            raise ConfigError(
                "CUSTOMERIO_SITE_ID and CUSTOMERIO_TRACK_API_KEY: both needed for Track"
            )
        return _basic(s.site_id, s.track_api_key)


class CustomerIoClient(BaseCustomerIoClient):
    """Sends `HttpOperation`s. Thread-safe: httpx's pool is shared by a worker's threads."""

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(settings)
        self._http = httpx.Client(transport=transport, **self._httpx_options())

    def close(self) -> None:
        self._http.close()

    def send(self, op: HttpOperation, *, job_id: str | None = None) -> Answer:
        """Send one request; return on 2xx, raise a `DeliveryError` subclass otherwise."""
        request = self._request(self._http, op, job_id)
        started = time.monotonic()
        with self._transport_errors(job_id):
            response = self._http.send(request)
        return outcome(op, response, time.monotonic() - started, job_id)


class AsyncCustomerIoClient(BaseCustomerIoClient):
    """`CustomerIoClient` for asyncio: `await client.send(op)`. One per event loop (its
    connections belong to the loop that opened them)."""

    def __init__(
        self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        super().__init__(settings)
        self._http = httpx.AsyncClient(transport=transport, **self._httpx_options())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, op: HttpOperation, *, job_id: str | None = None) -> Answer:
        """Send one request; return on 2xx, raise a `DeliveryError` subclass otherwise."""
        request = self._request(self._http, op, job_id)
        started = time.monotonic()
        with self._transport_errors(job_id):
            response = await self._http.send(request)
        return outcome(op, response, time.monotonic() - started, job_id)


def _exact_url(base: str, op: HttpOperation, job_id: str | None) -> httpx.URL:
    """The URL to request, refused if httpx would send another path than `op.path`.

    httpx removes dot segments (`/customers/victim/devices/..` becomes `/customers/victim`), so an
    id of `.` or `..` would turn a request on one resource into a request on another. Enqueue
    refuses such ids (validation.py); this catches any other way one could reach a path, e.g. a
    job stored before that rule: it is dead-lettered, and nothing is sent.
    """
    url = httpx.URL(base + op.path)
    if not url.raw_path.decode("ascii").split("?", 1)[0].endswith(op.path.split("?", 1)[0]):
        raise RejectedError(
            f"not sent: {op.method} {op.api}:{op.route} has an id the URL would not carry "
            "literally ('.' or '..' as a path segment)",
            job_id=job_id,
        )
    return url


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


_process_client: CustomerIoClient | None = None
_process_lock = threading.Lock()


def get_client(settings: Settings) -> CustomerIoClient:
    """The one pooled client of this process (created after fork, in the worker)."""
    global _process_client
    with _process_lock:
        if _process_client is None or _process_client.settings != settings:
            _process_client = CustomerIoClient(settings)
        return _process_client
