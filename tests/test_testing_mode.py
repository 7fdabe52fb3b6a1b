"""The test mode for applications (cio_worker.testing, the `cio_jobs` pytest plugin).

Captured jobs must be exactly what a real enqueue stores (compared against a real Producer on
the real test Redis), be refused exactly when a real enqueue is refused, need no Redis at all
(an application's test suite runs in a child pytest with Redis pointed at a closed port), and
reach the real sandbox as a worker would send them.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

import cio_worker
from cio_worker import aio, testing
from cio_worker.config import Settings
from cio_worker.dev import SandboxProcess, free_port
from cio_worker.errors import RejectedError, ValidationError
from cio_worker.kinds import Kind
from cio_worker.produce import Producer
from cio_worker.produce._defaults import default_producer
from cio_worker.queue import JobLedger

#: The same calls, run on a real producer and under capture.
CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("enqueue_identify", ("u/1", {"email": "ada@example.com", "n": (1, 2)}), {}),
    (
        "enqueue_track",
        (7, "Signed Up", {"plan": "pro"}),
        {"timestamp": datetime(2024, 5, 1, 12, tzinfo=UTC)},
    ),
    ("enqueue_page", ("u1", "https://x.test/p"), {}),
    ("enqueue_merge", ({"email": "a@x.test"}, "u2"), {}),
    (
        "enqueue_send_email",
        (3,),
        {"identifiers": {"id": "u1"}, "to": "ada@example.com", "subject": "Hi"},
    ),
    ("enqueue_broadcast", (9,), {"ids": ["u1", 2], "data": {"h": "x"}}),
]

#: Calls a real enqueue refuses; the capture must refuse them with the same error.
BAD_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("enqueue_track", ("", "Signed Up"), {}),
    ("enqueue_track", ("u1", "x" * 1000), {}),
    ("enqueue_identify", ("..", {}), {}),
    ("enqueue_identify", ("u1", {"bad": object()}), {}),
    ("enqueue_add_device", ("u1", "tok", "windows"), {}),
    ("enqueue_merge", ("u1", "u1"), {}),
    ("enqueue_send_email", (3,), {"identifiers": {}}),
]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIO_", "CUSTOMERIO_"))}
    log = tmp_path_factory.mktemp("sandbox") / "sandbox.log"
    with SandboxProcess(env=env, log_path=log) as process:
        yield process.url


def _requests(sandbox_url: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = httpx.get(f"{sandbox_url}/_sandbox/requests").json()
    return records


@pytest.fixture
def no_redis(monkeypatch: pytest.MonkeyPatch) -> str:
    """Redis pointed at a loopback port nothing listens on: any command would fail."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("CIO_WORKER_REDIS_URL", url)
    return url


