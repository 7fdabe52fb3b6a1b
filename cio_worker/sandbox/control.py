"""Control endpoints under /_sandbox/ (no auth, not logged): health, stats, the request log,
reset and faults."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cio_worker.sandbox.faults import FaultSpecError, parse_fault
from cio_worker.sandbox.state import sandbox_state


async def health(request: Request) -> JSONResponse:
    """GET /_sandbox/health."""
    return JSONResponse({"ok": True})


async def stats(request: Request) -> JSONResponse:
    """GET /_sandbox/stats."""
    return JSONResponse(sandbox_state(request).recorder.stats())


async def requests(request: Request) -> JSONResponse:
    """GET /_sandbox/requests?since=SEQ&limit=N&api=API&family=FAMILY: records after `since`."""
    query = request.query_params
    try:
        since = _non_negative(query.get("since"), "since") or 0
        limit = _non_negative(query.get("limit"), "limit")
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    records = sandbox_state(request).recorder.query(
        since=since, limit=limit, api=query.get("api") or None, family=query.get("family") or None
    )
    return JSONResponse(records)


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
    """POST /_sandbox/faults: replace the active fault; `{}` clears it."""
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


ROUTES = [
    Route("/_sandbox/health", health, methods=["GET"]),
    Route("/_sandbox/stats", stats, methods=["GET"]),
    Route("/_sandbox/requests", requests, methods=["GET"]),
    Route("/_sandbox/reset", reset, methods=["POST"]),
    Route("/_sandbox/faults", get_fault, methods=["GET"]),
    Route("/_sandbox/faults", set_fault, methods=["POST"]),
    Route("/_sandbox/faults", clear_fault, methods=["DELETE"]),
]
