"""The one place a `cio-worker` command's failure becomes one line on stderr and an exit code.

Every command runs through `run`: when Redis or Customer.io is unreachable (or refuses us), or a
setting or an argument is wrong, the person at the terminal gets one line naming the problem
(`cio-worker: dlq list: Redis at redis://:***@10.0.0.5:6379/0 does not answer (ConnectionError:
...)`), never a traceback. Passwords in URLs are masked. Exit codes: 1 when something outside
the command failed (Redis, Customer.io, a job that could not be found or changed), 2 when the
command itself was wrong (a bad argument or setting), 130 on Ctrl-C. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Iterator

import redis
from redis.exceptions import AuthorizationError, InvalidResponse, NoPermissionError

from cio_worker.config import Settings, redact_url
from cio_worker.errors import (
    CioWorkerError,
    ConfigError,
    DeliveryError,
    TransportError,
    ValidationError,
)


class UsageError(Exception):
    """The command line asks for something the parser could not check alone (`dlq replay`
    with neither ids nor filters): exit 2 with the message."""


Handler = Callable[[argparse.Namespace, list[str]], int | None]

#: Exit codes.
FAILED = 1
USAGE = 2
INTERRUPTED = 130


def run(handler: Handler, args: argparse.Namespace, extra: list[str]) -> int:
    """Call the command's handler; turn an expected failure into one line and an exit code."""
    try:
        return int(handler(args, extra) or 0)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # `cio-worker dlq list | head`: the reader left; say nothing more, on stdout or stderr.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return FAILED
    except Exception as exc:
        explained = explain(exc, api=getattr(args, "customerio_api", None))
        if explained is None:
            raise
        line, code = explained
        print(one_line(f"cio-worker: {command_name(args)}: {line}"), file=sys.stderr)
        return code


def explain(exc: BaseException, *, api: str | None = None) -> tuple[str, int] | None:
    """(what went wrong, exit code) for an expected failure; None for a bug.

    `api`: the Customer.io API the command talks to (`app`), named when it fails.
    """
    cause = _redis_cause(exc)
    if cause is not None:
        return _redis_line(cause), FAILED
    if isinstance(exc, ValidationError | ConfigError | UsageError):
        return str(exc), USAGE
    if isinstance(exc, TransportError):
        return f"{_customerio(api)} does not answer ({exc})", FAILED
    if isinstance(exc, DeliveryError):
        return f"{_customerio(api)}: {exc}", FAILED
    if isinstance(exc, CioWorkerError):
        return str(exc), FAILED
    if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
        return f"cannot listen there: {exc.strerror}", FAILED
    return None


def _redis_cause(exc: BaseException) -> redis.RedisError | None:
    """The Redis error behind `exc`, if any (ours wrap it: EnqueueError, "limiter unavailable")."""
    from kombu.exceptions import OperationalError  # kombu's name for the same outage

    for link in _chain(exc):
        if isinstance(link, redis.RedisError):
            return link
        if isinstance(link, OperationalError):
            return redis.ConnectionError(str(link))
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def _redis_line(cause: redis.RedisError) -> str:
    where = f"Redis at {redact_url(_redis_url())}"
    detail = f"({type(cause).__name__}: {cause})"
    if isinstance(cause, redis.AuthenticationError | NoPermissionError | AuthorizationError):
        return f"{where} refused our credentials {detail}"
    if isinstance(cause, InvalidResponse):
        return f"{where} answered, but not as Redis does {detail}"
    if isinstance(cause, redis.ConnectionError | redis.TimeoutError):
        return f"{where} does not answer {detail}"
    return f"{where} answered with an error {detail}"


def _redis_url() -> str:
    try:
        return Settings.from_env().redis_url
    except ConfigError:
        return "CIO_WORKER_REDIS_URL"


def _customerio(api: str | None) -> str:
    if api is None:
        return "Customer.io"
    try:
        base = {"app": Settings.from_env().app_url}[api]
    except (ConfigError, KeyError):
        return f"Customer.io's {api} API"
    return f"Customer.io's {api.capitalize()} API at {base}"


def command_name(args: argparse.Namespace) -> str:
    """`dlq list`, `webhooks serve`, `status`: the command as typed, for the message."""
    name = str(args.command)
    action = getattr(args, f"{name.replace('-', '_')}_command", None)
    return f"{name} {action}" if action else name


def one_line(text: str) -> str:
    """`text` on one line, every URL's password masked."""
    return redact_url(" ".join(text.split()))
