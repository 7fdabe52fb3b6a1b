"""kombu_fixes: a broker connection closed under kombu's feet is a connection error, not a crash."""

from __future__ import annotations

import pytest
import redis
from kombu import Connection
from kombu.common import ignore_errors

from cio_worker.worker import _kombu_fixes as kombu_fixes


def test_a_channel_whose_connection_lost_its_client_raises_a_connection_error(
    redis_url: str,
) -> None:
    """The state kombu#582 leaves a channel in while Celery closes a lost connection."""
    kombu_fixes.install()
    connection = Connection(redis_url)
    try:
        channel = connection.default_channel
        client, channel.connection.client = channel.connection.client, None  # kombu's close
        with pytest.raises(redis.ConnectionError, match="kombu#582"):
            channel._connparams()
        # So Celery's `ignore_errors(connection, connection.close)` swallows it (an
        # AttributeError went through and the worker exited) and reconnects.
        ignore_errors(connection, channel._connparams)
        channel.connection.client = client
    finally:
        connection.release()


def test_installing_twice_wraps_once() -> None:
    from kombu.transport import redis as kombu_redis

    kombu_fixes.install()
    first = kombu_redis.Channel._connparams
    kombu_fixes.install()
    assert kombu_redis.Channel._connparams is first
