"""Fault injection for retry tests: answer a given status, answer late, or drop the connection,
either before the request is processed (`drop`: nothing happened) or after (`drop_after`: the
request was accepted and took effect, only its answer is lost).

One fault is active at a time. It applies to API requests that passed auth, before limits and body
checks, and ends after `count` firings (or lasts until cleared when there is no count). A fault
may be scoped to some endpoint families (`"family": "transactional"` or a list of them): requests
of other families pass untouched and count neither towards `every` nor towards `count`, so one
family can be down while the others deliver normally.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from cio_worker.errors import CioWorkerError
from cio_worker.sandbox.limits import FAMILIES

#: Longest injectable delay, seconds: long enough for any client timeout, short of a hung test.
MAX_DELAY_S = 600.0

_KEYS = frozenset(
    {"status", "count", "every", "delay_s", "drop", "drop_after", "retry_after", "family"}
)


class FaultSpecError(CioWorkerError, ValueError):
    """A fault description posted to /_sandbox/faults is invalid."""


class InjectedDropError(CioWorkerError):
    """Raised after the status line to make the server close the connection mid-response."""


@dataclass(frozen=True)
class Fault:
    """What to do to the requests a fault hits.

    Attributes:
        status: answer this status instead of handling the request.
        delay_s: wait this long first, seconds.
        drop: close the connection without a complete answer, before the request is processed
            (nothing is accepted, counted or recorded as sent).
        drop_after: process the request fully (limits, checks, accepted, recorded as a delivery
            or trigger), then close the connection without its answer.
        retry_after: `Retry-After` header for `status`, whole seconds.
        count: how many requests to hit; None for until cleared.
        every: hit only every n-th request (the n-th, 2n-th, ...).
        family: hit only requests of these endpoint families (limits.FAMILIES: track,
            pipelines, transactional, broadcast, app); None for every request. Given as one
            name, it is described as one name.
    """

    status: int | None = None
    delay_s: float = 0.0
    drop: bool = False
    drop_after: bool = False
    retry_after: int | None = None
    count: int | None = None
    every: int | None = None
    family: str | tuple[str, ...] | None = None

    def hits(self, family: str | None) -> bool:
        """Whether a request of endpoint family `family` is in the fault's scope."""
        if self.family is None:
            return True
        if isinstance(self.family, str):
            return family == self.family
        return family in self.family

    def describe(self) -> dict[str, object]:
        """The fault as JSON, without unset fields."""
        unset = {"delay_s": 0.0, "drop": False, "drop_after": False}
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
            if value is not None and (key not in unset or value != unset[key])
        }


def parse_fault(spec: object) -> Fault | None:
    """A Fault from its JSON description; None for `{}` (no fault). Raises FaultSpecError."""
    if not isinstance(spec, dict):
        raise FaultSpecError("fault must be a JSON object")
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise FaultSpecError(f"unknown fault keys: {', '.join(unknown)}")
    if not spec:
        return None
    status = _int_or_none(spec, "status", 200, 599)
    drop = spec.get("drop", False)
    if not isinstance(drop, bool):
        raise FaultSpecError("drop must be true or false")
    drop_after = spec.get("drop_after", False)
    if not isinstance(drop_after, bool):
        raise FaultSpecError("drop_after must be true or false")
    delay_s = spec.get("delay_s", 0.0)
    if isinstance(delay_s, bool) or not isinstance(delay_s, int | float):
        raise FaultSpecError("delay_s must be a number of seconds")
    if not 0 <= delay_s <= MAX_DELAY_S:
        raise FaultSpecError(f"delay_s must be between 0 and {MAX_DELAY_S}")
    if status is None and not drop and not drop_after and "delay_s" not in spec:
        raise FaultSpecError("a fault needs status, drop, drop_after or delay_s")
    if sum((status is not None, drop, drop_after)) > 1:
        raise FaultSpecError("status, drop and drop_after exclude each other")
    retry_after = _int_or_none(spec, "retry_after", 0, 86_400)
    if retry_after is not None and status is None:
        raise FaultSpecError("retry_after needs status")
    return Fault(
        status=status,
        delay_s=float(delay_s),
        drop=drop,
        drop_after=drop_after,
        retry_after=retry_after,
        count=_int_or_none(spec, "count", 1, None),
        every=_int_or_none(spec, "every", 1, None),
        family=_family(spec.get("family")),
    )


def _family(value: object) -> str | tuple[str, ...] | None:
    """The `family` scope: None, one family name, or a non-empty list of distinct names."""
    if value is None:
        return None
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise FaultSpecError("family must be a family name or a non-empty list of them")
    unknown = sorted(set(names) - set(FAMILIES))
    if unknown:
        raise FaultSpecError(
            f"unknown family {', '.join(map(repr, unknown))}: must be one of {', '.join(FAMILIES)}"
        )
    if len(set(names)) != len(names):
        raise FaultSpecError("family lists a name twice")
    return value if isinstance(value, str) else tuple(names)


def _int_or_none(spec: Mapping[str, object], key: str, low: int, high: int | None) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultSpecError(f"{key} must be an integer")
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise FaultSpecError(f"{key} must be {bounds}")
    return value


class FaultInjector:
    """The active fault and how far it has got."""

    def __init__(self) -> None:
        self._fault: Fault | None = None
        self._seen = 0
        self._fired = 0

    @property
    def fault(self) -> Fault | None:
        """The active fault, if any."""
        return self._fault

    def set(self, fault: Fault | None) -> None:
        """Replace the active fault (None clears) and restart its counters."""
        self._fault = fault
        self._seen = 0
        self._fired = 0

    def take(self, family: str | None = None) -> Fault | None:
        """The fault that hits this request of endpoint family `family`, or None; counts the
        request and the firing (a request outside the fault's scope counts for nothing)."""
        fault = self._fault
        if fault is None or not fault.hits(family):
            return None
        self._seen += 1
        if fault.every is not None and self._seen % fault.every != 0:
            return None
        self._fired += 1
        if fault.count is not None and self._fired >= fault.count:
            self.set(None)
        return fault


class DropConnection(Response):
    """Sends a status line promising a body, then raises so the server closes the connection.

    An ASGI server must close the connection when the app fails after the response started, so
    the client sees the connection end mid-response (httpx: `RemoteProtocolError`), the
    ambiguous failure where the request may or may not have been processed. `status` is the
    status line sent first (a `drop_after` sends the one its answer would have had).
    """

    def __init__(self, status: int = 200) -> None:
        super().__init__(status_code=status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
            }
        )
        raise InjectedDropError("sandbox fault: connection dropped on purpose")


class _QuietDropsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc_info = record.exc_info
        return not (exc_info and isinstance(exc_info[1], InjectedDropError))


def quiet_dropped_connections(logger_name: str = "uvicorn.error") -> None:
    """Keep the server's log free of tracebacks for connections dropped on purpose."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(existing, _QuietDropsFilter) for existing in logger.filters):
        logger.addFilter(_QuietDropsFilter())
