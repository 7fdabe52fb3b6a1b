"""`cio-worker check`: Redis, its safety settings and each configured credential, for probes."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from cio_worker import keys
from cio_worker.cli._main import main
from cio_worker.config import Settings
from cio_worker.dev import RedisServer, SandboxProcess, free_port
from cio_worker.limiter._limiter import Limiter, workspace_of
from cio_worker.ops._check import redacted_url, run_checks

pytestmark = pytest.mark.integration

WRONG_KEY = "wrong-key-7d1f0c"


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    """The real sandbox (Track region lookup, App segments, their auth) in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIO_", "CUSTOMERIO_"))}
    with SandboxProcess(env=env) as sandbox:
        yield sandbox.url


@pytest.fixture
def good_env(monkeypatch: pytest.MonkeyPatch, redis_url: str, sandbox_url: str) -> dict[str, str]:
    """Environment of a deployment with working Track and App credentials."""
    env = {
        "CIO_WORKER_REDIS_URL": redis_url,
        "CUSTOMERIO_SITE_ID": "sandbox-site",
        "CUSTOMERIO_TRACK_API_KEY": "sandbox-track-key",
        "CUSTOMERIO_TRACK_URL": sandbox_url,
        "CUSTOMERIO_APP_API_KEY": "sandbox-app-key",
        "CUSTOMERIO_APP_URL": sandbox_url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["check", *args])
    out, err = capsys.readouterr()
    assert err == ""
    return code, out


