"""The receiver: an ASGI app (Starlette) Customer.io's reporting webhooks are POSTed to.

`POST /` verifies the signature (webhooks/_signature.py), then stores the event once per event_id
and answers 200 only after Redis has it, so Customer.io keeps retrying anything we did not
durably take. Answers:

- 200 `{"stored": true}`, or `{"stored": false, "duplicate": true}` for a retry of a stored event;
- 401 for a missing, duplicated, malformed, stale or wrong signature (counted, never stored);
- 400 for a verified body that is not an event (not UTF-8 JSON, nested too deep, ids that are no
  valid Unicode, ...): odd signed bodies are refused, never a 500;
- 413 over CIO_WORKER_WEBHOOK_MAX_BODY_BYTES; 408 when the body takes longer than
  CIO_WORKER_WEBHOOK_BODY_TIMEOUT_S to arrive; 503 with Retry-After when
  CIO_WORKER_WEBHOOK_MAX_CONCURRENT_BODIES bodies are being read already (webhooks/_limits.py
  says why each bound is what it is);
- 503 when Redis is unreachable (Customer.io retries later).

`GET /healthz` answers 200 `{"ok": true, "redis": "ok"}` while Redis answers, else 503 with the
error's name, so a load balancer stops sending to a receiver that cannot store anything. Nothing
logged carries the body or the headers.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import redis
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cio_worker import logs
from cio_worker.config import Settings
from cio_worker.connection import get_redis
from cio_worker.errors import ValidationError, WebhookSignatureError
from cio_worker.webhooks._event import parse_event
from cio_worker.webhooks._limits import (
    SMALL_BODY_BYTES,
    BodySlots,
    BodyTooLargeError,
    declared_length,
    read_body,
    single_header,
)
from cio_worker.webhooks._signature import (
    check_signature_headers,
    signature_matches,
    signing_key,
    start_signature,
)
from cio_worker.webhooks._store import WebhookStore
from cio_worker.webhooks._upkeep import (
    TRIM_INTERVAL_S,
    ReceiverCounters,
    RedisHealth,
    trim_forever,
)

log = logs.get_logger(__name__)


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
    slots = BodySlots(settings.webhook_max_concurrent_bodies)
    counters = ReceiverCounters(events)
    health = RedisHealth(events)

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
            signature = single_header(headers, "x-cio-signature")
            timestamp = check_signature_headers(
                single_header(headers, "x-cio-timestamp"), signature, now=clock()
            )
        except WebhookSignatureError as exc:
            log.warning("webhook_rejected", reason=exc.reason)
            return refuse(401, "invalid signature", f"rejected_{exc.reason}")
        declared = declared_length(headers)
        if declared is not None and declared > limit:
            log.warning("webhook_too_large", declared=declared, limit=limit)
            return refuse(413, "body too large", "rejected_too_large")
        large = declared is None or declared > SMALL_BODY_BYTES
        if not slots.take(large):
            log.warning("webhook_busy", large=large)
            return refuse(503, "busy, retry later", "rejected_busy", retry=True)
        try:
            with anyio.fail_after(timeout_s):
                chunks, signer = await read_body(request, start_signature(key, timestamp), limit)
        except TimeoutError:
            log.warning("webhook_body_timeout", timeout_s=timeout_s)
            return refuse(408, "body not received in time", "rejected_timeout")
        except BodyTooLargeError:
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
        trimmer = asyncio.create_task(trim_forever(events, trim_interval_s))
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


async def _store(
    events: WebhookStore, counters: ReceiverCounters, event: Mapping[str, Any], body: bytes
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
