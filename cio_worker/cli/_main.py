"""The `cio-worker` command: argparse, the commands that fit in a few lines, and dispatch.

Each subcommand is a small function; heavy imports (Celery, Starlette) happen inside them so that
`cio-worker dlq list` starts fast. Every command runs through `_failures.run`, so Redis or
Customer.io being away is one line on stderr and exit 1, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from cio_worker.cli._failures import USAGE, run
from cio_worker.cli._output import add_json_flag, load_settings, print_json
from cio_worker.version import __version__

DESCRIPTION = """\
Deliver customer data and messages to Customer.io from Redis-backed Celery workers, and look
after them: see what is queued, waiting or dead, replay what failed, check the configuration.

Settings come from the environment (CIO_WORKER_REDIS_URL, CUSTOMERIO_SITE_ID, ...; see the
README). `cio-worker COMMAND --help` describes each command and its options."""

EPILOG = """\
exit status: 0 done; 1 something failed (Redis or Customer.io unreachable, an id not found,
a check failed); 2 the command or a setting was wrong; 130 interrupted."""


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions keep their paragraphs; every option's help ends with its default, if any."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            textwrap.fill(" ".join(paragraph.split()), width, initial_indent=indent,
                          subsequent_indent=indent)
            for paragraph in text.split("\n\n")
        )  # fmt: skip

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" not in text
            and default not in (None, False, argparse.SUPPRESS)
            and (action.option_strings or action.nargs in (argparse.OPTIONAL,))
        ):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """`cio-worker`'s parser; its subcommands are made of the same class, with the same help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return USAGE
    if extra and args.command != "worker":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return run(args.handler, args, extra)


def build_parser() -> Parser:
    """The whole command line: every command, option, help text and default."""
    parser = Parser(prog="cio-worker", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument(
        "--version", action="version", version=f"cio-worker {__version__}", help="print the version"
    )
    # Typed loosely: each module's `register` takes argparse's (private) _SubParsersAction.
    sub: Any = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    worker = sub.add_parser(
        "worker",
        help="run a worker that delivers jobs (restarted if it dies)",
        description="Run a Celery worker consuming every cio_worker queue with cio_worker's "
        "defaults, restarted when it dies or stalls. Options it does not know are passed to "
        "`celery worker` (e.g. --concurrency 16, -Q cio.track). Redis must answer at start; "
        "once running, the worker waits out Redis outages.",
    )
    worker.add_argument(
        "--allow-eviction",
        action="store_true",
        help="start even if Redis may evict keys (not recommended: jobs could be lost)",
    )
    worker.set_defaults(handler=_worker)

    status = sub.add_parser(
        "status",
        help="queues, retries, dead letters, limits and workers online, now",
        description="What is waiting, in flight, scheduled and dead, what was delivered since "
        "the counters began, the rate limiter and circuits, and the workers that answer a "
        "ping (1 s): read from the Redis it names.",
    )
    add_json_flag(status)
    status.set_defaults(handler=_status)

    from cio_worker.cli import _dlq_commands as cli_dlq

    cli_dlq.register(sub)

    sandbox = sub.add_parser(
        "sandbox",
        help="run a local stand-in for Customer.io's APIs (for trying things out)",
        description="A strict local stand-in for Customer.io's Track, App and Pipelines APIs, "
        "with their auth, limits and error shapes and fault injection (/_sandbox/faults). "
        "Point workers at it with CIO_WORKER_SANDBOX_URL. It needs no Redis.",
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sandbox.add_argument("--port", type=int, default=8765, help="port to listen on")
    sandbox.add_argument(
        "--track-rps", type=float, default=100, help="Track (and Pipelines) API limit, requests/s"
    )
    sandbox.add_argument("--app-rps", type=float, default=10, help="App API limit, requests/s")
    sandbox.add_argument(
        "--transactional-rps",
        type=float,
        default=100,
        help="transactional sends limit, requests/s",
    )
    sandbox.add_argument(
        "--broadcast-interval-s",
        type=float,
        default=10,
        help="seconds between two triggers of one broadcast",
    )
    sandbox.add_argument(
        "--listing-lag-s",
        type=float,
        default=0,
        help="seconds before an accepted send or broadcast trigger shows in the App API's reads",
    )
    sandbox.set_defaults(handler=_sandbox)

    demo = sub.add_parser(
        "demo",
        help="try it all locally: Redis, sandbox, worker, Flower and a demo load (`make run`)",
        description="Start an embedded Redis (in --data-dir, not CIO_WORKER_REDIS_URL), the "
        "sandbox, a worker and Flower, send a demo load and show its progress. Ctrl-C stops "
        "everything.",
    )
    demo.add_argument("--data-dir", default=".data", help="where the embedded Redis keeps data")
    demo.add_argument("--people", type=int, default=1500, help="people: identify + track jobs each")
    demo.add_argument("--messages", type=int, default=100, help="transactional emails to send")
    demo.add_argument(
        "--exit-when-done",
        action="store_true",
        help="stop everything after the summary instead of waiting for Ctrl-C",
    )
    demo.add_argument("--no-flower", action="store_true", help="do not start Flower")
    demo.set_defaults(handler=_demo)

    # Larger command groups live in their own modules, each adding its subcommands here.
    from cio_worker.cli import _app_commands as cli_app
    from cio_worker.cli import _console_command
    from cio_worker.cli import _ops_commands as cli_ops

    cli_ops.register(sub)
    _console_command.add_parser(sub)
    cli_app.register(sub)
    return parser


def _worker(args: argparse.Namespace, extra: list[str]) -> int:
    if args.allow_eviction:
        os.environ["CIO_WORKER_ALLOW_EVICTION"] = "1"
    from cio_worker.connection import get_redis
    from cio_worker.worker import supervise, worker_command

    # Celery would retry an absent Redis for ever, silently for a supervisor; say it at once.
    get_redis(load_settings()).ping()
    return supervise(worker_command(extra))


def _status(args: argparse.Namespace, _: list[str]) -> int:
    from cio_worker.cli._status import render_status
    from cio_worker.ops import collect_status

    report = collect_status(load_settings())
    if args.json:
        print_json(report)
    else:
        render_status(report)
    return 0


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
