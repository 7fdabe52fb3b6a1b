"""A worker refuses to start without credentials or on an evicting Redis, and says why."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from cio_worker.config import Settings
from cio_worker.errors import ConfigError
from cio_worker.ops._preflight import check_credentials, check_redis


@pytest.fixture
def evicting(redis_client: redis.Redis) -> Iterator[redis.Redis]:
    redis_client.config_set("maxmemory-policy", "allkeys-lru")
    yield redis_client
    redis_client.config_set("maxmemory-policy", "noeviction")


class TestCheckRedis:
    def test_noeviction_with_aof_passes_quietly(self, redis_client: redis.Redis) -> None:
        """The test server (noeviction, AOF on) gives no warning."""
        assert check_redis(redis_client) == []

    def test_evicting_policy_is_refused(self, evicting: redis.Redis) -> None:
        """allkeys-lru is refused with a message naming the policy and the override."""
        with pytest.raises(ConfigError, match="allkeys-lru.*CIO_WORKER_ALLOW_EVICTION"):
            check_redis(evicting)

    def test_override_turns_refusal_into_a_warning(self, evicting: redis.Redis) -> None:
        """With the override the worker starts, warning about the risk."""
        assert any("allkeys-lru" in w for w in check_redis(evicting, allow_eviction=True))

    def test_aof_off_warns(self, redis_client: redis.Redis) -> None:
        """With appendonly off the check warns that a crash can lose jobs."""
        redis_client.config_set("appendonly", "no")
        try:
            assert any("appendonly" in w for w in check_redis(redis_client))
        finally:
            redis_client.config_set("appendonly", "yes")


class TestCheckCredentials:
    def test_missing_keys_are_named(self) -> None:
        """Consuming every queue without credentials names each missing variable."""
        with pytest.raises(ConfigError) as info:
            check_credentials(Settings(), {"track", "transactional"})
        for name in ("CUSTOMERIO_SITE_ID", "CUSTOMERIO_TRACK_API_KEY", "CUSTOMERIO_APP_API_KEY"):
            assert name in str(info.value)

    def test_track_only_worker_needs_only_track_keys(self) -> None:
        """A worker on -Q cio.track needs no App key."""
        check_credentials(Settings(site_id="s", track_api_key="k"), {"track"})


class TestWorkerProcess:
    def test_worker_without_credentials_exits_with_the_reason(self, redis_url: str) -> None:
        """`celery -A cio_worker worker` with no credentials exits 2 naming the variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CIO_", "CUSTOMERIO_"))}
        env["CIO_WORKER_REDIS_URL"] = redis_url
        result = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "cio_worker", "worker"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2
        assert "CUSTOMERIO_SITE_ID" in result.stderr and "cannot start" in result.stderr
