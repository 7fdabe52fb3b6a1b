"""What operators see: status, metrics, the Prometheus exporter, `check`."""

from __future__ import annotations

from cio_worker.ops._check import CheckReport, CheckResult, run_checks
from cio_worker.ops._exporter import DEFAULT_HOST, DEFAULT_PORT, serve
from cio_worker.ops._metrics import collect as collect_metrics
from cio_worker.ops._metrics import enqueue_latency_s, record_delivery
from cio_worker.ops._preflight import check_credentials, check_redis
from cio_worker.ops._status import collect_status

__all__ = [
    "collect_metrics",
    "CheckReport",
    "CheckResult",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "check_credentials",
    "check_redis",
    "collect_status",
    "enqueue_latency_s",
    "record_delivery",
    "run_checks",
    "serve",
]
