"""`cio-worker webhooks serve`: the HTTP endpoint Customer.io's reporting webhooks are POSTed to.

An ASGI app (Starlette) served by uvicorn. `POST /` verifies the signature (webhooks.py), then
stores the event once per event_id and answers 200 only after Redis has it, so Customer.io keeps
retrying anything we did not durably take. Answers:

- 200 `{"stored": true}`, or `{"stored": false, "duplicate": true}` for a retry of a stored event;
- 401 for a missing, duplicated, malformed, stale or wrong signature (counted, never stored);
- 400 for a verified body that is not an event (not UTF-8 JSON, nested too deep, ids that are no
  valid Unicode, ...): odd signed bodies are refused, never a 500;
- 413 over CIO_WORKER_WEBHOOK_MAX_BODY_BYTES; 408 when the body takes longer than
  CIO_WORKER_WEBHOOK_BODY_TIMEOUT_S to arrive; 503 with Retry-After when
  CIO_WORKER_WEBHOOK_MAX_CONCURRENT_BODIES bodies are being read already;
- 503 when Redis is unreachable (Customer.io retries later).

`GET /healthz` answers 200 `{"ok": true, "redis": "ok"}` while Redis answers, else 503 with the
error's name, so a load balancer stops sending to a receiver that cannot store anything. Nothing
logged carries the body or the headers.

Holding up against clients that cannot sign. The signature covers the whole body, so a forged
request with plausible headers is only caught once its body is in; everything before that point
is bounded in memory and time instead:

- Refused on the headers alone, before a byte of body is read (and the connection closed, so the
  rest of the upload is never parsed): signature headers missing, sent twice (a proxy merging or
  a client repeating them would otherwise make "which one counts" ambiguous), malformed or stale;
  a Content-Length over the limit.
- The body limit defaults to 1 MiB. Customer.io's events are about a kilobyte; the largest are
  "sent" events with Body Content on, which carry the message's HTML: an email past ~100 KB is
  clipped by Gmail, so senders stay well under it, and even if JSON escaping (Go's encoder writes
  `<` as `\\u003c`, six bytes) tripled that, 1 MiB leaves room. The old 5 MiB let 50 forged
  posts hold 250 MB.
- At most CIO_WORKER_WEBHOOK_MAX_CONCURRENT_BODIES (32) bodies are read at once, and only a
  quarter of those (8) may be large: over 64 KiB declared, or chunked with no declared size.
  Memory held by bodies is therefore at most 8 x 1 MiB + 24 x 64 KiB, about 9.5 MiB, whatever the
  number of clients. Small bodies, which every event without Body Content is, get a lane of their
  own, so uploads stalled near the limit cannot lock Customer.io's ordinary events out. A request
  that finds no slot is answered 503 with Retry-After at once rather than queued: a queue would
  hold its connection (and what uvicorn buffered of its body) for nothing.
- Each body must arrive within CIO_WORKER_WEBHOOK_BODY_TIMEOUT_S (5 s) of its headers, or it is
  answered 408 and its slot freed. Customer.io gives up on a call after 4 s, so a slower body is
  worthless anyway; the deadline is what takes slots back from stalled uploads.
- The body is fed to an incremental HMAC as it arrives and its pieces are joined into one buffer
  only once the signature matched: a forged body is never held twice.
- Refusals are counted in Redis after the answer has gone (and its connection closed): counts
  accumulate in memory and at most one flush runs at a time, so a flood of refusals costs one
  Redis round trip at a time and cannot take the worker threads that store events.
- uvicorn bounds what comes before the app sees a request: headers to 16 KiB
  (h11_max_incomplete_event_size), idle keep-alive connections to 5 s, and requests in progress
  to MAX_CONNECTIONS (beyond it uvicorn answers 503 itself).

What this does not stop: enough clients stalling small uploads can keep every slot busy (each
for at most the body timeout), and Customer.io then gets 503s and retries; uvicorn has no timer
on a request's headers, so connections that never finish them are bounded only by the proxy in
front. Per-client limits belong in that proxy.

Retention: every append trims entries older than CIO_WORKER_WEBHOOK_RETENTION_DAYS (approximately,
whole stream nodes; see webhooks.py), so the stream stays bounded with no reader and no timer;
the receiver also trims exactly every TRIM_INTERVAL_S, so old events leave on time when no new
ones come, and so that memory comes back on a `noeviction` Redis that refuses the appends.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import redis
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cio_worker.config import Settings
from cio_worker.connection import get_redis
from cio_worker.errors import ValidationError, WebhookSignatureError
from cio_worker.webhooks._store import (
    WebhookStore,
    check_signature_headers,
    parse_event,
    signature_matches,
    signing_key,
    start_signature,
)

log = structlog.get_logger("cio_worker.webhook_server")

#: Where the receiver listens unless told otherwise (put a TLS proxy in front for the internet).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8788
#: Bodies up to this size (declared) read in the small lane; larger or chunked ones are "large".
SMALL_BODY_BYTES = 64 * 1024
#: How often the receiver trims the stream to its retention, seconds.
TRIM_INTERVAL_S = 60.0
#: How long /healthz reuses its last look at Redis, seconds (probes may come in bursts).
HEALTH_TTL_S = 1.0
#: Requests in progress uvicorn allows before answering 503 itself (a backstop: the body slots
#: are what bound memory).
MAX_CONNECTIONS = 1000
#: Largest request head (request line and headers) uvicorn's h11 parser buffers, bytes.
MAX_HEADER_BYTES = 16 * 1024
#: Seconds an idle keep-alive connection is kept.
KEEP_ALIVE_S = 5


class _TooLargeError(Exception):
    pass


class _BodySlots:
    """How many bodies are being read, in two lanes; see the module docstring. The event loop is
    single-threaded and take/give never await, so plain counters are exact."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.large = max(1, total // 4)
        self.busy = 0
        self.busy_large = 0

    def take(self, large: bool) -> bool:
        if self.busy >= self.total or (large and self.busy_large >= self.large):
            return False
        self.busy += 1
        self.busy_large += large
        return True

    def give(self, large: bool) -> None:
        self.busy -= 1
        self.busy_large -= large


