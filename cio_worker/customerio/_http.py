"""Customer.io over httpx: one pooled client per process, each response mapped to one outcome.

Only this module catches httpx errors; it re-raises ours (errors.py) `from` them. Credentials go
into headers here and nowhere else, and never into a message or a log line. Neither do the ids in
a path: messages (and so dead-letter reasons) name the route template, `/api/v1/customers/{id}`.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from cio_worker.config import Settings
from cio_worker.customerio._operations import Api, HttpOperation
from cio_worker.errors import (
    AuthError,
    ConfigError,
    RateLimitedError,
    RejectedError,
    ServerError,
    TransportError,
)
from cio_worker.version import __version__

USER_AGENT = (
    f"cio-worker/{__version__} (+https://pypi.org/project/cio-worker/) httpx/{httpx.__version__}"
)
#: Characters of a response body kept for an error message or a dead letter.
BODY_EXCERPT_CHARS = 500
#: Connections kept open per host; more than a worker's threads never help.
MAX_CONNECTIONS = 32


@dataclass(frozen=True, slots=True)
class Delivered:
    """A 2xx answer: its status, parsed JSON body (or None) and round-trip time."""

    status_code: int
    body: Any
    elapsed_s: float


class CustomerIoClient:
    """Sends `HttpOperation`s. Thread-safe: httpx's pool is shared by a worker's threads."""

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        timeout = httpx.Timeout(settings.http_timeout_s, connect=min(settings.http_timeout_s, 5.0))
        self._http = httpx.Client(
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
            ),
            follow_redirects=False,  # a cross-host redirect must not carry our Authorization header
        )
        self._base = {
            "track": settings.track_url,
            "app": settings.app_url,
            "pipelines": settings.pipelines_url,
        }

    def close(self) -> None:
        self._http.close()

    def send(self, op: HttpOperation, *, job_id: str | None = None) -> Delivered:
        """Send one request; return on 2xx, raise a `DeliveryError` subclass otherwise."""
        headers = {**op.headers, "Authorization": self._authorization(op.api)}
        if op.content is not None:
            headers["Content-Type"] = "application/json"
        url = _exact_url(self._base[op.api], op, job_id)
        started = time.monotonic()
        try:
            response = self._http.request(
                op.method,
                url,
                json=op.json if op.content is None else None,
                content=op.content,
                headers=headers,
            )
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
        elapsed = time.monotonic() - started
        return _outcome(op, response, elapsed, job_id)

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


def _outcome(
    op: HttpOperation, response: httpx.Response, elapsed: float, job_id: str | None
) -> Delivered:
    status = response.status_code
    if 200 <= status < 300:
        return Delivered(status, _json_or_none(response), elapsed)
    excerpt = response.text[:BODY_EXCERPT_CHARS]
    where = f"{op.method} {op.api}:{op.route}"  # the template: no person's id in a dead letter
    info: dict[str, Any] = {"job_id": job_id, "status_code": status, "body_excerpt": excerpt}
    if status == 429:
        raise RateLimitedError(
            f"429 from {op.api}", retry_after_seconds=parse_retry_after(response.headers), **info
        )
    if status == 408 or status >= 500:
        raise ServerError(
            f"{status} from {where}",
            retry_after_seconds=parse_retry_after(response.headers),
            **info,
        )
    if status in (401, 403):
        raise AuthError(
            f"{status} from {op.api}: the {op.api} credential was refused "
            f"({_credential_names(op.api)})",
            credential=op.api,
            **info,
        )
    raise RejectedError(f"{status} from {where}: {excerpt}", **info)


def _credential_names(api: Api) -> str:
    return {
        "track": "CUSTOMERIO_SITE_ID / CUSTOMERIO_TRACK_API_KEY",
        "app": "CUSTOMERIO_APP_API_KEY",
        "pipelines": "CUSTOMERIO_PIPELINES_API_KEY",
    }[api]


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json() if response.content else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def parse_retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """`Retry-After` in seconds (delta-seconds or an HTTP-date), or None if absent or invalid."""
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime dates carry no zone; HTTP dates are always UTC
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


_process_client: CustomerIoClient | None = None
_process_lock = threading.Lock()


def get_client(settings: Settings) -> CustomerIoClient:
    """The one pooled client of this process (created after fork, in the worker)."""
    global _process_client
    with _process_lock:
        if _process_client is None or _process_client.settings != settings:
            _process_client = CustomerIoClient(settings)
        return _process_client
