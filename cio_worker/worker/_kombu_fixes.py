"""A fix for one kombu bug that made plain Celery workers exit during a Redis outage or failover.

When the broker connection drops, Celery closes it (`on_connection_error_after_connected` ->
`ignore_errors(connection, connection.close)`). Closing the channel first restores its
unacknowledged messages, which needs a Redis client; by then kombu has detached the connection's
`client` (its URL information), so `Channel._connparams` fails with `AttributeError: 'NoneType'
object has no attribute 'hostname'` (kombu#582, still in kombu 5.7). `ignore_errors` swallows only
connection and channel errors, so the AttributeError reaches the worker, which logs
"Unrecoverable error" and exits: seen in about one failover in three, and after Redis restarts.

The fix reports that state as what it is, a lost connection (`redis.ConnectionError`, one of the
transport's `connection_errors`): `ignore_errors` swallows it and Celery reconnects as it does for
any broker loss. Nothing is lost by skipping that restore: kombu's unacked messages come back by
the visibility timeout, and cio_worker's sweeper re-pushes any job whose message went missing.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

_MARK = "_cio_worker_patched"


def install() -> None:
    """Patch `kombu.transport.redis.Channel._connparams` once per process (idempotent)."""
    channel: Any = kombu_redis.Channel  # kombu's stubs do not list its private methods
    original = channel._connparams
    if getattr(original, _MARK, False):
        return

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if getattr(self.connection, "client", None) is None:
            raise redis.ConnectionError(
                "the broker connection is already closed (kombu#582); reconnecting"
            )
        return original(self, asynchronous=asynchronous)

    setattr(_connparams, _MARK, True)
    channel._connparams = _connparams
