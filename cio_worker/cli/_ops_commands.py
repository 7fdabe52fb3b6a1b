"""Operations subcommands of `cio-worker`: `metrics` (Prometheus exporter) and `check` (probe)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cio_worker.cli._output import add_json_flag, print_json
from cio_worker.config import Settings
from cio_worker.errors import ConfigError


def register(sub: Any) -> None:  # argparse's _SubParsersAction is private
    """Add `metrics` and `check` to `cio-worker`."""
    from cio_worker.ops import DEFAULT_HOST, DEFAULT_PORT

    metrics = sub.add_parser(
        "metrics", help="serve Prometheus metrics for the whole fleet, read from Redis"
    )
    metrics.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})"
    )
    metrics.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    metrics.set_defaults(handler=_metrics)

    check = sub.add_parser(
        "check", help="check Redis and every configured credential; exit 1 if any check fails"
    )
    add_json_flag(check)
    check.set_defaults(handler=_check)


def _metrics(args: argparse.Namespace, _: list[str]) -> int:
    from cio_worker.connection import get_redis
    from cio_worker.logs import configure_logging
    from cio_worker.ops import serve

    settings = Settings.from_env()
    configure_logging(settings)
    server, thread = serve(get_redis(settings), settings, host=args.host, port=args.port)
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
