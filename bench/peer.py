"""The peer: the same track events sent directly with the official `customerio` package.

Run: .venv/bin/python bench/peer.py [--events 2000 --threads 1 --people 1000 --no-retry-after]
Starts its own sandbox (Track limited to 100 requests per rolling second, 429 past it, with
`Retry-After` unless --no-retry-after: whether Customer.io sends one is undocumented), then
calls `CustomerIO(...).track(...)` once per event, as the package's README shows, and prints
what the sandbox saw: events accepted, events/s end to end, requests, the most requests in any
1 s, 429s, and the exceptions the package raised (events lost).

The package has no rate limiter. What it does on a 429 comes from its own session (3.x
`customerio-python/customerio/client_base.py`): urllib3 `Retry(total=3, status_forcelist=[500, 502,
503, 504], allowed_methods=None)`, which also retries a 429 that carries `Retry-After`, sleeping
that long; once the three retries are spent it raises `CustomerIOException` and the event is gone
unless the caller keeps it. Without `Retry-After` a 429 is not retried at all.

bench/throughput.py imports `run_peer` to print the peer beside our figures; it is importable
with bench/ on sys.path.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

import httpx
import requests
from customerio import CustomerIO

from cio_worker.config import SANDBOX_SITE_ID, SANDBOX_TRACK_API_KEY
from cio_worker.dev import SandboxProcess, free_port
from cio_worker.errors import ConfigError
from cio_worker.sandbox.recorder import max_in_window

#: The event every peer call tracks, as a product's page-view tracking would.
EVENT_NAME = "Viewed Page"
#: Distinct people the events are spread over by default.
DEFAULT_PEOPLE = 1000
#: Most threads run_peer starts: more only measures this machine's scheduler.
MAX_THREADS = 64
#: Records asked of /_sandbox/requests per page, so one answer stays a few MB at most.
_PAGE = 2000
#: Only loopback: the peer must never reach a real Customer.io workspace from a benchmark.
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: "429: https://... {...}" -- the package's message for a final non-2xx answer. Only the status
#: is kept; the rest holds the event's data (personal data), which is never stored or printed.
_STATUS_PREFIX = re.compile(r"^(\d{3}): ")


@dataclass(frozen=True)
class PeerFigures:
    """One peer run, as the sandbox recorded it (requests, statuses, arrivals) and as the calls
    returned (elapsed time, exceptions)."""

    peer: str
    events: int
    threads: int
    people: int
    #: Distinct events the sandbox accepted (200).
    accepted: int
    #: Events accepted more than once (a retry after an accepted but unanswered request).
    duplicates: int
    #: From the first call to the last call's return, seconds.
    seconds: float
    #: Requests the sandbox recorded for this run, retries included.
    requests: int
    #: Most requests that arrived in any 1 s (accepted or not): how hard the peer pushes.
    max_requests_in_window: int
    #: Most accepted requests that arrived in any 1 s. By arrival time: the sandbox admits by
    #: its own clock after reading the body, so this can read 101-102 against a limit of 100.
    max_accepted_in_window: int
    #: 429s the sandbox answered this run.
    rate_limited: int
    #: The sandbox's answers by status.
    statuses: dict[int, int]
    #: Exceptions `track` raised, by type (with the cause or the final HTTP status).
    errors: dict[str, int]

    @property
    def lost(self) -> int:
        """Events sent that the sandbox never accepted."""
        return self.events - self.accepted

    @property
    def events_per_s(self) -> float:
        """Accepted events per second, end to end."""
        return self.accepted / self.seconds if self.seconds > 0 else 0.0

    def report(self) -> str:
        errors = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.errors.items())) or "none"
        statuses = ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items()))
        return (
            f"  peer {self.peer}, {self.threads} thread(s), one request per event, "
            f"{self.people} people\n"
            f"  accepted {self.accepted} of {self.events} events in {self.seconds:.1f}s  "
            f"lost {self.lost}  duplicates {self.duplicates}\n"
            f"  events/s end to end: {self.events_per_s:.1f}\n"
            f"  requests: {self.requests} ({self.requests - self.events} beyond one per event)  "
            f"by status: {statuses or '-'}\n"
            f"  max requests in any 1s window (by arrival): {self.max_requests_in_window} sent, "
            f"{self.max_accepted_in_window} accepted\n"
            f"  429s: {self.rate_limited}\n"
            f"  exceptions raised by the peer: {errors}"
        )


class _PlainHttpCustomerIO(CustomerIO):  # type: ignore[misc]  # customerio ships no types
    """The package's client, changed only so it can speak plain HTTP to a loopback sandbox.

    `CustomerIO(host=..., port=...)` is the package's way to point elsewhere, but its URL
    template is always `https://` and its retrying adapter is mounted on `https://` only. This
    swaps the scheme and mounts that same adapter (same urllib3 `Retry`, keep-alive, pool) on
    `http://`, so requests, retries, timeouts and exceptions are the package's own; only the
    TLS handshake is skipped, which if anything flatters the peer.
    """

    base_url: str

    def setup_base_url(self) -> None:
        super().setup_base_url()
        self.base_url = "http://" + self.base_url.removeprefix("https://")

    def _build_session(self) -> requests.Session:
        session: requests.Session = super()._build_session()
        session.mount("http://", session.adapters["https://"])
        return session


def peer_client(
    sandbox_url: str, *, site_id: str = SANDBOX_SITE_ID, api_key: str = SANDBOX_TRACK_API_KEY
) -> CustomerIO:
    """`CustomerIO(site_id, api_key, host=..., port=...)` aimed at a loopback sandbox."""
    scheme, host, port = _check_sandbox_url(sandbox_url)
    cls = _PlainHttpCustomerIO if scheme == "http" else CustomerIO
    return cls(site_id=site_id, api_key=api_key, host=host, port=port)


def _check_sandbox_url(sandbox_url: str) -> tuple[str, str, int]:
    """(scheme, host as the package wants it, port) of a loopback sandbox URL."""
    try:
        parts = urlsplit(sandbox_url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"sandbox_url: not a valid URL ({exc}): {sandbox_url!r}") from None
    if parts.scheme not in ("http", "https") or parts.hostname not in _LOOPBACK:
        raise ConfigError(
            "sandbox_url: must be http(s) on a loopback host (127.0.0.1, localhost, ::1), "
            f"got {sandbox_url!r}"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"sandbox_url: must have no path, query or fragment, got {sandbox_url!r}")
    host = parts.hostname or ""
    port = parts.port or (80 if parts.scheme == "http" else 443)
    return parts.scheme, f"[{host}]" if ":" in host else host, port


def run_peer(
    sandbox_url: str, events: int, *, threads: int = 1, people: int = DEFAULT_PEOPLE
) -> PeerFigures:
    """Send `events` "Viewed Page" events with `CustomerIO.track`, one client per thread, and
    return what happened, read from the sandbox's own record of this run's requests.

    The sandbox may already hold other traffic (bench/throughput.py runs ours first): only
    records after the current end of its log that carry this run's marker are counted.
    """
    _check_sandbox_url(sandbox_url)
    _check_whole("events", events, low=1)
    _check_whole("threads", threads, low=1, high=MAX_THREADS)
    _check_whole("people", people, low=1)
    run_id = uuid.uuid4().hex[:12]
    with httpx.Client(base_url=sandbox_url.rstrip("/"), timeout=30) as control:
        cursor = _last_seq(control)
        errors: Counter[str] = Counter()
        lock = threading.Lock()

        def send(offset: int) -> None:
            # One client per thread: a requests.Session is not documented as thread-safe.
            with peer_client(sandbox_url) as client:
                for n in range(offset, events, threads):
                    try:
                        client.track(
                            customer_id=f"person-{n % people}",
                            name=EVENT_NAME,
                            data=_properties(run_id, n),
                        )
                    except Exception as exc:  # counting every failure is the point here
                        with lock:
                            errors[_error_kind(exc)] += 1

        workers = [threading.Thread(target=send, args=(k,)) for k in range(threads)]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        seconds = time.monotonic() - started
        records = [r for r in _records_since(control, cursor) if _run_of(r) == run_id]
    return _figures(records, events, threads, people, seconds, dict(errors))


def _properties(run_id: str, n: int) -> dict[str, Any]:
    """Small event data; `run` and `n` let the sandbox's log say which event each request was."""
    return {"url": f"https://example.com/docs/{n % 50}", "referrer": "newsletter",
            "run": run_id, "n": n}  # fmt: skip


