"""Delivery metrics kept in Redis, so counters add up across every worker process and host.

Workers call `record_delivery` once per delivery outcome: one script call (one round trip, atomic)
that never raises, because a metrics failure must not fail a delivery. The exporter
(ops/_exporter.py) calls `collect` at each scrape; it also computes gauges (queue depth, oldest job,
delayed retries, dead letters) from the live Redis state at that moment.

Keys, all prefixed `cio:metrics` and built by `keys.metrics` only:

- `cio:metrics:deliveries` — hash `<family>:<kind>:<outcome>` -> count.
- `cio:metrics:latency:<family>` — histogram of enqueue → accepted seconds (delivered jobs).
- `cio:metrics:limiter_wait:<family>` — histogram of seconds waited for a limiter slot.

A histogram hash holds cumulative bucket counters `le:<bound>` (observations <= bound), `count`
(which is also the `+Inf` bucket) and `sum` (seconds). The bounds are part of the stored format:
changing them means deleting those keys, or old and new buckets would disagree.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Final

import redis

from cio_worker import keys, logs
from cio_worker.config import Settings
from cio_worker.connection import reply_text
from cio_worker.ids import is_ulid, ulid_time_ms
from cio_worker.kinds import Family, Kind, queue_name
from cio_worker.limiter import BUCKETS as CIRCUIT_BUCKETS
from cio_worker.ops import _metrics_scripts as scripts
from cio_worker.ops._backlog import read_backlog
from cio_worker.queue import DeadLetterStore

log = logs.get_logger(__name__)

#: What `record_delivery` accepts as `outcome`.
OUTCOMES: Final = ("delivered", "retry", "dead", "rate_limited")
#: Enqueue → accepted, seconds: from an idle queue (ms) to retries spread over backoff (minutes).
LATENCY_BUCKETS_S: Final = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
#: Limiter wait, seconds: a slot is 10 ms apart at 100/s; waits past the limiter's max_wait_s
#: (1 s by default) go back to the queue, so the top buckets only fill if that is raised.
LIMITER_WAIT_BUCKETS_S: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: `cio:stats` outcomes (queue/_ledger.py) the exporter publishes as counters of their own.
STATS_OUTCOMES: Final = ("enqueued", "retried", "rate_limited", "dead")

#: Replies `collect` reads per family: two histograms, the queue's tail, the waiting list's head.
_PER_FAMILY: Final = 4
_FAMILIES: Final = frozenset(family.value for family in Family)
_KINDS: Final = frozenset(kind.value for kind in Kind)


def _le_field(bound: float) -> str:
    return f"le:{bound!r}"


def enqueue_latency_s(job_id: str, *, now_s: float | None = None) -> float | None:
    """Seconds since the job was enqueued, read from its ULID (None if `job_id` is not one).

    A replayed dead letter keeps its id, so its latency includes its time in the DLQ.
    """
    if not is_ulid(job_id):
        return None
    now = time.time() if now_s is None else now_s
    return now - ulid_time_ms(job_id) / 1000


def record_delivery(
    redis_client: redis.Redis,
    *,
    family: str,
    kind: str,
    outcome: str,
    latency_s: float | None,
    limiter_wait_s: float | None,
    count: int = 1,
) -> None:
    """Count one delivery outcome, and observe its latency and limiter wait, in one round trip.

    A batch request counts `count` jobs at once: the outcome counter moves by `count` and the
    latency (the batch's mean) is observed `count` times; the limiter wait, one per request,
    once.

    Args:
        family: the job's family (`track`, `transactional`, `broadcast`, `app`).
        kind: the job's kind (`identify`, `send_email`, ...).
        outcome: `delivered`, `retry`, `dead` or `rate_limited`.
        latency_s: enqueue → accepted, seconds; observed for `delivered` only.
        limiter_wait_s: seconds waited for a limiter slot, if one was taken.

    Never raises: bad arguments are logged as a warning (a bug in the caller), a Redis failure
    at debug level; either way the delivery goes on uncounted.
    """
    problem = _invalid(family, kind, outcome)
    if problem:
        log.warning("metrics_not_recorded", error=problem)
        return
    histograms: list[tuple[str, list[str], float, int]] = []
    if outcome == "delivered" and latency_s is not None:
        histograms += [
            (*observed, count)
            for observed in _observation(
                keys.metrics("latency", family), LATENCY_BUCKETS_S, latency_s
            )
        ]
    if limiter_wait_s is not None:
        histograms += [
            (*observed, 1)
            for observed in _observation(
                keys.metrics("limiter_wait", family), LIMITER_WAIT_BUCKETS_S, limiter_wait_s
            )
        ]
    args: list[str | float] = [f"{family}:{kind}:{outcome}", count]
    for _key, fields, value, weight in histograms:
        args += [value, weight, len(fields), *fields]
    try:
        script = redis_client.register_script(scripts.RECORD)  # only hashes the text; no I/O
        script(keys=[keys.metrics("deliveries"), *(h[0] for h in histograms)], args=args)
    except Exception as exc:  # noqa: BLE001 - whatever goes wrong, the delivery must go on
        log.debug("metrics_not_recorded", error=f"{type(exc).__name__}: {exc}", family=family)


def _invalid(family: str, kind: str, outcome: str) -> str | None:
    # Labels are checked against the enums so that a bug cannot create unbounded series.
    if family not in _FAMILIES:
        return f"family: must be one of {', '.join(Family)}, got {family!r}"
    if kind not in _KINDS:
        return f"kind: must be a job kind, got {kind!r}"
    if outcome not in OUTCOMES:
        return f"outcome: must be one of {', '.join(OUTCOMES)}, got {outcome!r}"
    return None


def _observation(
    key: str, bounds: tuple[float, ...], value: float
) -> list[tuple[str, list[str], float]]:
    """The bucket fields one observation increments (cumulative: every bound >= value)."""
    if not math.isfinite(value):
        return []
    # Hosts' clocks may disagree by a little: a job enqueued "in the future" took no time.
    value = max(0.0, value)
    return [(key, [_le_field(bound) for bound in bounds if value <= bound], value)]


@dataclass(frozen=True, slots=True)
class Histogram:
    """One stored histogram: (bound, cumulative count) pairs without `+Inf`, count and sum."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    sum_s: float


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything the exporter publishes, read from Redis at one moment.

    Attributes:
        deliveries: (family, kind, outcome) -> count; every known combination is present.
        stats: (family, outcome) -> count from `cio:stats`, for STATS_OUTCOMES and every family.
        latency: family -> enqueue → accepted histogram.
        limiter_wait: family -> limiter wait histogram.
        queue_depth: family -> jobs waiting for a worker (ops/_backlog.py: its queue, room in
            it, and track's batch shards).
        oldest_job_age_s: family -> age of the oldest waiting job (0 when the queue is empty,
            None when its oldest message carries no job id we can read).
        delayed_jobs: retries and deferrals waiting for their time (cio:delayed).
        dead_letters: entries in the dead-letter queue.
        circuit_open: bucket -> 1 while its circuit is open (limiter/_circuit.py), else 0.
        circuit_transitions: (bucket, "opened"|"closed") -> how many times, fleet-wide.
        parked_jobs: bucket -> jobs parked until its circuit closes.
    """

    deliveries: dict[tuple[str, str, str], int]
    stats: dict[tuple[str, str], int]
    latency: dict[str, Histogram]
    limiter_wait: dict[str, Histogram]
    queue_depth: dict[str, int]
    oldest_job_age_s: dict[str, float | None]
    delayed_jobs: int
    dead_letters: int
    circuit_open: dict[str, int] = dataclasses.field(default_factory=dict)
    circuit_transitions: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    parked_jobs: dict[str, int] = dataclasses.field(default_factory=dict)


def collect(
    redis_client: redis.Redis, settings: Settings, *, now_s: float | None = None
) -> MetricsSnapshot:
    """Read every metric from Redis; raises `redis.RedisError` if Redis cannot be read."""
    families = [family.value for family in Family]
    # MULTI gives a consistent view: a histogram's buckets never run ahead of its count.
    pipe = redis_client.pipeline(transaction=True)
    pipe.hgetall(keys.metrics("deliveries"))
    pipe.hgetall(keys.stats())
    pipe.zcard(keys.delayed())
    for family in families:
        pipe.hgetall(keys.metrics("latency", family))
        pipe.hgetall(keys.metrics("limiter_wait", family))
        # kombu LPUSHes and workers BRPOP, so the tail is the message waiting longest.
        pipe.lindex(queue_name(family), -1)
        # Jobs beyond the queue's window wait for room, oldest first (queue/_window.py).
        pipe.lindex(keys.waiting(family), 0)
    for bucket in CIRCUIT_BUCKETS:
        pipe.hget(keys.circuit(bucket), "state")
        pipe.zcard(keys.parked(bucket))
    replies: list[Any] = pipe.execute()
    now = time.time() if now_s is None else now_s  # one clock for every age in the snapshot
    backlog = read_backlog(redis_client, settings, now_s=now)
    dead_letters = DeadLetterStore(redis_client, retention_days=settings.dlq_retention_days).count()

    raw_deliveries, raw_stats, delayed = replies[0], replies[1], replies[2]
    latency: dict[str, Histogram] = {}
    limiter_wait: dict[str, Histogram] = {}
    oldest: dict[str, float | None] = {}
    for index, family in enumerate(families):
        at = 3 + _PER_FAMILY * index
        raw_latency, raw_wait, tail, first = replies[at : at + _PER_FAMILY]
        latency[family] = _histogram(raw_latency, LATENCY_BUCKETS_S)
        limiter_wait[family] = _histogram(raw_wait, LIMITER_WAIT_BUCKETS_S)
        # A waiting job is younger than every queued one of its family: it is the oldest only
        # when the queue itself is empty.
        oldest[family] = (
            _message_age_s(tail, now)
            if tail is not None
            else _id_age_s(first, now)
            if first is not None
            else 0.0
        )
    circuit_replies = replies[3 + _PER_FAMILY * len(families) :]
    circuit_open, parked = {}, {}
    for index, bucket in enumerate(CIRCUIT_BUCKETS):
        state, parked_count = circuit_replies[2 * index : 2 * index + 2]
        circuit_open[bucket] = 1 if state == b"open" else 0
        parked[bucket] = int(parked_count)
    transitions = {
        (bucket, to): int(raw_stats.get(f"circuit:{bucket}:{to}".encode(), 0))
        for bucket in CIRCUIT_BUCKETS
        for to in ("opened", "closed")
    }
    if backlog.batched:  # batched track jobs wait in shards of their own (queue/_shards.py)
        oldest["track"] = max(oldest["track"] or 0.0, backlog.batched_age_s)
    return MetricsSnapshot(
        deliveries=_deliveries(raw_deliveries),
        stats=_stats(raw_stats, families),
        latency=latency,
        limiter_wait=limiter_wait,
        queue_depth=backlog.waiting,
        oldest_job_age_s=oldest,
        delayed_jobs=int(delayed),
        dead_letters=dead_letters,
        circuit_open=circuit_open,
        circuit_transitions=transitions,
        parked_jobs=parked,
    )


def _deliveries(raw: dict[Any, Any]) -> dict[tuple[str, str, str], int]:
    # Every known combination starts at 0, so a series exists before its first increment and
    # Prometheus's increase() sees that first one too.
    counts = {(kind.family.value, kind.value, outcome): 0 for kind in Kind for outcome in OUTCOMES}
    for field, value in raw.items():
        parts = reply_text(field).split(":")
        if len(parts) == 3:
            counts[(parts[0], parts[1], parts[2])] = int(value)
    return counts


def _stats(raw: dict[Any, Any], families: list[str]) -> dict[tuple[str, str], int]:
    counts = {(family, outcome): 0 for family in families for outcome in STATS_OUTCOMES}
    for field, value in raw.items():
        family, _, outcome = reply_text(field).partition(":")
        if outcome in STATS_OUTCOMES:
            counts[(family, outcome)] = int(value)
    return counts


def _histogram(raw: dict[Any, Any], bounds: tuple[float, ...]) -> Histogram:
    fields = {reply_text(key): value for key, value in raw.items()}
    return Histogram(
        buckets=tuple((bound, int(fields.get(_le_field(bound), 0))) for bound in bounds),
        count=int(fields.get("count", 0)),
        sum_s=float(fields.get("sum", 0.0)),
    )


def _message_age_s(raw: bytes | str, now: float) -> float | None:
    """Age of a kombu message whose `headers.id` is one of our job ids (a ULID)."""
    try:
        job_id = json.loads(raw)["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None
    return _id_age_s(job_id, now) if isinstance(job_id, str) else None


def _id_age_s(job_id: bytes | str, now: float) -> float | None:
    """Age of the job named `job_id` (a ULID), from its id; None for another id."""
    age = enqueue_latency_s(reply_text(job_id), now_s=now)
    return None if age is None else max(0.0, age)
