"""`cio-worker people|segments|campaigns|campaign-metrics|webhooks`, each against the sandbox over
loopback HTTP and a real Redis: tables by default, one JSON document on stdout with --json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from cio_worker.cli._main import main
from cio_worker.dev import SandboxProcess, free_port
from cio_worker.sandbox.config import SANDBOX_WEBHOOK_SIGNING_KEY
from cio_worker.webhooks._store import WebhookStore

PRO = '{"attribute": {"field": "plan", "operator": "eq", "value": "pro"}}'

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def sandbox_process() -> Iterator[SandboxProcess]:
    with SandboxProcess() as sandbox:
        yield sandbox


@pytest.fixture
def sandbox_url(sandbox_process: SandboxProcess) -> str:
    httpx.post(f"{sandbox_process.url}/_sandbox/reset", timeout=5).raise_for_status()
    httpx.post(f"{sandbox_process.url}/_sandbox/app/seed", json={}, timeout=5).raise_for_status()
    return sandbox_process.url


@pytest.fixture
def env(redis_url: str, sandbox_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "CIO_WORKER_REDIS_URL": redis_url,
        "CIO_WORKER_SANDBOX_URL": sandbox_url,
        "CUSTOMERIO_WEBHOOK_SIGNING_KEY": SANDBOX_WEBHOOK_SIGNING_KEY,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def run(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> Run:
    """`cio-worker ARGS` in this process: (exit code, stdout, stderr)."""

    def invoke(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def requests_to(sandbox_url: str, endpoint: str) -> list[dict[str, Any]]:
    records = httpx.get(f"{sandbox_url}/_sandbox/requests", timeout=10).json()
    return [record for record in records if record["endpoint"] == endpoint]


class TestPeople:
    def test_search_by_email_prints_a_table(self, run: Run) -> None:
        code, out, _ = run("people", "search", "--email", "person4@example.com")
        assert code == 0
        assert "user-4" in out and "a3000004" in out and "1 people" in out

    def test_search_by_filter_follows_next_to_the_end(self, run: Run, sandbox_url: str) -> None:
        """--filter with --page-size 7: all 40 pro people, fetched in 6 requests."""
        code, out, err = run("people", "search", "--filter", PRO, "--page-size", "7", "--json")
        assert code == 0, err
        people = json.loads(out)
        assert len(people) == 40
        assert people[0] == {"cio_id": "a3000001", "email": "person1@example.com", "id": "user-1"}
        assert len(requests_to(sandbox_url, "search_people")) == 6

    def test_bad_filter_names_the_option(self, run: Run) -> None:
        code, out, err = run("people", "search", "--filter", "{plan: pro}", "--json")
        assert (code, out) == (2, "")
        assert "--filter: must be JSON" in err

    def test_invalid_filter_names_the_field(self, run: Run) -> None:
        code, _, err = run("people", "search", "--filter", '{"attribute": {"field": "a"}}')
        assert code == 2 and "filter.attribute.operator" in err

    def test_get_shows_attributes_and_devices(self, run: Run) -> None:
        code, out, _ = run("people", "get", "user-8")
        assert code == 0
        assert "person8@example.com" in out and "plan" in out and "device-8" in out

    def test_get_by_email_as_json(self, run: Run) -> None:
        code, out, _ = run("people", "get", "person9@example.com", "--id-type", "email", "--json")
        person = json.loads(out)
        assert code == 0
        assert (person["id"], person["attributes"]["plan"], person["unsubscribed"]) == (
            "user-9",
            "free",
            False,
        )

    def test_unknown_person_exits_1(self, run: Run) -> None:
        """Not found: exit 1, the reason on stderr; with --json stdout is still a document."""
        code, out, err = run("people", "get", "nobody", "--json")
        assert (code, json.loads(out)) == (1, None)
        assert "no person with id 'nobody'" in err


class TestLists:
    def test_segments(self, run: Run) -> None:
        code, out, _ = run("segments")
        assert code == 0 and "Pro plan" in out and "finished" in out
        code, out, _ = run("segments", "--json")
        segments = json.loads(out)
        assert [s["id"] for s in segments] == [1, 2, 3, 4, 5]
        assert segments[4] == {**segments[4], "name": "Beta testers", "type": "manual"}

    def test_campaigns(self, run: Run) -> None:
        code, out, _ = run("campaigns")
        assert code == 0 and "Onboarding 1" in out and "stopped" in out
        campaigns = json.loads(run("campaigns", "--json")[1])
        assert [(c["id"], c["state"], c["active"]) for c in campaigns] == [
            (1, "running", True),
            (2, "running", True),
            (3, "draft", False),
            (4, "stopped", False),
        ]

    def test_campaign_metrics(self, run: Run, sandbox_url: str) -> None:
        code, out, _ = run("campaign-metrics", "2", "--res", "weeks")
        assert code == 0 and "12 weeks" in out and "delivered" in out
        code, out, _ = run(
            "campaign-metrics", "2", "--res", "hours", "--start", "1700000000",
            "--end", "1700036000", "--json",
        )  # fmt: skip
        metrics = json.loads(out)
        assert code == 0
        assert (metrics["campaign_id"], metrics["res"], len(metrics["series"]["sent"])) == (
            2,
            "hours",
            10,
        )
        assert metrics["totals"]["sent"] == sum(metrics["series"]["sent"])
        (request,) = requests_to(sandbox_url, "campaign_metrics")[-1:]
        assert "version=2" in request["path"] and "start=1700000000" in request["path"]

    def test_unknown_campaign_exits_1(self, run: Run) -> None:
        code, out, err = run("campaign-metrics", "77", "--json")
        assert (code, json.loads(out)) == (1, None)
        assert "no campaign 77" in err

    def test_reads_draw_from_the_app_bucket(self, run: Run, sandbox_url: str) -> None:
        """Every command's request was an App API call with the Bearer key, accepted."""
        for command in (["segments"], ["campaigns"], ["people", "get", "user-1"]):
            assert run(*command, "--json")[0] == 0
        records = httpx.get(f"{sandbox_url}/_sandbox/requests", params={"api": "app"}).json()
        assert [(r["family"], r["auth"], r["status"]) for r in records] == [("app", "ok", 200)] * 3