class _Counters:
    """Receiver counters, added in memory and flushed to Redis by one flush at a time."""

    def __init__(self, store: WebhookStore) -> None:
        self._store = store
        self._pending: Counter[str] = Counter()
        self._flushing = False

    def add(self, name: str) -> None:
        self._pending[name] += 1

    async def flush(self) -> None:
        """Write what is pending, unless a flush is running already (it takes ours too)."""
        if self._flushing:
            return
        self._flushing = True
        try:
            while self._pending:
                batch = dict(self._pending)
                self._pending.clear()
                try:
                    await anyio.to_thread.run_sync(self._store.add_counts, batch)
                except redis.RedisError:
                    self._pending.update(batch)  # a few names: kept for the next flush
                    return  # a counter is not worth failing (or delaying) anything for
        finally:
            self._flushing = False


def create_webhook_app(
    settings: Settings,
    *,
    store: WebhookStore | None = None,
    clock: Callable[[], float] = time.time,
    trim_interval_s: float = TRIM_INTERVAL_S,
) -> Starlette:
    """The receiver app; raises ConfigError now if CUSTOMERIO_WEBHOOK_SIGNING_KEY is not set."""
    key = signing_key(settings)
    limit = settings.webhook_max_body_bytes
    timeout_s = settings.webhook_body_timeout_s
    retry_after = str(math.ceil(timeout_s))
    events = store or WebhookStore(
        get_redis(settings), retention_s=settings.webhook_retention_days * 86_400
    )
    slots = _BodySlots(settings.webhook_max_concurrent_bodies)
    counters = _Counters(events)
    health = _Health(events)

    def refuse(
        status: int, error: str, counter: str, *, close: bool = True, retry: bool = False
    ) -> JSONResponse:
        counters.add(counter)
        headers = {"retry-after": retry_after} if retry else {}
        if close:  # the body was not (all) read: end the connection rather than parse the rest
            headers["connection"] = "close"
        return JSONResponse(
            {"error": error},
            status_code=status,
            headers=headers,
            background=BackgroundTask(counters.flush),
        )

    async def receive(request: Request) -> JSONResponse:
        headers = request.headers
        try:
            signature = _one(headers, "x-cio-signature")
            timestamp = check_signature_headers(
                _one(headers, "x-cio-timestamp"), signature, now=clock()
            )
        except WebhookSignatureError as exc:
            log.warning("webhook_rejected", reason=exc.reason)
            return refuse(401, "invalid signature", f"rejected_{exc.reason}")
        declared = _declared_length(headers)
        if declared is not None and declared > limit:
            log.warning("webhook_too_large", declared=declared, limit=limit)
            return refuse(413, "body too large", "rejected_too_large")
        large = declared is None or declared > SMALL_BODY_BYTES
        if not slots.take(large):
            log.warning("webhook_busy", large=large)
            return refuse(503, "busy, retry later", "rejected_busy", retry=True)
        try:
            with anyio.fail_after(timeout_s):
                chunks, signer = await _read_body(request, start_signature(key, timestamp), limit)
        except TimeoutError:
            log.warning("webhook_body_timeout", timeout_s=timeout_s)
            return refuse(408, "body not received in time", "rejected_timeout")
        except _TooLargeError:
            log.warning("webhook_too_large", declared=declared, limit=limit)
            return refuse(413, "body too large", "rejected_too_large")
        except ClientDisconnect:
            return refuse(400, "client went away", "rejected_disconnected")
        finally:
            slots.give(large)
        if not signature_matches(signer, signature or ""):
            log.warning("webhook_rejected", reason="mismatch")
            return refuse(401, "invalid signature", "rejected_mismatch", close=False)
        body = b"".join(chunks)
        del chunks
        try:
            event = parse_event(body)
        except ValidationError as exc:
            log.warning("webhook_invalid", field=exc.field, rule=exc.rule)
            return refuse(400, str(exc), "invalid", close=False)
        return await _store(events, counters, event, body)

    async def healthz(request: Request) -> JSONResponse:
        problem = await health.problem()
        if problem is None:
            return JSONResponse({"ok": True, "redis": "ok"})
        return JSONResponse({"ok": False, "redis": problem}, status_code=503)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        trimmer = asyncio.create_task(_trim_forever(events, trim_interval_s))
        try:
            yield
        finally:
            trimmer.cancel()
            await asyncio.gather(trimmer, return_exceptions=True)

    return Starlette(
        routes=[
            Route("/", receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def _one(headers: Headers, name: str) -> str | None:
    """The header's value; refused when sent more than once (first-one-wins would let whatever
    sits between Customer.io and us pick the one that counts)."""
    values = headers.getlist(name)
    if len(values) > 1:
        raise WebhookSignatureError("duplicate", f"{name} sent more than once")
    return values[0] if values else None


def _declared_length(headers: Headers) -> int | None:
    """The body size the client declared; None when chunked (unknown until read). uvicorn's h11
    has already refused malformed or conflicting Content-Length headers."""
    declared = headers.get("content-length")
    if declared is not None and declared.strip().isdigit():
        return int(declared)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return None
    return 0


async def _read_body(
    request: Request, signer: hmac.HMAC, limit: int
) -> tuple[list[bytes], hmac.HMAC]:
    """The body's chunks, fed to `signer` as they come; _TooLargeError past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLargeError
        signer.update(chunk)
        chunks.append(chunk)
    return chunks, signer


async def _store(
    events: WebhookStore, counters: _Counters, event: Mapping[str, Any], body: bytes
) -> JSONResponse:
    fields = {"event_id": event["event_id"], "metric": event["metric"]}
    try:
        # redis-py is blocking; a worker thread keeps the event loop answering other requests.
        stream_id = await anyio.to_thread.run_sync(events.append, event, body)
    except redis.RedisError as exc:
        log.error("webhook_not_stored", error=type(exc).__name__, **fields)
        return JSONResponse({"error": "storage unavailable, retry later"}, status_code=503)
    counters.add("stored" if stream_id else "duplicate")
    flush = BackgroundTask(counters.flush)
    if stream_id is None:
        log.info("webhook_duplicate", **fields)
        return JSONResponse({"stored": False, "duplicate": True}, background=flush)
    log.info("webhook_stored", stream_id=stream_id, object_type=event["object_type"], **fields)
    return JSONResponse({"stored": True}, background=flush)


class _Health:
    """Whether Redis answers, asked at most once per HEALTH_TTL_S however many probes come:
    probes arriving while a PING is out wait for its answer instead of sending their own."""

    def __init__(self, store: WebhookStore) -> None:
        self._store = store
        self._checked_at = -math.inf
        self._problem: str | None = None
        self._checking: asyncio.Event | None = None

    async def problem(self) -> str | None:
        """None while Redis answers, else the error's name."""
        if self._checking is not None:
            await self._checking.wait()
            return self._problem
        if time.monotonic() - self._checked_at < HEALTH_TTL_S:
            return self._problem
        self._checking = checking = asyncio.Event()
        try:
            await anyio.to_thread.run_sync(self._store.ping)
            self._problem = None
        except redis.RedisError as exc:
            self._problem = type(exc).__name__
        finally:
            self._checked_at = time.monotonic()
            self._checking = None
            checking.set()
        return self._problem


async def _trim_forever(events: WebhookStore, interval_s: float) -> None:
    """Trim the stream to its retention now and every `interval_s`; say once when it fails and
    once when it works again."""
    failing = False
    while True:
        try:
            removed = await anyio.to_thread.run_sync(events.trim)
        except redis.RedisError as exc:
            if not failing:
                log.warning("webhook_trim_failed", error=type(exc).__name__)
            failing = True
        else:
            if removed or failing:
                log.info("webhook_trimmed", removed=removed, retention_s=events.retention_s)
            failing = False
        await asyncio.sleep(interval_s)


def serve_webhooks(
    settings: Settings, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> None:
    """Serve the receiver with uvicorn until interrupted (SIGINT/SIGTERM finish in-flight
    requests first)."""
    app = create_webhook_app(settings)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # our own log lines say what matters, without client details
        proxy_headers=True,
        timeout_graceful_shutdown=10,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )
