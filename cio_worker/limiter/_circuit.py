"""Fleet-wide health per API family: a circuit breaker kept in Redis, shared by every worker.

Why: when Customer.io (or the network to it) is down, every job that tries fails. Retrying each
job on its own backoff spends its attempts on the outage (the job is not at fault), sends a
steady trickle of doomed requests, and after recovery leaves the backlog waiting out individual
backoffs. The breaker turns N failing jobs into one question, "is the API back?", asked by one
probe at a time.

States, per limiter bucket (track, pipelines, transactional, broadcast, app):

- **closed**: requests flow. Transient failures (5xx, 408, timeouts, connection errors) are
  counted across the fleet; any answer that is not one (2xx, 4xx, 429) resets the count, and so
  does a quiet `window`. `threshold` failures in a row *open* the circuit (`circuit_opened`).
- **open**: nobody sends, except one *probe* at a time: the first caller after `next_probe`
  gets the turn (a lease, so a probe whose worker died is retried). A probe that fails doubles
  the interval, from `CIO_WORKER_CIRCUIT_PROBE_MIN_S` up to `CIO_WORKER_CIRCUIT_PROBE_MAX_S`; one
  that gets any answer but a transient failure *closes* the circuit (`circuit_closed`). So the
  fleet sends at most one request per probe interval per family while the API is down.

While open, per-job deliveries park their job in `keys.parked(bucket)` (ledger.park) and
batched senders leave their shards alone: nothing is sent and **no attempt is spent**. The
sweeper (queue/_sweeper.py) releases one parked job when a probe is due and nobody is probing, and,
once the circuit has closed, every parked job at once, due now, to drain at the limiter's rate.

Probes are real jobs (a send, a batch), not a synthetic health check: they test exactly the
endpoint that failed, and a successful probe is also a delivery.

Redis unavailable: `admit` lets the caller through (the limiter, taken next, fails closed
anyway); reports are best effort. The breaker only ever holds jobs back, so a lost report costs
at most one more failed request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import redis

from cio_worker import keys, logs
from cio_worker.config import Settings
from cio_worker.connection import reply_text
from cio_worker.ids import new_ulid
from cio_worker.limiter import _circuit_scripts as scripts

log = logs.get_logger(__name__)

#: The buckets that have a circuit: one per limiter bucket (limiter.bucket_rates).
BUCKETS = ("track", "pipelines", "transactional", "broadcast", "app")
#: How long the sweeper waits, after releasing a parked job to serve as a probe, before it may
#: release another (the first may not have been claimed yet), ms.
PROBE_RELEASE_GRACE_MS = 2_000
#: Parked jobs released per sweeper call once a circuit has closed.
RELEASE_BATCH = 1_000

GateState = Literal["closed", "probe", "open"]


@dataclass(frozen=True, slots=True)
class Gate:
    """What `Circuit.admit` decided: send (`closed`), send as the probe, or wait (`open`)."""

    state: GateState
    #: The probe's token: pass it back to `success`/`failure`/`abandon`. Empty unless probing.
    token: str = ""
    #: While open: seconds until a probe may start.
    wait_s: float = 0.0

    @property
    def may_send(self) -> bool:
        return self.state != "open"


@dataclass(frozen=True, slots=True)
class Health:
    """A family's health right after a transient failure was counted."""

    #: True while the circuit is closed: the failure counts as the job's own attempt.
    healthy: bool
    #: This failure opened the circuit.
    opened: bool = False


@dataclass(frozen=True, slots=True)
class CircuitState:
    """A circuit as every worker sees it now (status, metrics)."""

    bucket: str
    state: Literal["closed", "open"]
    #: Transient failures in a row (closed), or that opened it (open).
    failures: int
    open_for_s: float
    next_probe_in_s: float
    probe_interval_s: float
    probing: bool


