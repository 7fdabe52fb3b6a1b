"""The sandbox's ASGI application (Starlette): routes every API request through auth, faults,
limits and body checks, records it, and answers in the API's own shape."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from urllib.parse import quote

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cio_worker.sandbox import control, reads
from cio_worker.sandbox.auth import AuthResult, authenticate
from cio_worker.sandbox.checks import Incoming
from cio_worker.sandbox.config import SandboxConfig
from cio_worker.sandbox.endpoints import Endpoint, Match, resolve
from cio_worker.sandbox.faults import DropConnection
from cio_worker.sandbox.read_params import View
from cio_worker.sandbox.responses import (
    Reply,
    injected,
    meta_error,
    problems_reply,
    rate_limited,
    unauthorized,
)
from cio_worker.sandbox.state import SandboxState, sandbox_state

#: Methods the catch-all API route takes; anything unknown answers 404/405 in Customer.io's shape.
_API_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def create_app(config: SandboxConfig | None = None) -> Starlette:
    """A sandbox serving the Track v1/v2, App and Pipelines APIs, plus /_sandbox/ controls.

    Each app has its own log, limits and faults (on `app.state.sandbox`).
    """
    app = Starlette(routes=[*control.ROUTES, Route("/{path:path}", _handle, methods=_API_METHODS)])
    app.state.sandbox = SandboxState.create(config or SandboxConfig())
    return app


@dataclass
class _Exchange:
    """One API request on its way through: what gets recorded, whatever the outcome."""

    state: SandboxState
    request: Request
    arrived_at: float
    raw_path: str
    body: object
    #: False when the body came from the stdlib's parser, so may hold NaN or an infinity.
    plain_json: bool = True
    match: Match | None = None
    auth: AuthResult | None = None
    fault: str | None = None

    def answer(
        self, reply: Reply, *, accepted_at: float | None = None, rate_limited: bool = False
    ) -> Response:
        """Record the exchange with `reply`'s status and turn the reply into a response."""
        self._record(reply.status, reply.dropped, accepted_at, rate_limited)
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)

    def drop(self) -> Response:
        """Record a dropped connection (no status) and return the response that drops it."""
        self._record(None, False, None, False)
        return DropConnection()

    def drop_answer(
        self, reply: Reply, *, accepted_at: float | None = None, rate_limited: bool = False
    ) -> Response:
        """Record an exchange processed in full whose answer is then lost: no status reached the
        client, `answered` holds the one it would have had. Returns the response that drops it."""
        self._record(None, reply.dropped, accepted_at, rate_limited, answered=reply.status)
        return DropConnection(reply.status)

    def _record(
        self,
        status: int | None,
        dropped: bool,
        accepted_at: float | None,
        rate_limited: bool,
        *,
        answered: int | None = None,
    ) -> None:
        endpoint = None if self.match is None else self.match.endpoint
        headers = self.request.headers
        query = self.request.scope.get("query_string", b"").decode("latin-1")
        record = {
            "t": self.arrived_at,
            "api": None if endpoint is None else endpoint.api,
            "family": None if endpoint is None else endpoint.family,
            "endpoint": None if endpoint is None else endpoint.name,
            "method": self.request.method,
            "path": f"{self.raw_path}?{query}" if query else self.raw_path,
            "path_id": None if self.match is None else self.match.path_id,
            "status": status,
            "auth": self.auth,
            "user_agent": headers.get("user-agent"),
            "headers": {
                "content-type": headers.get("content-type"),
                "x-strict-mode": headers.get("x-strict-mode"),
            },
            "body": self.body,
            "dropped": dropped,
            "fault": self.fault,
            # What a drop_after processed but never delivered; None otherwise.
            "answered": answered,
        }
        self.state.recorder.add(
            record,
            family=None if endpoint is None else endpoint.family,
            accepted_at=accepted_at,
            rate_limited=rate_limited,
            plain_json=self.plain_json,
        )