class TestSameAsARealEnqueue:
    def test_captured_payloads_are_the_ones_redis_holds(self, settings: Settings) -> None:
        real = Producer(settings)
        stored = []
        for name, args, kwargs in CALLS:
            job_id = getattr(real, name)(*args, **kwargs)
            entry = JobLedger(real.redis).load(job_id)
            assert entry is not None
            stored.append((entry.job.kind, entry.job.payload))
        with testing.capture() as jobs:
            for name, args, kwargs in CALLS:
                getattr(cio_worker, name)(*args, **kwargs)
        assert [(job.kind, job.payload) for job in jobs] == stored
        assert jobs[0].payload["traits"]["n"] == [1, 2]  # as JSON holds it, not a tuple

    @pytest.mark.parametrize(("name", "args", "kwargs"), BAD_CALLS)
    def test_refused_exactly_when_a_real_enqueue_is(
        self, settings: Settings, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        with pytest.raises(ValidationError) as real:
            getattr(Producer(settings), name)(*args, **kwargs)
        with testing.capture() as jobs, pytest.raises(ValidationError) as captured:
            getattr(cio_worker, name)(*args, **kwargs)
        assert str(captured.value) == str(real.value)
        assert len(jobs) == 0
        assert redis.Redis.from_url(settings.redis_url).dbsize() == 0


class TestCapture:
    def test_nothing_connects_and_the_previous_producer_comes_back(self, no_redis: str) -> None:
        before = cio_worker.configure(Settings.from_env())
        with testing.capture() as jobs:
            assert isinstance(default_producer(), testing.CapturingProducer)
            job_id = cio_worker.enqueue_track("u1", "Signed Up", {"plan": "pro"})
        assert default_producer() is before
        (job,) = jobs.assert_enqueued("track", user_id="u1", event="Signed Up")
        assert job.id == job_id and job.payload["properties"] == {"plan": "pro"}
        with pytest.raises(cio_worker.EnqueueError):  # the real producer: Redis is away
            cio_worker.enqueue_track("u1", "Signed Up")

    def test_helpers_and_their_failure_messages(self, no_redis: str) -> None:
        with testing.capture() as jobs:
            cio_worker.enqueue_track("u1", "Signed Up", {"plan": "pro"})
            cio_worker.enqueue_identify("u1", {"email": "ada@example.com"})
        assert [job.kind for job in jobs.of_kind(Kind.TRACK)] == [Kind.TRACK]
        assert jobs.of_kind("identify")[0].payload["traits"] == {"email": "ada@example.com"}
        with pytest.raises(AssertionError) as missing:
            jobs.assert_enqueued("track", user_id="u2")
        assert str(missing.value) == (
            "no track job with user_id='u2' was enqueued; 2 job(s) were:\n"
            "  track {'user_id': 'u1', 'event': 'Signed Up', 'properties': {'plan': 'pro'}, "
            "'timestamp': None}\n"
            "  identify {'user_id': 'u1', 'traits': {'email': 'ada@example.com'}, "
            "'timestamp': None}"
        )
        with pytest.raises(AssertionError, match=r"track payloads have no field 'name' \("):
            jobs.assert_enqueued("track", name="Signed Up")
        with pytest.raises(ValueError, match="kind: 'trak' is not a job kind"):
            jobs.of_kind("trak")
        with pytest.raises(AssertionError, match="expected no job"):
            jobs.assert_nothing_enqueued()
        jobs.clear()
        jobs.assert_nothing_enqueued()
        with pytest.raises(AssertionError, match="no send_sms job was enqueued; nothing was"):
            jobs.assert_enqueued("send_sms")

    def test_bulk_producer_keeps_what_it_flushes(self, no_redis: str) -> None:
        with testing.capture() as jobs:
            with default_producer().pipeline(flush_every=2) as bulk:
                ids = [bulk.enqueue_delete(f"u{i}") for i in range(3)]
            assert [job.id for job in jobs] == ids
            with pytest.raises(RuntimeError), default_producer().pipeline() as bulk:
                bulk.enqueue_delete("gone")
                raise RuntimeError("the block failed")
        assert len(jobs) == 3

    def test_async_enqueues_are_captured(self, no_redis: str) -> None:
        async def inside_the_loop() -> None:
            with testing.capture() as jobs:
                await aio.enqueue_track("u1", "Async Event")
                await aio.default_producer().enqueue_identify("u1", {"a": 1})
            assert [job.kind.value for job in jobs] == ["track", "identify"]
            assert not isinstance(aio.default_producer(), testing.AsyncCapturingProducer)

        asyncio.run(inside_the_loop())

        with testing.capture() as jobs:

            async def started_later() -> None:
                jobs.install_async()
                await aio.enqueue_page("u1", "https://x.test/")
                with pytest.raises(ValidationError, match="url"):
                    await aio.enqueue_page("u1", "")

            asyncio.run(started_later())
        jobs.assert_enqueued("page", url="https://x.test/")
        assert len(jobs) == 1


class TestDeliver:
    def test_captured_jobs_reach_the_sandbox_as_a_worker_sends_them(
        self, sandbox: str, no_redis: str
    ) -> None:
        httpx.post(f"{sandbox}/_sandbox/reset")
        with testing.capture() as jobs:
            track_id = cio_worker.enqueue_track("u/1", "Signed Up", {"plan": "pro"})
            cio_worker.enqueue_send_email(
                3, identifiers={"id": "u1"}, to="ada@example.com", subject="Hi"
            )
        answers = jobs.deliver(sandbox)
        assert [answer.status_code for answer in answers] == [200, 200]
        assert jobs.deliver(sandbox) == []  # each job once
        records = _requests(sandbox)
        assert [(r["method"], r["path"], r["status"], r["auth"]) for r in records] == [
            ("POST", "/api/v1/customers/u%2F1/events", 200, "ok"),
            ("POST", "/v1/send/email", 200, "ok"),
        ]
        assert records[0]["body"] == {"name": "Signed Up", "data": {"plan": "pro"}, "id": track_id}
        assert records[1]["body"]["subject"] == "Hi"

    def test_the_applications_data_api_and_the_sandboxs_refusals(
        self, sandbox: str, no_redis: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        httpx.post(f"{sandbox}/_sandbox/reset")
        monkeypatch.setenv("CIO_WORKER_DATA_API", "pipelines")
        monkeypatch.setenv("CUSTOMERIO_PIPELINES_API_KEY", "a real key, never sent to a sandbox")
        with testing.capture() as jobs:
            job_id = cio_worker.enqueue_identify("u1", {"email": "ada@example.com"})
        jobs.deliver(sandbox)
        (record,) = _requests(sandbox)
        assert (record["path"], record["auth"]) == ("/v1/identify", "ok")
        assert record["body"]["messageId"] == job_id
        httpx.post(f"{sandbox}/_sandbox/faults", json={"status": 400, "count": 1})
        try:
            with testing.capture() as jobs:
                cio_worker.enqueue_track("u1", "Refused")
            with pytest.raises(RejectedError):
                jobs.deliver(sandbox)
        finally:
            httpx.delete(f"{sandbox}/_sandbox/faults")


APP_MODULE = '''
import cio_worker

def signup(user_id, plan):
    """The application's own code: it enqueues, it knows nothing of tests."""
    cio_worker.enqueue_identify(user_id, {"plan": plan})
    return cio_worker.enqueue_track(user_id, "Signed Up", {"plan": plan})
'''

APP_TESTS = """
import pytest
import cio_worker
from signups import signup

def test_signup_enqueues_the_event(cio_jobs):
    job_id = signup("u1", "pro")
    (job,) = cio_jobs.assert_enqueued("track", user_id="u1", event="Signed Up")
    assert job.id == job_id and job.payload["properties"] == {"plan": "pro"}
    assert len(cio_jobs) == 2

def test_bad_input_is_refused_as_in_production(cio_jobs):
    with pytest.raises(cio_worker.ValidationError, match="user_id: must not be empty"):
        signup("", "pro")
    cio_jobs.assert_nothing_enqueued()

def test_a_failing_assertion_shows_what_was_enqueued(cio_jobs):
    signup("u1", "pro")
    cio_jobs.assert_enqueued("track", user_id="u1", event="Signed Out")

def test_without_the_fixture_redis_is_really_used():
    with pytest.raises(cio_worker.EnqueueError):
        signup("u1", "pro")
"""


def test_an_applications_test_suite_needs_no_redis(tmp_path: Path) -> None:
    """The plugin as an application uses it: a child pytest, Redis at a closed port."""
    (tmp_path / "signups.py").write_text(APP_MODULE)
    (tmp_path / "test_signups.py").write_text(textwrap.dedent(APP_TESTS))
    registered = any(
        ep.value == "cio_worker.pytest_plugin"
        for ep in importlib.metadata.entry_points(group="pytest11")
    )
    plugin = [] if registered else ["-p", "cio_worker.pytest_plugin"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIO_", "CUSTOMERIO_"))}
    env["CIO_WORKER_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *plugin, "-p", "no:cacheprovider", "-q",
         "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    out = result.stdout
    assert "1 failed, 3 passed" in out, out + result.stderr
    assert "FAILED test_signups.py::test_a_failing_assertion_shows_what_was_enqueued" in out
    assert "no track job with user_id='u1', event='Signed Out' was enqueued; 2 job(s)" in out
