"""cio_worker.fastapi and examples/fastapi: the example app under real uvicorn against the real
test Redis, and under FastAPI's TestClient in test mode (the `cio_jobs` fixture), with no Redis.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import redis
from fastapi import FastAPI

import cio_worker.fastapi
from cio_worker import aio, testing
from cio_worker.dev import free_port, stop_processes
from cio_worker.kinds import Kind
from cio_worker.pytest_plugin import cio_jobs  # noqa: F401 - the fixture, as the plugin has it
from cio_worker.queue import JobLedger
from cio_worker.testing import CapturedJobs

with warnings.catch_warnings():
    # Starlette prefers httpx2 for its test client and warns when it falls back to httpx.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi"


def _example_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cio_fastapi_example", EXAMPLE / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example_server(redis_url: str, tmp_path: Path) -> Iterator[str]:
    """`uvicorn app:app` in examples/fastapi, as its README says, on a free loopback port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIO_", "CUSTOMERIO_"))}
    env.update({"CIO_WORKER_REDIS_URL": redis_url, "CIO_WORKER_BATCH": "off"})
    log = tmp_path / "uvicorn.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=EXAMPLE, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{base}/openapi.json", timeout=1)
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"uvicorn did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield base
    finally:
        stop_processes([server], timeout_s=10)


def test_the_example_under_uvicorn_stores_jobs_in_redis(
    example_server: str, redis_client: redis.Redis
) -> None:
    answer = httpx.post(
        f"{example_server}/signup", json={"user_id": "u1", "email": "ada@example.com"}
    )
    assert answer.status_code == 202, answer.text
    ids = answer.json()
    ledger = JobLedger(redis_client)
    identify, track = ledger.load(ids["identify_job"]), ledger.load(ids["track_job"])
    assert identify is not None and track is not None
    assert identify.job.kind is Kind.IDENTIFY
    assert identify.job.payload["traits"] == {"email": "ada@example.com", "plan": "free"}
    assert (track.job.kind, track.job.payload["event"]) == (Kind.TRACK, "Signed Up")
    refused = httpx.post(f"{example_server}/signup", json={"user_id": "", "email": "a@x.test"})
    assert refused.status_code == 422
    assert refused.json() == {"detail": "user_id: must not be empty"}


def test_the_example_in_test_mode_needs_no_redis(
    cio_jobs: CapturedJobs,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CIO_WORKER_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(_example_app().app) as client:
        answer = client.post("/signup", json={"user_id": "u1", "email": "ada@example.com"})
        assert answer.status_code == 202, answer.text
    (track,) = cio_jobs.assert_enqueued("track", user_id="u1", event="Signed Up")
    assert track.id == answer.json()["track_job"]
    cio_jobs.assert_enqueued("identify", traits={"email": "ada@example.com", "plan": "free"})


def test_without_test_mode_a_missing_redis_is_a_clean_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CIO_WORKER_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(_example_app().app) as client:
        answer = client.post("/signup", json={"user_id": "u1", "email": "ada@example.com"})
    assert (answer.status_code, answer.json()) == (503, {"detail": "could not queue the sign-up"})


def test_the_lifespan_installs_the_producer_and_the_dependency_says_when_it_is_missing(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIO_WORKER_REDIS_URL", redis_url)
    app = FastAPI(lifespan=cio_worker.fastapi.lifespan)

    @app.get("/same")
    async def same(producer: cio_worker.fastapi.ProducerDep) -> bool:
        return producer is aio.default_producer() and not isinstance(
            producer, testing.AsyncCapturingProducer
        )

    with TestClient(app) as client:
        assert client.get("/same").json() is True
    assert getattr(app.state, cio_worker.fastapi.STATE_KEY) is None

    bare = FastAPI()
    bare.get("/same")(same)
    with TestClient(bare) as client, pytest.raises(RuntimeError, match="no running cio_worker"):
        client.get("/same")
