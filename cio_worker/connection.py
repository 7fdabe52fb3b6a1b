"""Redis clients with bounded timeouts, so a dead Redis is an error in about a second, not a hang.

`redis://`, `rediss://` and `unix://` URLs go to redis-py directly; `sentinel://host:port[;...]/db`
URLs (kombu's form; the master name comes from `?master_name=` or defaults to `mymaster`) go
through Redis Sentinel: every new connection asks the sentinels where the master is, so after a
failover the same client object reaches the new master (docs/failover.md).
"""

from __future__ import annotations

import ssl
import threading
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from cio_worker.config import Settings

_clients: dict[tuple[str, float], redis.Redis] = {}
_lock = threading.Lock()


def is_sentinel_url(url: str) -> bool:
    return urlsplit(url).scheme.startswith("sentinel")


#: What a client retries by default: a stale pooled connection, and a late answer.
RETRY_ON: tuple[type[redis.RedisError], ...] = (redis.ConnectionError, redis.TimeoutError)


def create_redis(
    url: str,
    *,
    timeout_s: float,
    read_timeout_s: float | None = None,
    retries: int = 1,
    retry_on: tuple[type[redis.RedisError], ...] = RETRY_ON,
) -> redis.Redis:
    """A new client. One retry covers a pooled connection that went stale across a Redis restart.

    `read_timeout_s` (default `timeout_s`) bounds the wait for an answer; bulk writers, whose
    one call may carry thousands of jobs, use a longer one and `retries=0`, since repeating a
    write whose answer was merely late would store it twice (`retry_on` can leave out
    `redis.TimeoutError` for the same reason).
    """
    client: redis.Redis = _connect(_BLOCKING, url, timeout_s, read_timeout_s, retries, retry_on)
    return client


def create_async_redis(
    url: str,
    *,
    timeout_s: float,
    read_timeout_s: float | None = None,
    retries: int = 1,
    retry_on: tuple[type[redis.RedisError], ...] = RETRY_ON,
) -> redis.asyncio.Redis:
    """The asyncio twin of `create_redis` (same timeouts, same Sentinel handling)."""
    client: redis.asyncio.Redis = _connect(
        _ASYNCIO, url, timeout_s, read_timeout_s, retries, retry_on
    )
    return client


async def close_async_redis(client: redis.asyncio.Redis) -> None:
    """Close `client` and, for a Sentinel client, its connections to the sentinels too (redis-py
    leaves those to the owner of the `Sentinel` object, which `create_async_redis` keeps)."""
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    await client.aclose()
    if manager is not None:
        await manager.aclose()


class _Api(NamedTuple):
    """The classes of one of redis-py's two APIs: blocking, or asyncio."""

    retry: Any
    sentinel: Any
    client: Any


_BLOCKING = _Api(Retry, Sentinel, redis.Redis)
_ASYNCIO = _Api(AsyncRetry, AsyncSentinel, redis.asyncio.Redis)


def _connect(
    api: _Api,
    url: str,
    timeout_s: float,
    read_timeout_s: float | None,
    retries: int,
    retry_on: tuple[type[redis.RedisError], ...],
) -> Any:
    """A client of `api`: straight to `url`, or to the master its sentinels name."""
    options = {
        "socket_connect_timeout": timeout_s,
        "socket_timeout": read_timeout_s if read_timeout_s is not None else timeout_s,
        "retry": api.retry(NoBackoff(), retries, supported_errors=retry_on),
    }
    if is_sentinel_url(url):
        hosts, db, master, password = parse_sentinel_url(url)
        sentinel = api.sentinel(
            hosts, sentinel_kwargs=sentinel_socket_options(timeout_s), **options
        )
        return sentinel.master_for(master, db=db, password=password)
    return api.client.from_url(url, **options)


def sentinel_socket_options(timeout_s: float) -> dict[str, float]:
    """Timeouts for the connections to the sentinels themselves: a dead sentinel is skipped
    quickly and the next one asked."""
    return {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], int, str, str | None]:
    """Split `sentinel://:pw@h1:26379;sentinel://h2:26379/0?master_name=m`.

    Returns the sentinel hosts, the database, the master's name and the password (decoded,
    as redis-py decodes a `redis://` URL's: `p%40ss` is `p@ss`).
    """
    hosts: list[tuple[str, int]] = []
    db, master, password = 0, "mymaster", None
    for part in url.split(";"):
        parts = urlsplit(part.strip())
        hosts.append((parts.hostname or "localhost", parts.port or 26379))
        password = unquote(parts.password) if parts.password else password
        if parts.path.strip("/"):
            db = int(parts.path.strip("/"))
        master = parse_qs(parts.query).get("master_name", [master])[0]
    return hosts, db, master, password


def broker_url(url: str) -> str:
    """The URL to give Celery (kombu) as `broker_url`.

    A Sentinel URL is rewritten so that every `;`-separated alternate is complete and has no
    query: `sentinel://:pw@h1:p1/0;sentinel://:pw@h2:p2/0;...`. kombu's Connection keeps the
    alternates and, when the broker connection fails (a master failover), `switch()`es to the
    next one, passing every query parameter of that URL to `Connection._init_params()` as a
    keyword: `?master_name=` on the last alternate crashed the worker with `TypeError:
    _init_params() got an unexpected keyword argument 'master_name'`. The master's name travels
    in the transport options instead (`broker_transport_options`). The database and password
    are repeated on every alternate, since kombu takes them from whichever one it switched to.
    Other URLs are returned unchanged.
    """
    if not is_sentinel_url(url):
        return url
    hosts, db, _, password = parse_sentinel_url(url)
    scheme = urlsplit(url.split(";", 1)[0].strip()).scheme
    auth = f":{quote(password, safe='')}@" if password else ""
    return ";".join(f"{scheme}://{auth}{host}:{port}/{db}" for host, port in hosts)


def broker_transport_options(url: str, *, timeout_s: float) -> dict[str, Any]:
    """The Sentinel part of kombu's `broker_transport_options` (empty for other URLs)."""
    if not is_sentinel_url(url):
        return {}
    return {
        "master_name": parse_sentinel_url(url)[2],
        "sentinel_kwargs": sentinel_socket_options(timeout_s),
    }


def broker_ssl_options(url: str) -> dict[str, Any] | None:
    """kombu's `broker_use_ssl` for `url`: verify the server's certificate on rediss://.

    Given rediss:// and no TLS options, kombu connects with `ssl_cert_reqs=CERT_NONE` (it only
    logs a warning): no certificate check at all, where redis-py checks by default. This turns
    the check on, against the system's CAs. TLS options in the URL's query (`?ssl_ca_certs=
    /path/ca.crt` for a private CA) take the place of these in kombu, as they do in redis-py.
    """
    if urlsplit(url).scheme != "rediss":
        return None
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def get_redis(settings: Settings) -> redis.Redis:
    """The process-wide client for `settings` (redis-py's pool is thread-safe and fork-aware)."""
    key = (settings.redis_url, settings.redis_timeout_s)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = create_redis(
                settings.redis_url, timeout_s=settings.redis_timeout_s
            )
        return client


def reply_text(item: object) -> str:
    """A Redis reply as text: clients made without `decode_responses` answer bytes (UTF-8 here,
    as everything cio_worker writes), scripts may answer integers."""
    return item.decode() if isinstance(item, bytes) else str(item)