class TestJsonOnStdout:
    def test_stdout_is_one_json_document_even_when_something_is_logged(
        self, env: dict[str, str], sandbox_url: str
    ) -> None:
        """A 429 on the way is logged (to stderr) and retried; stdout holds the JSON alone."""
        fault = {"status": 429, "count": 1, "retry_after": 1}
        httpx.post(f"{sandbox_url}/_sandbox/faults", json=fault).raise_for_status()
        result = subprocess.run(
            [sys.executable, "-m", "cio_worker", "segments", "--json"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert len(json.loads(result.stdout)) == 5
        assert "app_rate_limited" in result.stderr
        assert SANDBOX_WEBHOOK_SIGNING_KEY not in result.stderr + result.stdout


class TestWebhooksCommands:
    def test_list_shows_stored_events_and_counters(
        self, run: Run, redis_client: redis.Redis
    ) -> None:
        store = WebhookStore(redis_client)
        for number, metric in ((1, "bounced"), (2, "spammed")):
            data = {"delivery_id": f"d{number}", "recipient": "secret@example.com"}
            body = {"event_id": f"E{number}", "object_type": "email", "metric": metric,
                    "timestamp": 1_700_000_000, "data": data}  # fmt: skip
            store.append(body, json.dumps(body).encode())
            store.count("stored")
        store.count("rejected_mismatch")
        code, out, _ = run("webhooks", "list")
        assert code == 0 and "E2" in out and "spammed" in out
        assert "rejected_mismatch 1" in out and "stored 2" in out
        code, out, _ = run("webhooks", "list", "--json", "--metric", "bounced")
        (listed,) = json.loads(out)
        assert (listed["event_id"], listed["delivery_id"]) == ("E1", "d1")
        assert "secret@example.com" not in out  # listings carry no personal data

    def test_serve_without_a_key_says_which_variable(
        self, run: Run, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("CUSTOMERIO_WEBHOOK_SIGNING_KEY")
        monkeypatch.delenv("CIO_WORKER_SANDBOX_URL")  # the sandbox would lend its own key
        code, out, err = run("webhooks", "serve", "--port", str(free_port()))
        assert (code, out) == (2, "")
        assert "CUSTOMERIO_WEBHOOK_SIGNING_KEY" in err

    def test_serve_receives_the_sandbox_signed_webhooks(
        self, env: dict[str, str], sandbox_url: str, redis_url: str
    ) -> None:
        """`webhooks serve` under uvicorn: the sandbox's signed events are stored once each
        (a retry is a duplicate), forged and stale ones get 401, and read() hands them out."""
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "cio_worker", "webhooks", "serve", "--port", str(port)],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}/"
        try:
            _wait_healthy(f"{url}healthz", server)

            def send(**spec: Any) -> list[int | None]:
                response = httpx.post(
                    f"{sandbox_url}/_sandbox/webhooks/send", json={"url": url, **spec}, timeout=30
                )
                response.raise_for_status()
                return [result["status"] for result in response.json()["sent"]]

            assert send(metric="bounced", count=2, repeat=2) == [200, 200, 200, 200]
            assert send(metric="spammed", signature="bad") == [401]
            assert send(metric="spammed", signature="missing") == [401]
            assert send(metric="spammed", timestamp_offset_s=-301) == [401]
            assert send(object_type="customer", metric="unsubscribed") == [200]
        finally:
            server.terminate()
            _, err = server.communicate(timeout=30)
        # uvicorn finishes in-flight requests on SIGTERM, then exits by that signal.
        assert server.returncode in (0, -signal.SIGTERM), err.decode()
        assert b"Traceback" not in err
        client = redis.Redis.from_url(redis_url)
        events = WebhookStore(client).read("test", "reader", count=100)
        client.close()
        assert [(e.object_type, e.metric) for e in events] == [
            ("email", "bounced"),
            ("email", "bounced"),
            ("customer", "unsubscribed"),
        ]
        assert len({e.event_id for e in events}) == 3
        assert b"rejected" in err  # the receiver logged the refusals (to stderr)


def _wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "the webhook receiver exited"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("the webhook receiver did not start")


class TestWebhooksWithoutRedis:
    @pytest.mark.parametrize(
        "argv",
        [["webhooks", "list"], ["webhooks", "list", "--json"], ["webhooks", "serve"]],
    )
    def test_redis_away_is_one_clear_line(
        self, argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No traceback and no banner: exit 1 and one line naming Redis (password redacted);
        `serve` does not start a receiver that could store nothing."""
        nobody = free_port()
        monkeypatch.setenv("CIO_WORKER_REDIS_URL", f"redis://:s3cret@127.0.0.1:{nobody}/0")
        monkeypatch.setenv("CUSTOMERIO_WEBHOOK_SIGNING_KEY", "k")
        if argv[-1] == "serve":
            argv = [*argv, "--port", str(free_port())]
        code = main(argv)
        out, err = capsys.readouterr()
        assert (code, out) == (1, "")
        (line,) = err.strip().splitlines()
        assert line.startswith(f"cio-worker: webhooks {argv[1]}: Redis at redis://")
        assert f"127.0.0.1:{nobody}" in line and "does not answer (ConnectionError" in line
        assert "s3cret" not in err