def _error_kind(exc: BaseException) -> str:
    """`CustomerIOException <- RetryError`, `CustomerIOException (HTTP 429)`, or the type."""
    kind = type(exc).__name__
    match = _STATUS_PREFIX.match(str(exc))
    if match:
        return f"{kind} (HTTP {match.group(1)})"
    if exc.__cause__ is not None:
        return f"{kind} <- {type(exc.__cause__).__name__}"
    return kind


def _check_whole(name: str, value: int, *, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}: must be a whole number of at least {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{name}: must be at most {high}, got {value!r}")


def _has_after(control: httpx.Client, seq: int) -> bool:
    response = control.get("/_sandbox/requests", params={"since": seq, "limit": 1})
    response.raise_for_status()
    return bool(response.json())


def _last_seq(control: httpx.Client) -> int:
    """The sandbox log's last `seq`, found by probing `since=` with `limit=1`: a few tiny
    requests instead of downloading a log that may hold megabytes of someone else's batches."""
    high = 1
    while _has_after(control, high):
        high *= 2
    low = 0  # invariant: a record after `low` exists or low is 0; none after `high`
    if not _has_after(control, low):
        return 0
    while high - low > 1:
        middle = (low + high) // 2
        if _has_after(control, middle):
            low = middle
        else:
            high = middle
    return high


def _records_since(control: httpx.Client, cursor: int) -> Iterator[dict[str, Any]]:
    while True:
        response = control.get(
            "/_sandbox/requests", params={"since": cursor, "limit": _PAGE, "family": "track"}
        )
        response.raise_for_status()
        page: list[dict[str, Any]] = response.json()
        if not page:
            return
        yield from page
        cursor = int(page[-1]["seq"])


def _run_of(record: dict[str, Any]) -> str | None:
    body = record.get("body")
    data = body.get("data") if isinstance(body, dict) else None
    run = data.get("run") if isinstance(data, dict) else None
    return run if isinstance(run, str) else None


def _figures(
    records: list[dict[str, Any]],
    events: int,
    threads: int,
    people: int,
    seconds: float,
    errors: dict[str, int],
) -> PeerFigures:
    accepted = Counter(int(r["body"]["data"]["n"]) for r in records if r["status"] == 200)
    statuses = Counter(int(r["status"]) for r in records if r["status"] is not None)
    return PeerFigures(
        peer=f"customerio {version('customerio')}",
        events=events,
        threads=threads,
        people=people,
        accepted=len(accepted),
        duplicates=sum(count - 1 for count in accepted.values()),
        seconds=seconds,
        requests=len(records),
        max_requests_in_window=max_in_window((float(r["t"]) for r in records), 1.0),
        max_accepted_in_window=max_in_window(
            (float(r["t"]) for r in records if r["status"] == 200), 1.0
        ),
        rate_limited=statuses.get(429, 0),
        statuses=dict(statuses),
        errors=errors,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--people", type=int, default=DEFAULT_PEOPLE)
    parser.add_argument(
        "--no-retry-after", action="store_true", help="the sandbox's 429s carry no Retry-After"
    )
    args = parser.parse_args(argv)
    hint = "without" if args.no_retry_after else "with"
    with sandbox_url(retry_after=not args.no_retry_after) as url:
        print(f"peer: {args.events} track events, Track limit 100/s, 429 {hint} Retry-After")
        figures = run_peer(url, args.events, threads=args.threads, people=args.people)
    print(figures.report())
    return 0


@contextlib.contextmanager
def sandbox_url(*, retry_after: bool = True) -> Iterator[str]:
    """A fresh sandbox in a child process (Track 100/s); yields its URL, stops it after.

    `cio-worker sandbox` (SandboxProcess) always sends Retry-After; the other case runs the same
    app with `SandboxConfig(retry_after=False)`.
    """
    if retry_after:
        with SandboxProcess() as sandbox:
            yield sandbox.url
        return
    port = free_port()
    code = ("from cio_worker.sandbox import SandboxConfig, run_sandbox; "
            f"run_sandbox(port={port}, config=SandboxConfig(retry_after=False))")  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, child)
        yield url
    finally:
        child.terminate()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)


def _wait_healthy(url: str, child: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/_sandbox/health", timeout=1).status_code == 200:
                return
        if child.poll() is not None or time.monotonic() > deadline:
            raise ConfigError(f"the sandbox did not start on {url}")
        time.sleep(0.1)


if __name__ == "__main__":
    raise SystemExit(main())
