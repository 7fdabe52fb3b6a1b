"""Operations subcommands of `cio-worker`: `metrics` (Prometheus exporter) and `check` (probe)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import redis

from cio_worker.cli._failures import explain, one_line
from cio_worker.cli._output import add_json_flag, load_settings, note, print_json
from cio_worker.config import Settings
from cio_worker.errors import ConfigError


def register(sub: Any) -> None:  # argparse's _SubParsersAction is private
    """Add `metrics` and `check` to `cio-worker`."""
    from cio_worker.ops import DEFAULT_HOST, DEFAULT_PORT

    metrics = sub.add_parser(
        "metrics",
        help="serve Prometheus metrics for the whole fleet (one exporter is enough)",
        description="A Prometheus exporter (GET /metrics) for every worker at once: deliveries, "
        "latencies, queue depths, dead letters, limiter and circuits, read from Redis. Set "
        "CIO_WORKER_METRICS_BASIC_AUTH=user:password to require basic auth. While Redis does not "
        "answer (at start too) it serves cio_worker_redis_up 0.",
    )
    metrics.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    metrics.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    metrics.set_defaults(handler=_metrics)

    check = sub.add_parser(
        "check",
        help="check Redis and every configured Customer.io credential; exit 1 if any fails",
        description="Probe Redis (reachable, no eviction, persistence) and try each configured "
        "Customer.io credential with a read-only call. One line per check; exit 1 if any "
        "fails, for deploy scripts and readiness probes.",
    )
    add_json_flag(check)
    check.set_defaults(handler=_check)


def _metrics(args: argparse.Namespace, _: list[str]) -> int:
    from cio_worker.connection import get_redis
    from cio_worker.ops import serve

    settings = load_settings()
    client = get_redis(settings)
    try:
        client.ping()
    except redis.RedisError as exc:
        # An exporter reports Redis down (cio_worker_redis_up 0) rather than dying of it: say it
        # in one line and serve, so the alert on that series fires and the scrape target stays.
        line = (explain(exc) or (str(exc),))[0]
        note(one_line(f"cio-worker: metrics: {line}; serving cio_worker_redis_up 0 until it does"))
    server, thread = serve(client, settings, host=args.host, port=args.port)
    auth = "basic auth" if settings.metrics_basic_auth else "no auth"
    print(
        f"metrics exporter listening on http://{args.host}:{args.port}/metrics ({auth})",
        flush=True,
    )
    try:
        thread.join()
    finally:  # Ctrl-C: stop serving and free the port before exiting
        server.shutdown()
        server.server_close()
    return 0


def _check(args: argparse.Namespace, _: list[str]) -> int:
    from cio_worker.ops import CheckReport, CheckResult, run_checks

    try:
        report = run_checks(Settings.from_env())
    except ConfigError as exc:
        # A bad setting is a failed check too: a probe still gets exit 1 and one document.
        report = CheckReport((CheckResult("config", "fail", str(exc)),))
    if args.json:
        print_json(report.to_dict(), sort_keys=False)
    else:
        print(report.render())
    sys.stdout.flush()
    return report.exit_code