class Circuit:
    """The breakers of every bucket, as seen from one process."""

    def __init__(self, settings: Settings, redis_client: redis.Redis) -> None:
        self.settings = settings
        self.redis = redis_client
        self._admit = redis_client.register_script(scripts.ADMIT)
        self._success = redis_client.register_script(scripts.SUCCESS)
        self._failure = redis_client.register_script(scripts.FAILURE)
        self._abandon = redis_client.register_script(scripts.ABANDON)
        self._release = redis_client.register_script(scripts.RELEASE)
        self._state = redis_client.register_script(scripts.STATE)

    @property
    def probe_lease_ms(self) -> int:
        """A probe's turn: one request, limiter wait and HTTP timeout, with room to spare."""
        return int((2 * self.settings.http_timeout_s + 5) * 1000)

    # -- before a request ------------------------------------------------------------------------
    def admit(self, bucket: str, *, now_ms: int | None = None) -> Gate:
        """May a request of `bucket` go out now? One script call."""
        token = new_ulid()
        try:
            state, wait_ms = self._admit(
                keys=[keys.circuit(bucket)], args=[token, self.probe_lease_ms, _now(now_ms)]
            )
        except redis.RedisError:
            return Gate("closed")  # the limiter, taken next, fails closed without Redis
        decided = reply_text(state)
        if decided == "open":
            return Gate("open", wait_s=int(wait_ms) / 1000)
        if decided == "probe":
            log.info("circuit_probe", bucket=bucket)
            return Gate("probe", token=token)
        return Gate("closed")

    # -- after a request -------------------------------------------------------------------------
    def success(self, bucket: str, *, now_ms: int | None = None) -> None:
        """The API answered (2xx, 4xx, 429): close the circuit if it was open."""
        try:
            closed, open_ms = self._success(
                keys=[keys.circuit(bucket), keys.stats()],
                args=[_now(now_ms), f"circuit:{bucket}:closed"],
            )
        except redis.RedisError:
            return
        if int(closed):
            log.warning("circuit_closed", bucket=bucket, open_for_s=round(int(open_ms) / 1000, 1))

    def failure(self, bucket: str, token: str = "", *, now_ms: int | None = None) -> Health:
        """Count a transient failure (5xx, 408, timeout, connection error) for the fleet.

        Returns whether the family is still healthy: only then does the failure count as an
        attempt of the job that met it. Redis unavailable: reported as healthy (the job's own
        backoff then applies, as it would without a breaker).
        """
        settings = self.settings
        try:
            state, opened, failures, interval_ms = self._failure(
                keys=[keys.circuit(bucket), keys.stats()],
                args=[
                    token,
                    settings.circuit_threshold,
                    int(settings.circuit_window_s * 1000),
                    int(settings.circuit_probe_min_s * 1000),
                    int(settings.circuit_probe_max_s * 1000),
                    _now(now_ms),
                    f"circuit:{bucket}:opened",
                ],
            )
        except redis.RedisError:
            return Health(healthy=True)
        if int(opened):
            log.warning("circuit_opened", bucket=bucket, failures=int(failures),
                        probe_in_s=int(interval_ms) / 1000)  # fmt: skip
        elif token and reply_text(state) == "open":
            log.info("circuit_probe_failed", bucket=bucket, next_probe_in_s=int(interval_ms) / 1000)
        return Health(healthy=reply_text(state) == "closed", opened=bool(int(opened)))

    def abandon(self, gate: Gate, bucket: str) -> None:
        """A probe that sent nothing gives its turn back."""
        if gate.state != "probe":
            return
        try:
            self._abandon(keys=[keys.circuit(bucket)], args=[gate.token])
        except redis.RedisError:
            pass  # its lease runs out instead

    # -- the sweeper's side ----------------------------------------------------------------------
    def release_parked(self, buckets: Iterable[str] = BUCKETS, *, now_ms: int | None = None) -> int:
        """Move parked jobs to the due set: all of a closed bucket's, one probe of an open one.

        One script call for every bucket (the sweeper calls it several times a second).
        """
        script_keys = [keys.delayed()]
        for bucket in buckets:
            script_keys += [keys.circuit(bucket), keys.parked(bucket)]
        return int(
            self._release(
                keys=script_keys, args=[RELEASE_BATCH, PROBE_RELEASE_GRACE_MS, _now(now_ms)]
            )
        )

    # -- reading ---------------------------------------------------------------------------------
    def state(self, bucket: str, *, now_ms: int | None = None) -> CircuitState:
        """One bucket's circuit now. Raises redis.RedisError (a status read, not a send)."""
        raw = self._state(keys=[keys.circuit(bucket)], args=[_now(now_ms)])
        state, failures, open_ms, next_ms, interval_ms, probing = raw
        return CircuitState(
            bucket=bucket,
            state="open" if reply_text(state) == "open" else "closed",
            failures=int(failures),
            open_for_s=int(open_ms) / 1000,
            next_probe_in_s=int(next_ms) / 1000,
            probe_interval_s=int(interval_ms) / 1000,
            probing=bool(int(probing)),
        )

    def states(self, buckets: Iterable[str] = BUCKETS) -> dict[str, CircuitState]:
        return {bucket: self.state(bucket) for bucket in buckets}


def _now(now_ms: int | None) -> int | str:
    return "" if now_ms is None else now_ms
