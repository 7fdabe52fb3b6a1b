"""Redis clients with bounded timeouts, so a dead Redis is an error in about a second, not a hang.

`redis://`, `rediss://` and `unix://` URLs go to redis-py directly; `sentinel://host:port[;...]/db`
URLs (kombu's form; the master name comes from `?master_name=` or defaults to `mymaster`) go
through Redis Sentinel.
"""

from __future__ import annotations

import threading
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from cio_worker.config import Settings

_clients: dict[tuple[str, float], redis.Redis] = {}
_lock = threading.Lock()


def create_redis(
    url: str, *, timeout_s: float, read_timeout_s: float | None = None, retries: int = 1
) -> redis.Redis:
    """A new client. One retry covers a pooled connection that went stale across a Redis restart.

    `read_timeout_s` (default `timeout_s`) bounds the wait for an answer; bulk writers, whose
    one call may carry thousands of jobs, use a longer one and `retries=0`, since repeating a
    write whose answer was merely late would store it twice.
    """
    options = {
        "socket_connect_timeout": timeout_s,
        "socket_timeout": read_timeout_s if read_timeout_s is not None else timeout_s,
        "retry": Retry(NoBackoff(), retries),
    }
    if urlsplit(url).scheme.startswith("sentinel"):
        hosts, db, master, password = parse_sentinel_url(url)
        # redis.sentinel is untyped.
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            hosts, sentinel_kwargs={"socket_timeout": timeout_s}, **options
        )
        client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            master, db=db, password=password
        )
        return client
    return redis.Redis.from_url(url, **options)


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], int, str, str | None]:
    """Split `sentinel://:pw@h1:26379;sentinel://h2:26379/0?master_name=m`.

    Returns the sentinel hosts, the database, the master's name and the password.
    """
    hosts: list[tuple[str, int]] = []
    db, master, password = 0, "mymaster", None
    for part in url.split(";"):
        parts = urlsplit(part.strip())
        hosts.append((parts.hostname or "localhost", parts.port or 26379))
        password = parts.password or password
        if parts.path.strip("/"):
            db = int(parts.path.strip("/"))
        master = parse_qs(parts.query).get("master_name", [master])[0]
    return hosts, db, master, password


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
