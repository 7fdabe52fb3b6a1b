"""Control endpoints under /_sandbox/ (no auth, not logged): health, stats, the request log,
reset, faults, runtime settings (the listing lag), the App API's workspace data, and signed
reporting webhooks sent on demand."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cio_worker.errors import ConfigError
from cio_worker.sandbox import appdata, webhook_sender
from cio_worker.sandbox.config import check_listing_lag
from cio_worker.sandbox.faults import FaultSpecError, parse_fault
from cio_worker.sandbox.state import sandbox_state


async def health(request: Request) -> JSONResponse:
    """GET /_sandbox/health."""
    return JSONResponse({"ok": True})


async def stats(request: Request) -> JSONResponse:
    """GET /_sandbox/stats."""
    return JSONResponse(sandbox_state(request).recorder.stats())


async def requests(request: Request) -> Response:
    """GET /_sandbox/requests?since=SEQ&limit=N&api=API&family=FAMILY: records after `since`."""
    query = request.query_params
    try:
        since = _non_negative(query.get("since"), "since") or 0
        limit = _non_negative(query.get("limit"), "limit")
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    recorder = sandbox_state(request).recorder
    records = recorder.query(
        since=since, limit=limit, api=query.get("api") or None, family=query.get("family") or None
    )
    # The log can hold tens of thousands of items after a bench: orjson renders it many times
    # faster than JSONResponse, to the same document.
    rendered = recorder.json_bytes(records)
    if rendered is None:
        return JSONResponse(records)
    return Response(rendered, media_type="application/json")


def _non_negative(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isascii() or not value.isdigit():
        raise ValueError(f"{name} must be a non-negative integer")
    return int(value)


async def reset(request: Request) -> JSONResponse:
    """POST /_sandbox/reset: clear the log, stats, limits and faults."""
    sandbox_state(request).reset()
    return JSONResponse({"ok": True})


async def get_fault(request: Request) -> JSONResponse:
    """GET /_sandbox/faults: the active fault, or null."""
    fault = sandbox_state(request).faults.fault
    return JSONResponse({"fault": None if fault is None else fault.describe()})


async def set_fault(request: Request) -> JSONResponse:
    """POST /_sandbox/faults: replace the active fault; `{}` clears it.

    E.g. `{"status": 503}` for every API request, `{"status": 503, "family": "transactional"}`
    for transactional sends only (faults.py lists the keys); an invalid description answers 400.
    """
    try:
        fault = parse_fault(json.loads(await request.body() or b"{}"))
    except (ValueError, FaultSpecError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    sandbox_state(request).faults.set(fault)
    return JSONResponse({"fault": None if fault is None else fault.describe()})


async def clear_fault(request: Request) -> JSONResponse:
    """DELETE /_sandbox/faults."""
    sandbox_state(request).faults.set(None)
    return JSONResponse({"fault": None})


#: Settings POST /_sandbox/config may change while the sandbox runs.
_RUNTIME_SETTINGS = ("listing_lag_s",)


async def get_config(request: Request) -> JSONResponse:
    """GET /_sandbox/config: the runtime settings now in force."""
    return JSONResponse({"listing_lag_s": sandbox_state(request).listing_lag_s})


async def set_config(request: Request) -> JSONResponse:
    """POST /_sandbox/config: change runtime settings, e.g. `{"listing_lag_s": 2}` makes a send or
    trigger accepted from now on, and any accepted less than 2 s ago, invisible to the App API's
    reads until 2 s after it was accepted. A reset restores the configured value."""
    try:
        spec = json.loads(await request.body() or b"{}")
        if not isinstance(spec, dict) or not spec or set(spec) - set(_RUNTIME_SETTINGS):
            raise ValueError(f"body must be an object with some of {', '.join(_RUNTIME_SETTINGS)}")
        lag_s = check_listing_lag(spec["listing_lag_s"])
    except (ValueError, ConfigError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    state = sandbox_state(request)
    state.listing_lag_s = lag_s
    return JSONResponse({"listing_lag_s": state.listing_lag_s})


async def seed_app(request: Request) -> JSONResponse:
    """POST /_sandbox/app/seed: replace the workspace, e.g. `{"people": 250, "campaigns": 3}`."""
    try:
        spec = json.loads(await request.body() or b"{}")
        sizes = _seed_sizes(spec)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    state = sandbox_state(request)
    state.app_data = appdata.AppData.generate(**sizes)
    return JSONResponse({name: len(getattr(state.app_data, name)) for name in sizes})


def _seed_sizes(spec: object) -> dict[str, int]:
    names = ("people", "segments", "campaigns", "broadcasts")
    if not isinstance(spec, dict) or set(spec) - set(names):
        raise ValueError(f"body must be an object with some of {', '.join(names)}")
    for name, value in spec.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer")
        if not 0 <= value <= appdata.MAX_SEED:
            raise ValueError(f"{name} must be between 0 and {appdata.MAX_SEED}")
    return dict(spec)


async def send_webhooks(request: Request) -> JSONResponse:
    """POST /_sandbox/webhooks/send: sign and POST reporting webhooks to `url`.

    `{"url": "http://127.0.0.1:8788/", "metric": "bounced", "count": 3}`; see webhook_sender.py
    for `events`, `signature` (valid|bad|missing), `timestamp_offset_s` and `repeat`.
    """
    try:
        spec = webhook_sender.parse_send_spec(json.loads(await request.body() or b"{}"))
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    key = sandbox_state(request).config.webhook_signing_key
    return JSONResponse({"sent": await webhook_sender.send_webhooks(spec, key)})


ROUTES = [
    Route("/_sandbox/health", health, methods=["GET"]),
    Route("/_sandbox/stats", stats, methods=["GET"]),
    Route("/_sandbox/requests", requests, methods=["GET"]),
    Route("/_sandbox/reset", reset, methods=["POST"]),
    Route("/_sandbox/faults", get_fault, methods=["GET"]),
    Route("/_sandbox/faults", set_fault, methods=["POST"]),
    Route("/_sandbox/faults", clear_fault, methods=["DELETE"]),
    Route("/_sandbox/config", get_config, methods=["GET"]),
    Route("/_sandbox/config", set_config, methods=["POST"]),
    Route("/_sandbox/app/seed", seed_app, methods=["POST"]),
    Route("/_sandbox/webhooks/send", send_webhooks, methods=["POST"]),
]
