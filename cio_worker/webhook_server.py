"""`cio-worker webhooks serve`: the HTTP endpoint Customer.io's reporting webhooks are POSTed to.

An ASGI app (Starlette) served by uvicorn. `POST /` verifies the signature (webhooks.py), then
stores the event once per event_id and answers 200 only after Redis has it, so Customer.io keeps
retrying anything we did not durably take. Answers:

- 200 `{"stored": true}`, or `{"stored": false, "duplicate": true}` for a retry of a stored event;
- 401 for a missing, malformed, stale or wrong signature (counted, never stored);
- 400 for a verified body that is not an event; 413 over `MAX_BODY_BYTES`;
- 503 when Redis is unreachable (Customer.io retries later).

`GET /healthz` answers 200 for load balancers. Nothing logged carries the body or the headers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import redis
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cio_worker.config import Settings
from cio_worker.connection import get_redis
from cio_worker.errors import ValidationError, WebhookSignatureError
from cio_worker.webhooks import (
    WebhookStore,
    parse_event,
    signing_key,
    verify_signature,
)

log = structlog.get_logger("cio_worker.webhook_server")

#: Where the receiver listens unless told otherwise (put a TLS proxy in front for the internet).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8788
#: Largest accepted body: sent events can carry a whole email's HTML when "Body Content" is on.
MAX_BODY_BYTES = 5 * 1024 * 1024


class _TooLargeError(Exception):
    pass


def create_webhook_app(
    settings: Settings,
    *,
    store: WebhookStore | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The receiver app; raises ConfigError now if CUSTOMERIO_WEBHOOK_SIGNING_KEY is not set."""
    key = signing_key(settings)
    events = store or WebhookStore(get_redis(settings))

    async def receive(request: Request) -> JSONResponse:
        try:
            body = await _read_body(request)
        except _TooLargeError:
            return JSONResponse({"error": "body too large"}, status_code=413)
        except ClientDisconnect:
            return JSONResponse({"error": "client went away"}, status_code=400)
        headers = request.headers
        try:
            verify_signature(
                key,
                timestamp=headers.get("x-cio-timestamp"),
                signature=headers.get("x-cio-signature"),
                body=body,
                now=clock(),
            )
        except WebhookSignatureError as exc:
            log.warning("webhook_rejected", reason=exc.reason)
            await _count(events, f"rejected_{exc.reason}")
            return JSONResponse({"error": "invalid signature"}, status_code=401)
        try:
            event = parse_event(body)
        except ValidationError as exc:
            log.warning("webhook_invalid", field=exc.field, rule=exc.rule)
            await _count(events, "invalid")
            return JSONResponse({"error": str(exc)}, status_code=400)
        return await _store(events, event, body)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/", receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _TooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


async def _store(events: WebhookStore, event: dict[str, Any], body: bytes) -> JSONResponse:
    fields = {"event_id": event["event_id"], "metric": event["metric"]}
    try:
        # redis-py is blocking; a worker thread keeps the event loop answering other requests.
        stream_id = await anyio.to_thread.run_sync(events.append, event, body)
        await _count(events, "stored" if stream_id else "duplicate")
    except redis.RedisError as exc:
        log.error("webhook_not_stored", error=type(exc).__name__, **fields)
        return JSONResponse({"error": "storage unavailable, retry later"}, status_code=503)
    if stream_id is None:
        log.info("webhook_duplicate", **fields)
        return JSONResponse({"stored": False, "duplicate": True})
    log.info("webhook_stored", stream_id=stream_id, object_type=event["object_type"], **fields)
    return JSONResponse({"stored": True})


async def _count(events: WebhookStore, name: str) -> None:
    try:
        await anyio.to_thread.run_sync(events.count, name)
    except redis.RedisError:
        pass  # a counter is not worth failing (or delaying) the answer for


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
    )
