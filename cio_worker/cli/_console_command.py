"""`cio-worker console`: serve the operator console (cio_worker/console/), a web page."""

from __future__ import annotations

import argparse

from cio_worker.config import Settings

#: Where the console listens unless told otherwise (Flower's default port is 5555).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5556

DESCRIPTION = """\
Serve the operator console: queues, in-flight and scheduled retries, dead letters (filter,
inspect, replay, delete), parked jobs, limiter and circuit state, received webhooks.

Sign-in is required: set CIO_WORKER_CONSOLE_BASIC_AUTH=user:password or
CIO_WORKER_CONSOLE_TOKEN (sent as `Authorization: Bearer`, or typed in the sign-in form).
Without either it refuses to start, unless --local-only (then it listens on a loopback address
only). Put a TLS proxy in front of it for anything beyond this machine.
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `console` to `cio-worker`."""
    console = sub.add_parser(
        "console",
        help="serve the operator console, a web page (queues, retries, dead letters, limits)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    console.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 for every interface)",
    )
    console.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    console.add_argument(
        "--local-only",
        action="store_true",
        help="allow running without sign-in credentials, on a loopback address only",
    )
    console.set_defaults(handler=_console)


def _port(text: str) -> int:
    """A TCP port, 1 to 65535."""
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65_535):
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: a whole number 1-65535")
    return int(text)


def _console(args: argparse.Namespace, _: list[str]) -> int:
    # Redis away at start, a refused setting, a port in use: raised, and said in one line with
    # the exit code every command uses (cli/_failures.py).
    from cio_worker.console import serve_console
    from cio_worker.logs import configure_logging

    settings = Settings.from_env()
    configure_logging(settings)
    serve_console(settings, host=args.host, port=args.port, local_only=args.local_only)
    return 0