async def _handle(request: Request) -> Response:
    """Every API request: route, auth, fault, limit, body checks, then the success answer."""
    state = sandbox_state(request)
    config = state.config
    arrived_at = time.time()
    data = await request.body()
    body, body_error, plain_json = _parse_body(data)
    raw_path = _raw_path(request)
    exchange = _Exchange(state, request, arrived_at, raw_path, body, plain_json)

    match, allowed = resolve(request.method, raw_path)
    if match is None:
        if allowed:
            response = exchange.answer(meta_error(405, "method not allowed"))
            response.headers["Allow"] = ", ".join(allowed)
            return response
        return exchange.answer(meta_error(404, "not found"))
    exchange.match = match
    endpoint = match.endpoint
    strict = request.headers.get("x-strict-mode") == "1"

    exchange.auth = authenticate(endpoint.api, request.headers.get("authorization"), config)
    if exchange.auth != "ok":
        return exchange.answer(unauthorized(endpoint.api, strict=strict))

    fault = state.faults.take(endpoint.family)
    drop_after = False
    if fault is not None:
        if fault.delay_s > 0:
            exchange.fault = "delay"
            await asyncio.sleep(fault.delay_s)
        if fault.drop:
            exchange.fault = "drop"
            return exchange.drop()
        if fault.status is not None:
            exchange.fault = "status"
            return exchange.answer(injected(endpoint.api, fault.status, fault.retry_after))
        if fault.drop_after:
            # Processed like any request below; only the answer is lost.
            exchange.fault = "drop_after"
            drop_after = True
    finish = exchange.drop_answer if drop_after else exchange.answer

    now = config.clock()
    wait_s = state.limits.admit(endpoint.family, now)
    if wait_s is not None:
        reply = rate_limited(wait_s, send_retry_after=config.retry_after)
        return finish(reply, rate_limited=True)

    incoming = Incoming(body, body_error, len(data), match.params, config)
    problems = endpoint.check(incoming)
    if problems:
        reply = problems_reply(endpoint.api, problems, strict=strict)
    elif endpoint.reply == "read":
        view = View(state.app_data, now, state.listing_lag_s, config.missing_broadcast_ids)
        reply = reads.answer(endpoint.name, view, match.params, request.query_params, body)
    else:
        reply = Reply(200, _success_body(endpoint, match, state, request, body, now))
    return finish(reply, accepted_at=now)


def _success_body(
    endpoint: Endpoint,
    match: Match,
    state: SandboxState,
    request: Request,
    body: object,
    accepted_at: float,
) -> object:
    """The answer to an accepted request; sends and triggers are remembered for the reads, which
    show them once the listing lag has passed since `accepted_at` (sandbox clock)."""
    kind = endpoint.reply
    if kind == "region":
        base_url = f"{request.url.scheme}://{request.url.netloc}"
        return {"url": base_url, "region": "us", "environment_id": 1}
    if kind == "delivery":
        delivery_id, queued_at = uuid.uuid4().hex, int(time.time())
        state.app_data.record_delivery(
            endpoint.name, body, delivery_id, queued_at, accepted_at=accepted_at
        )
        return {"delivery_id": delivery_id, "queued_at": queued_at}
    if kind == "trigger":
        trigger_id = state.new_trigger_id()
        broadcast_id = match.params["broadcast_id"]  # the body checks refuse a non-number
        if broadcast_id.isascii() and broadcast_id.isdigit():
            state.app_data.record_trigger(
                int(broadcast_id), trigger_id, int(time.time()), accepted_at=accepted_at
            )
        return {"id": trigger_id}
    return {}


#: Maps every digit to "0", so a run of digits shows as a run of zeros.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
#: A number this many digits long may not fit 64 bits, where orjson makes an integer a float.
_LONG_NUMBER = b"0" * 19


def _parse_body(data: bytes) -> tuple[object, str | None, bool]:
    """(the JSON body, None) or (None, why there is none: "missing", "invalid JSON"), and
    whether the body is plain JSON: parsed by orjson, so free of NaN and infinities.

    The body is whatever the stdlib's `json.loads` makes of it. orjson parses it, a few times
    faster, when that gives the same: for a body it takes whose numbers have fewer than 19
    digits in a row (it makes a longer integer a float). Whatever orjson refuses goes to the
    stdlib, which also takes NaN, Infinity, lone surrogates, a BOM, UTF-16 and UTF-32.
    """
    if not data or data.isspace():
        return None, "missing", True
    if _LONG_NUMBER not in data.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(data), None, True
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(data), None, False
    except ValueError:
        return None, "invalid JSON", True


def _raw_path(request: Request) -> str:
    """The path as the client sent it, percent-encoding intact."""
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw.decode("latin-1").split("?", 1)[0]
    # Servers may omit raw_path; re-encoding the decoded path is the best left to do.
    return quote(request.scope["path"])