def run_json(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code, out = run_cli(capsys, "--json")
    document: dict[str, Any] = json.loads(out)  # the whole output is one JSON document
    return code, document


def by_name(document: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {check["name"]: check for check in document["checks"]}


def calls(sandbox_url: str) -> dict[str, int]:
    """Requests the sandbox received (all time), by path, with the status it answered."""
    rows = httpx.get(f"{sandbox_url}/_sandbox/requests", params={"since": 0}).json()
    return dict(Counter(f"{row['path']} {row['status']}" for row in rows))


def new_calls(before: dict[str, int], sandbox_url: str) -> dict[str, int]:
    after = calls(sandbox_url)
    return {key: n - before.get(key, 0) for key, n in after.items() if n != before.get(key, 0)}


class TestCheck:
    def test_good_credentials_pass(
        self,
        capsys: pytest.CaptureFixture[str],
        good_env: dict[str, str],
        sandbox_url: str,
        redis_client: redis.Redis,
    ) -> None:
        """Redis, its config, Track and App all pass: exit 0; Pipelines is not configured."""
        before = calls(sandbox_url)
        code, document = run_json(capsys)
        checks = by_name(document)
        assert code == 0, document
        assert document["ok"] is True
        assert [c["name"] for c in document["checks"]] == [
            "redis",
            "redis_config",
            "track",
            "app",
            "pipelines",
        ]
        assert {name: c["status"] for name, c in checks.items()} == {
            "redis": "ok",
            "redis_config": "ok",
            "track": "ok",
            "app": "ok",
            "pipelines": "not_configured",
        }
        assert "answered 200" in checks["track"]["detail"]
        assert "answered 200" in checks["app"]["detail"]
        # One cheap authenticated call per configured credential, and nothing else.
        assert new_calls(before, sandbox_url) == {
            "/api/v1/accounts/region 200": 1,
            "/v1/segments 200": 1,
        }
        # Both calls took a slot from the shared limiter, like every call to Customer.io.
        settings = Settings.from_env(good_env)
        for bucket in ("track", "app"):
            tat = keys.limiter(workspace_of(settings, bucket), bucket, "tat")
            assert redis_client.exists(tat), bucket

    def test_human_output(
        self, capsys: pytest.CaptureFixture[str], good_env: dict[str, str]
    ) -> None:
        """One line per check and a verdict; no key anywhere in it."""
        code, out = run_cli(capsys)
        assert code == 0
        lines = out.strip().splitlines()
        assert lines[-1] == "all checks passed"
        assert lines[2].split()[:2] == ["ok", "track"]
        assert lines[4].split()[:3] == ["not", "configured", "pipelines"]
        assert "sandbox-track-key" not in out and "sandbox-app-key" not in out

    def test_wrong_track_key_fails_naming_the_credential(
        self,
        capsys: pytest.CaptureFixture[str],
        good_env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A refused Track key: exit 1, the track check names its variables, never the key."""
        monkeypatch.setenv("CUSTOMERIO_TRACK_API_KEY", WRONG_KEY)
        code, document = run_json(capsys)
        checks = by_name(document)
        assert code == 1
        assert document["ok"] is False
        assert checks["track"]["status"] == "fail"
        assert "CUSTOMERIO_TRACK_API_KEY" in checks["track"]["detail"]
        assert "401" in checks["track"]["detail"]
        assert checks["app"]["status"] == "ok"
        assert WRONG_KEY not in json.dumps(document)

    def test_wrong_app_key_fails_naming_the_credential(
        self,
        capsys: pytest.CaptureFixture[str],
        good_env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch,
        sandbox_url: str,
    ) -> None:
        """A refused App key: exit 1 naming CUSTOMERIO_APP_API_KEY, never the key."""
        monkeypatch.setenv("CUSTOMERIO_APP_API_KEY", WRONG_KEY)
        before = calls(sandbox_url)
        code, out = run_cli(capsys)
        assert code == 1
        assert out.strip().splitlines()[-1] == "FAILED: app"
        assert "CUSTOMERIO_APP_API_KEY" in out
        assert WRONG_KEY not in out
        assert new_calls(before, sandbox_url)["/v1/segments 401"] == 1

    def test_redis_down_fails(
        self,
        capsys: pytest.CaptureFixture[str],
        good_env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch,
        sandbox_url: str,
    ) -> None:
        """Redis unreachable: exit 1 within a few seconds; no call is made without a limiter."""
        before = calls(sandbox_url)
        monkeypatch.setenv("CIO_WORKER_REDIS_URL", f"redis://:hunter2@127.0.0.1:{free_port()}/0")
        started = time.monotonic()
        code, document = run_json(capsys)
        assert time.monotonic() - started < 5
        checks = by_name(document)
        assert code == 1
        assert checks["redis"]["status"] == "fail"
        assert "unreachable" in checks["redis"]["detail"]
        assert "hunter2" not in json.dumps(document)
        assert {checks[name]["status"] for name in ("redis_config", "track", "app")} == {"skipped"}
        assert new_calls(before, sandbox_url) == {}

    def test_unconfigured_credentials_do_not_fail(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        """With only Redis configured every credential is 'not configured' and the exit is 0."""
        monkeypatch.setenv("CIO_WORKER_REDIS_URL", redis_url)
        code, document = run_json(capsys)
        checks = by_name(document)
        assert code == 0
        for name in ("track", "app", "pipelines"):
            assert checks[name]["status"] == "not_configured"
        assert "CUSTOMERIO_APP_API_KEY" in checks["app"]["detail"]

    def test_half_a_track_credential_fails(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        """A site id without its Track key is a mistake, reported as a failure naming the key."""
        monkeypatch.setenv("CIO_WORKER_REDIS_URL", redis_url)
        monkeypatch.setenv("CUSTOMERIO_SITE_ID", "site-1")
        code, document = run_json(capsys)
        assert code == 1
        assert by_name(document)["track"] == {
            "name": "track",
            "status": "fail",
            "detail": "CUSTOMERIO_TRACK_API_KEY is not set (the other half is)",
        }

    def test_pipelines_key_is_not_tried(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        """Every Pipelines call writes data: a configured key is reported as skipped, not tried."""
        monkeypatch.setenv("CIO_WORKER_REDIS_URL", redis_url)
        monkeypatch.setenv("CUSTOMERIO_PIPELINES_API_KEY", "pipelines-key")
        monkeypatch.setenv("CUSTOMERIO_PIPELINES_URL", f"http://127.0.0.1:{free_port()}")
        code, document = run_json(capsys)
        assert code == 0
        assert by_name(document)["pipelines"]["status"] == "skipped"

    def test_paused_bucket_sends_nothing(
        self,
        capsys: pytest.CaptureFixture[str],
        good_env: dict[str, str],
        sandbox_url: str,
        redis_client: redis.Redis,
    ) -> None:
        """The probe waits for the shared limiter: with Track paused by a 429 nothing is sent."""
        Limiter(Settings.from_env(good_env), redis_client).pause("track", 60)
        before = calls(sandbox_url)
        code, document = run_json(capsys)
        track = by_name(document)["track"]
        assert code == 1
        assert track["status"] == "fail"
        assert "RateLimitedError" in track["detail"]
        assert new_calls(before, sandbox_url) == {"/v1/segments 200": 1}

    def test_bad_setting_is_one_json_document(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An invalid variable fails the check with exit 1, still as one JSON document."""
        monkeypatch.setenv("CIO_WORKER_TRACK_RPS", "fast")
        code, document = run_json(capsys)
        assert code == 1
        assert document["checks"][0]["name"] == "config"
        assert "CIO_WORKER_TRACK_RPS" in document["checks"][0]["detail"]


class TestRedisConfig:
    def test_evicting_redis_fails_and_aof_off_warns(self, tmp_path: Path) -> None:
        """allkeys-lru fails the check; AOF off alone is a warning that still exits 0."""
        with RedisServer(tmp_path / "redis", appendonly=False) as server:
            settings = Settings(redis_url=server.url)
            report = run_checks(settings)
            config = report.results[1]
            assert (config.name, config.status) == ("redis_config", "warn")
            assert "appendonly is off" in config.detail
            assert report.exit_code == 0

            client = redis.Redis.from_url(server.url)
            client.config_set("maxmemory-policy", "allkeys-lru")
            client.close()
            report = run_checks(settings)
            config = report.results[1]
            assert config.status == "fail"
            assert "allkeys-lru" in config.detail
            assert report.exit_code == 1

            allowed = run_checks(settings.replace(allow_eviction=True))
            assert allowed.results[1].status == "warn"
            assert allowed.exit_code == 0


class TestRedactedUrl:
    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("redis://:secret@cache:6379/0", "redis://cache:6379/0"),
            ("rediss://user:secret@cache:6380/1?ssl_cert_reqs=none", "rediss://cache:6380/1"),
            ("redis://cache:6379/0?password=secret", "redis://cache:6379/0"),
            (
                "sentinel://:pw@h1:26379;sentinel://:pw@h2:26379/0?master_name=m",
                "sentinel://h1:26379;sentinel://h2:26379/0",
            ),
            ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ],
    )
    def test_no_password_is_printed(self, url: str, shown: str) -> None:
        """Credentials and query strings are dropped from the Redis URL shown to people."""
        assert redacted_url(url) == shown
