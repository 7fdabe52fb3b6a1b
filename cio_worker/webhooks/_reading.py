"""The stored events for application code and operators, from Settings alone.

Each call opens the store on the configured Redis (or the client given): what
`webhooks.read(...)` / `webhooks.ack(...)` in the package's docstring are.
"""

from __future__ import annotations

import redis

from cio_worker.config import Settings
from cio_worker.connection import get_redis
from cio_worker.webhooks._event import WebhookEvent
from cio_worker.webhooks._store import DEFAULT_CLAIM_IDLE_S, WebhookStore


def _store(settings: Settings | None, redis_client: redis.Redis | None) -> WebhookStore:
    client = redis_client or get_redis(settings or Settings.from_env())
    return WebhookStore(client)


def read(
    group: str,
    consumer: str,
    *,
    count: int = 10,
    block_s: float | None = None,
    claim_idle_s: float = DEFAULT_CLAIM_IDLE_S,
    settings: Settings | None = None,
    redis_client: redis.Redis | None = None,
) -> list[WebhookEvent]:
    """Events for `consumer` in consumer group `group` (created on first use); see the package
    docstring. `ack` each one once handled, or it is handed out again after `claim_idle_s`."""
    store = _store(settings, redis_client)
    return store.read(group, consumer, count=count, block_s=block_s, claim_idle_s=claim_idle_s)


def ack(
    group: str,
    *events: WebhookEvent | str,
    settings: Settings | None = None,
    redis_client: redis.Redis | None = None,
) -> int:
    """Acknowledge handled events (WebhookEvent or stream ids) for `group`."""
    ids = [event.stream_id if isinstance(event, WebhookEvent) else event for event in events]
    return _store(settings, redis_client).ack(group, *ids)


def list_events(
    limit: int = 50,
    *,
    metric: str | None = None,
    settings: Settings | None = None,
    redis_client: redis.Redis | None = None,
) -> list[WebhookEvent]:
    """The newest stored events, for operators (`cio-worker webhooks list`)."""
    return _store(settings, redis_client).recent(limit, metric=metric)
