"""`cio-worker metrics`: a Prometheus exporter that reads the fleet's metrics from Redis per scrape.

Nothing is counted in this process: workers record into Redis (ops/_metrics.py), so one exporter
anywhere shows the whole fleet, and restarting it loses nothing. Each exporter has its own
`CollectorRegistry`; prometheus-client's global registry is never touched.

If Redis cannot be read, a scrape still answers 200 with `cio_worker_redis_up 0` and nothing
else, so an alert can tell "Redis is down" from "the exporter is down".

With `CIO_WORKER_METRICS_BASIC_AUTH=user:password` every request needs those credentials (401
otherwise). The series carry counts, ages and family/kind names only, never a job id or anything
personal; still, queue depths and throughput are nobody else's business off a private network.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client import make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from cio_worker import logs
from cio_worker.config import Settings
from cio_worker.ops import _metrics as metrics

log = logs.get_logger(__name__)

#: Default listen address: loopback, so nothing is open to the network unless asked for.
DEFAULT_HOST = "127.0.0.1"
#: Default port of `cio-worker metrics` (the Procfile passes $PORT instead).
DEFAULT_PORT = 9808

#: `cio:stats` outcome -> the counter it is published as (with the `_total` suffix added).
_STATS_COUNTERS = {
    "retried": ("cio_worker_retries", "Deliveries scheduled for a retry after a failure."),
    "rate_limited": ("cio_worker_rate_limited", "429 answers from Customer.io."),
    "dead": ("cio_worker_dead_letters", "Jobs moved to the dead-letter queue."),
    "enqueued": ("cio_worker_enqueued", "Jobs enqueued by producers."),
}


class RedisCollector(Collector):
    """Reads `metrics.collect` at each scrape and turns it into Prometheus metric families."""

    def __init__(self, redis_client: redis.Redis, settings: Settings) -> None:
        self._redis = redis_client
        self._settings = settings

    def collect(self) -> Iterator[Metric]:
        try:
            snapshot = metrics.collect(self._redis, self._settings)
        except redis.RedisError as exc:
            log.warning("metrics_scrape_failed", error=f"{type(exc).__name__}: {exc}")
            yield _redis_up(0)
            return
        yield _redis_up(1)
        yield from _families(snapshot)


def _redis_up(value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "cio_worker_redis_up", "1 if the exporter could read Redis at this scrape.", value=value
    )


def _families(snapshot: metrics.MetricsSnapshot) -> Iterator[Metric]:
    deliveries = CounterMetricFamily(
        "cio_worker_deliveries",
        "Delivery attempts by outcome (delivered, retry, dead, rate_limited).",
        labels=["family", "kind", "outcome"],
    )
    for (family, kind, outcome), count in sorted(snapshot.deliveries.items()):
        deliveries.add_metric([family, kind, outcome], count)
    yield deliveries

    for outcome, (name, documentation) in _STATS_COUNTERS.items():
        counter = CounterMetricFamily(name, documentation, labels=["family"])
        for (family, stat), count in sorted(snapshot.stats.items()):
            if stat == outcome:
                counter.add_metric([family], count)
        yield counter

    yield _histogram(
        "cio_worker_delivery_latency_seconds",
        "Seconds from enqueue to acceptance by Customer.io, for delivered jobs.",
        snapshot.latency,
    )
    yield _histogram(
        "cio_worker_limiter_wait_seconds",
        "Seconds a delivery waited for its slot in the shared rate limiter.",
        snapshot.limiter_wait,
    )

    yield _per_family_gauge(
        "cio_worker_queue_depth", "Messages waiting in the family's queue.", snapshot.queue_depth
    )
    oldest = GaugeMetricFamily(
        "cio_worker_oldest_job_age_seconds",
        "Age of the oldest waiting job in the family's queue (0 when empty).",
        labels=["family"],
    )
    for family in sorted(snapshot.queue_depth):
        age = snapshot.oldest_job_age_s.get(family)
        if age is not None:  # a message we cannot date is left out rather than shown as 0
            oldest.add_metric([family], age)
    yield oldest
    yield GaugeMetricFamily(
        "cio_worker_delayed_jobs",
        "Retries and deferrals waiting for their time.",
        value=snapshot.delayed_jobs,
    )
    yield GaugeMetricFamily(
        "cio_worker_dead_letter_queue_size",
        "Jobs in the dead-letter queue.",
        value=snapshot.dead_letters,
    )
    yield from _circuit_families(snapshot)


def _circuit_families(snapshot: metrics.MetricsSnapshot) -> Iterator[Metric]:
    """Circuit breakers (limiter/_circuit.py): state, transitions and the jobs they hold back."""
    yield _per_family_gauge(
        "cio_worker_circuit_open",
        "1 while the family's circuit is open (Customer.io considered down), else 0.",
        snapshot.circuit_open,
    )
    transitions = CounterMetricFamily(
        "cio_worker_circuit_transitions",
        "Times the family's circuit opened or closed, fleet-wide.",
        labels=["family", "to"],
    )
    for (bucket, to), count in sorted(snapshot.circuit_transitions.items()):
        transitions.add_metric([bucket, "open" if to == "opened" else "closed"], count)
    yield transitions
    yield _per_family_gauge(
        "cio_worker_parked_jobs",
        "Jobs sent one per request that wait for their family's circuit to close.",
        snapshot.parked_jobs,
    )


def _per_family_gauge(name: str, documentation: str, values: dict[str, int]) -> GaugeMetricFamily:
    """A gauge labelled `family` (a family or limiter bucket), one sample per key, sorted."""
    gauge = GaugeMetricFamily(name, documentation, labels=["family"])
    for family, value in sorted(values.items()):
        gauge.add_metric([family], value)
    return gauge


def _histogram(
    name: str, documentation: str, by_family: dict[str, metrics.Histogram]
) -> HistogramMetricFamily:
    family_metric = HistogramMetricFamily(name, documentation, labels=["family"])
    for family, histogram in sorted(by_family.items()):
        # repr of a float bound (`0.5`, `1.0`) is the `le` form Prometheus's own clients write.
        buckets = [(repr(bound), count) for bound, count in histogram.buckets]
        buckets.append(("+Inf", histogram.count))
        family_metric.add_metric([family], buckets, sum_value=histogram.sum_s)
    return family_metric


def build_registry(redis_client: redis.Redis, settings: Settings) -> CollectorRegistry:
    """A registry of its own holding only the Redis collector."""
    # auto_describe=False: registering must not scrape (and so must not need Redis).
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(redis_client, settings))
    return registry


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def require_basic_auth(app: WsgiApp, credentials: str) -> WsgiApp:
    """`app` behind HTTP basic auth: `credentials` is `user:password`; anything else gets 401."""
    expected = credentials.encode()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if _authorized(environ.get("HTTP_AUTHORIZATION", ""), expected):
            return app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("WWW-Authenticate", 'Basic realm="cio-worker metrics", charset="UTF-8"'),
            ],
        )
        return [b"401 Unauthorized\n"]

    return guarded


def _authorized(header: str, expected: bytes) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, expected)


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: Prometheus scrapes every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


def serve(
    redis_client: redis.Redis,
    settings: Settings,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
) -> tuple[WSGIServer, threading.Thread]:
    """Serve `/metrics` on host:port from a daemon thread; stop with `server.shutdown()`.

    Behind basic auth when `settings.metrics_basic_auth` is set."""
    app: WsgiApp = make_wsgi_app(build_registry(redis_client, settings))
    if settings.metrics_basic_auth:
        app = require_basic_auth(app, settings.metrics_basic_auth)

    class Server(ThreadingWSGIServer):
        """One class per server: the address family is set on it for an IPv6 host."""

    family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)[0][0]
    Server.address_family = family
    server = make_server(host, port, app, Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="cio-metrics", daemon=True)
    thread.start()
    return server, thread
