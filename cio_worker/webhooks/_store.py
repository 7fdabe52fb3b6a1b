"""The Redis side of reporting webhooks: each verified event stored once, read back by groups.

- Storage: one Redis stream; an event is appended once per `event_id` (Customer.io retries a
  delivery it did not see acknowledged, for up to seven days), under AOF like every job. Events
  older than the retention (CIO_WORKER_WEBHOOK_RETENTION_DAYS) are trimmed: approximately by
  every append itself (webhooks/_store_scripts.py), so the stream stays bounded even when nobody
  reads it, and exactly by the receiver's timer (`WebhookStore.trim`), so old events go even when
  no new ones come.
- Reading: Redis consumer groups, at least once. `read(group, consumer)` hands out new events and
  re-hands those another consumer took but did not `ack` within `claim_idle_s`; `ack` them once
  handled. A new group starts from the oldest stored event, so none is missed.
- Counters: how many events were stored, duplicates, refusals by reason (`cio-worker webhooks
  list` shows them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import redis

from cio_worker import keys
from cio_worker.connection import reply_text
from cio_worker.errors import ValidationError
from cio_worker.webhooks import _store_scripts as scripts
from cio_worker.webhooks._event import WebhookEvent

#: How long an event_id is remembered, seconds: Customer.io retries for seven days; one spare.
DEDUP_TTL_S = 8 * 86_400
#: A handed-out event not acknowledged for this long goes to the next consumer that reads, s.
DEFAULT_CLAIM_IDLE_S = 60.0
#: How long stored events are kept by default, s (CIO_WORKER_WEBHOOK_RETENTION_DAYS).
DEFAULT_RETENTION_S = 7 * 86_400


def _decode(stream_id: bytes | str, fields: Mapping[Any, Any]) -> WebhookEvent:
    """The event a stream entry holds: the fields `WebhookStore.append` writes."""
    values = {reply_text(key): reply_text(value) for key, value in fields.items()}
    timestamp = values.get("timestamp", "")
    return WebhookEvent(
        stream_id=reply_text(stream_id),
        event_id=values.get("event_id", ""),
        object_type=values.get("object_type", ""),
        metric=values.get("metric", ""),
        timestamp=int(timestamp) if timestamp.isdigit() else None,
        received_at=int(values.get("received_at_ms", "0")) / 1000,
        body=json.loads(values.get("body", "{}")),
    )


def _entries(reply: Any) -> list[tuple[Any, Any]]:
    """The (id, fields) pairs of an XREADGROUP reply, in RESP2 (list) or RESP3 (dict) form."""
    if not reply:
        return []
    groups = list(reply.values()) if isinstance(reply, dict) else [item[1] for item in reply]
    found: list[tuple[Any, Any]] = []
    for entries in groups:
        for item in entries:
            # RESP3 wraps a stream's entries in one more list; entries themselves are tuples.
            found.extend(item) if isinstance(item, list) else found.append(item)
    return found


class WebhookStore:
    """The stream of verified events, its dedup markers, its counters, and consumer groups."""

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        dedup_ttl_s: int = DEDUP_TTL_S,
        retention_s: float = DEFAULT_RETENTION_S,
    ) -> None:
        self._redis = redis_client
        self._dedup_ttl_s = dedup_ttl_s
        self.retention_s = retention_s
        self._append = redis_client.register_script(scripts.APPEND)
        self._groups: set[str] = set()

    def append(self, event: Mapping[str, Any], raw: bytes) -> str | None:
        """Store a verified event unless its event_id is stored already; the new entry's id.
        Entries older than `retention_s` are trimmed on the way (approximately: whole nodes)."""
        timestamp = event.get("timestamp")
        fields = {
            "event_id": event["event_id"],
            "object_type": event["object_type"],
            "metric": event["metric"],
            "timestamp": str(timestamp) if isinstance(timestamp, int) else "",
            "received_at_ms": str(int(time.time() * 1000)),
            "body": raw.decode("utf-8"),
        }
        retention_ms = max(1, int(self.retention_s * 1000))
        args = [
            self._dedup_ttl_s,
            retention_ms,
            *(item for pair in fields.items() for item in pair),
        ]
        stream_id = self._append(
            keys=[keys.webhook_seen(str(event["event_id"])), keys.webhook_events()], args=args
        )
        return None if stream_id is None else reply_text(stream_id)

    def count(self, name: str, amount: int = 1) -> None:
        """Add to counter `name` (stored, duplicate, rejected_<reason>, invalid, ...)."""
        self._redis.hincrby(keys.webhook_counts(), name, amount)

    def add_counts(self, deltas: Mapping[str, int]) -> None:
        """Add several counters in one round trip."""
        if not deltas:
            return
        pipe = self._redis.pipeline(transaction=False)
        for name, amount in deltas.items():
            pipe.hincrby(keys.webhook_counts(), name, amount)
        pipe.execute()

    def counts(self) -> dict[str, int]:
        raw: Mapping[Any, Any] = self._redis.hgetall(keys.webhook_counts())
        return {reply_text(name): int(value) for name, value in sorted(raw.items())}

    def recent(self, limit: int = 50, *, metric: str | None = None) -> list[WebhookEvent]:
        """The newest stored events first (at most `limit`), optionally of one metric."""
        page = max(limit, 100)
        found: list[WebhookEvent] = []
        end = "+"
        while len(found) < limit:
            batch = self._redis.xrevrange(keys.webhook_events(), max=end, count=page) or []
            for stream_id, fields in batch:
                if stream_id is None or fields is None:
                    continue
                event = _decode(stream_id, fields)
                if metric is None or event.metric == metric:
                    found.append(event)
            if len(batch) < page or batch[-1][0] is None:
                break
            end = "(" + reply_text(batch[-1][0])
        return found[:limit]

    def read(
        self,
        group: str,
        consumer: str,
        *,
        count: int = 10,
        block_s: float | None = None,
        claim_idle_s: float = DEFAULT_CLAIM_IDLE_S,
    ) -> list[WebhookEvent]:
        """Up to `count` events for `consumer` of `group`: first those left unacknowledged for
        `claim_idle_s` by any consumer, then new ones (waiting up to `block_s` for them)."""
        _check_name("group", group)
        _check_name("consumer", consumer)
        if count < 1:
            raise ValidationError("count", "must be at least 1")
        self._ensure_group(group)
        stream = keys.webhook_events()
        _, claimed, *_ = self._redis.xautoclaim(
            stream, group, consumer, int(claim_idle_s * 1000), "0-0", count=count
        )
        events, gone = [], []
        for stream_id, fields, *_ in claimed:
            if fields is None:  # trimmed away while pending (Redis 6.2): nothing to hand out
                if stream_id is not None:
                    gone.append(stream_id)
            else:
                events.append(_decode(stream_id, fields))
        if gone:
            self._redis.xack(stream, group, *gone)
        if len(events) < count:
            wait_s = None if events else block_s  # claimed ones are handed out without waiting
            events += self._read_new(group, consumer, count - len(events), wait_s)
        return events

    def _read_new(
        self, group: str, consumer: str, count: int, block_s: float | None
    ) -> list[WebhookEvent]:
        deadline = time.monotonic() + (block_s or 0)
        while True:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            block_ms = min(remaining_ms, self._max_block_ms()) if block_s else None
            try:
                reply = self._redis.xreadgroup(
                    group, consumer, {keys.webhook_events(): ">"}, count=count, block=block_ms
                )
            except redis.TimeoutError:
                # A blocking piece answered late: Redis ends blocks on its own timer (10 Hz by
                # default), so on a busy host a short block can outlast a short socket timeout.
                # Events it may have handed out stay pending in the group and are reclaimed after
                # claim_idle_s: not lost. A Redis that is really gone fails the next call.
                if not block_s:
                    raise
                if time.monotonic() >= deadline:
                    return []
                continue
            entries = _entries(reply)
            if entries or not block_s or time.monotonic() >= deadline:
                return [_decode(stream_id, fields) for stream_id, fields in entries]

    def _max_block_ms(self) -> int:
        # A BLOCK longer than the client's socket timeout would look like a dead server: wait in
        # pieces of a quarter of it, leaving the rest for a slow answer.
        timeout = self._redis.connection_pool.connection_kwargs.get("socket_timeout")
        return 10_000 if timeout is None else max(1, int(timeout * 250))

    def _ensure_group(self, group: str) -> None:
        if group in self._groups:
            return
        try:
            self._redis.xgroup_create(keys.webhook_events(), group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(group)

    def ack(self, group: str, *stream_ids: str) -> int:
        """Mark events handled for `group`; returns how many were pending."""
        if not stream_ids:
            return 0
        return int(self._redis.xack(keys.webhook_events(), group, *stream_ids))

    def trim(self, max_age_s: float | None = None) -> int:
        """Drop events stored more than `max_age_s` (default: `retention_s`) ago, read or not,
        exactly; returns how many. The age is measured on Redis's clock, as stream ids are.

        Whole nodes go first, in approximate XTRIMs that Redis caps at 10,000 entries each, so a
        stream grown huge is cut down without blocking Redis for long; then one exact XTRIM
        takes the old entries left in the first remaining node."""
        age_ms = int((self.retention_s if max_age_s is None else max_age_s) * 1000)
        seconds, micros = self._redis.time()
        oldest_ms = int(seconds) * 1000 + int(micros) // 1000 - age_ms
        if oldest_ms <= 0:
            return 0
        stream, minid = keys.webhook_events(), f"{oldest_ms}-0"
        removed = 0
        while True:
            step = int(self._redis.xtrim(stream, minid=minid, approximate=True))
            removed += step
            if not step:
                break
        return removed + int(self._redis.xtrim(stream, minid=minid, approximate=False))

    def ping(self) -> None:
        """Raise redis.RedisError unless Redis answers."""
        self._redis.ping()


def _check_name(field: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise ValidationError(field, "must be a non-empty string of at most 200 characters")
