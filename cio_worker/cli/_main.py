"""The `cio-worker` command: worker | status | dlq | sandbox | demo.

Each subcommand is a small function; heavy imports (Celery, Starlette) happen inside them so that
`cio-worker dlq list` starts fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from cio_worker.cli._output import add_json_flag, print_json, print_table, when
from cio_worker.config import Settings
from cio_worker.errors import CioWorkerError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if extra and args.command != "worker":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.handler(args, extra) or 0)
    except CioWorkerError as exc:
        print(f"cio-worker: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cio-worker", description=__doc__)
    sub = parser.add_subparsers(dest="command")

    worker = sub.add_parser(
        "worker", help="run a Celery worker with cio_worker's defaults, restarted if it dies"
    )
    worker.add_argument(
        "--allow-eviction",
        action="store_true",
        help="start even if Redis may evict keys (not recommended)",
    )
    worker.set_defaults(handler=_worker)

    status = sub.add_parser("status", help="queue depths, retries, dead letters, limiter state")
    add_json_flag(status)
    status.set_defaults(handler=_status)

    dlq = sub.add_parser("dlq", help="list, inspect, replay and purge dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser("list")
    add_json_flag(dlq_list)
    dlq_list.add_argument("--kind")
    dlq_list.add_argument("--limit", type=int, default=100)
    dlq_show = dlq_sub.add_parser("show")
    dlq_show.add_argument("id")
    add_json_flag(dlq_show)  # accepted for symmetry: `show` always prints JSON
    for name in ("replay", "purge"):
        action = dlq_sub.add_parser(name)
        action.add_argument("ids", nargs="*")
        action.add_argument("--all", action="store_true")
    dlq.set_defaults(handler=_dlq)

    sandbox = sub.add_parser("sandbox", help="run a local stand-in for Customer.io's APIs")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8765)
    sandbox.add_argument("--track-rps", type=float, default=100)
    sandbox.add_argument("--app-rps", type=float, default=10)
    sandbox.add_argument("--transactional-rps", type=float, default=100)
    sandbox.add_argument("--broadcast-interval-s", type=float, default=10)
    sandbox.add_argument(
        "--listing-lag-s",
        type=float,
        default=0,
        help="seconds before an accepted send or broadcast trigger shows in the App API's reads",
    )
    sandbox.set_defaults(handler=_sandbox)

    demo = sub.add_parser("demo", help="the embedded default behind `make run`")
    demo.add_argument("--data-dir", default=".data")
    demo.add_argument("--people", type=int, default=1500, help="identify + track jobs each")
    demo.add_argument("--messages", type=int, default=100, help="transactional emails")
    demo.add_argument(
        "--exit-when-done",
        action="store_true",
        help="stop everything after the summary instead of waiting for Ctrl-C",
    )
    demo.add_argument("--no-flower", action="store_true")
    demo.set_defaults(handler=_demo)

    # Larger command groups live in their own modules, each adding its subcommands here.
    from cio_worker.cli import _app_commands as cli_app
    from cio_worker.cli import _ops_commands as cli_ops

    cli_ops.register(sub)
    cli_app.register(sub)
    return parser


def _worker(args: argparse.Namespace, extra: list[str]) -> int:
    if args.allow_eviction:
        os.environ["CIO_WORKER_ALLOW_EVICTION"] = "1"
    from cio_worker.worker import supervise, worker_command

    return supervise(worker_command(extra))


def _status(args: argparse.Namespace, _: list[str]) -> int:
    from cio_worker.cli._status import render_status
    from cio_worker.ops import collect_status

    report = collect_status(Settings.from_env())
    if args.json:
        print_json(report)
    else:
        render_status(report)
    return 0


def _dlq(args: argparse.Namespace, _: list[str]) -> int:
    from cio_worker.connection import get_redis
    from cio_worker.queue import DeadLetterStore

    settings = Settings.from_env()
    store = DeadLetterStore(get_redis(settings), retention_days=settings.dlq_retention_days)
    command = args.dlq_command
    if command == "list":
        letters = [letter.summary() for letter in store.list(kind=args.kind, limit=args.limit)]
        if args.json:
            print_json(letters, sort_keys=False)
        else:
            _print_dead_letters(letters)
        return 0
    if command == "show":
        letter = store.get(args.id)
        if letter is None:
            print(f"cio-worker: no dead letter {args.id}", file=sys.stderr)
            return 1
        print_json(letter.detail(), sort_keys=False)
        return 0
    ids = store.all_ids() if args.all else list(args.ids)
    if not ids:
        print(f"cio-worker: dlq {command}: give job ids or --all", file=sys.stderr)
        return 2
    if command == "replay":
        done = store.replay(ids, settings=settings)
        print(f"replayed {len(done)} dead letter(s)")
        return 0 if len(done) == len(ids) else 1
    print(f"purged {store.purge(ids)} dead letter(s)")
    return 0


def _print_dead_letters(letters: list[dict[str, Any]]) -> None:
    columns = ["id", "kind", "attempts", "status", "reason", "last_failed_at"]
    print_table(columns, ([_cell(letter, column) for column in columns] for letter in letters))


def _cell(letter: dict[str, Any], column: str) -> Any:
    value = letter.get(column)
    # Times are Unix seconds; anything else an old entry may hold is shown as it is.
    if column.endswith("_at") and isinstance(value, int | float):
        return when(value)
    return value


def _sandbox(args: argparse.Namespace, _: list[str]) -> int:
    from cio_worker.sandbox import SandboxConfig, run_sandbox

    config = SandboxConfig(
        track_rps=args.track_rps,
        pipelines_rps=args.track_rps,
        app_rps=args.app_rps,
        transactional_rps=args.transactional_rps,
        broadcast_interval_s=args.broadcast_interval_s,
        listing_lag_s=args.listing_lag_s,
    )
    print(f"sandbox listening on http://{args.host}:{args.port}", flush=True)
    run_sandbox(host=args.host, port=args.port, config=config)
    return 0


def _demo(args: argparse.Namespace, _: list[str]) -> int:
    from cio_worker.dev import run_demo

    return run_demo(
        data_dir=args.data_dir,
        people=args.people,
        messages=args.messages,
        exit_when_done=args.exit_when_done,
        flower=not args.no_flower,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
