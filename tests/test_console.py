"""`cio-worker console` over real HTTP: a real Redis, the console started by the CLI on a free
loopback port (uvicorn), requests from httpx.

What an operator relies on: nothing answers without credentials; every change is a POST with a
CSRF token and a confirmation stating the count; ids, reasons and payloads are text, never HTML;
personal values stay masked until revealed, and every action is logged with who took it; Redis
away is one line (503 on a page, exit 1 at start). Also `queue.ScheduledJobs`, the "retry now"
behind the scheduled page: due now, atomically, never queued twice.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis

from cio_worker import keys
from cio_worker.cli._main import main
from cio_worker.config import Settings
from cio_worker.console._rates import RateWindow
from cio_worker.dev import RedisServer, free_port, stop_processes
from cio_worker.ids import new_ulid
from cio_worker.job import Job
from cio_worker.kinds import Family, Kind
from cio_worker.queue import DeadLetterStore, ErrorRecord, JobLedger, ScheduledJobs
from cio_worker.webhooks import WebhookStore

pytestmark = pytest.mark.timeout(120)

USER = "ops"
PASSWORD = secrets.token_hex(8)
TOKEN = secrets.token_hex(16)
AUTH = (USER, PASSWORD)
EMAIL = "grace.hopper@example.com"
#: Markup in data: must reach the page as text.
EVIL = '"><img src=x onerror=alert(1)>'
WAIT_S = 20


def _env(redis_url: str, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CIO_", "CUSTOMERIO_"))}
    return {
        **base,
        "CIO_WORKER_REDIS_URL": redis_url,
        "CIO_WORKER_BATCH": "off",
        "CIO_WORKER_LOG_FORMAT": "json",
        **extra,
    }


def _start_console(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cio_worker", "console", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + WAIT_S
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the console exited: {log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_processes([process])
            raise AssertionError(f"the console did not answer: {log.read_text()}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def console(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The console on the session's Redis, with basic auth and a token."""
    log = tmp_path_factory.mktemp("console") / "console.log"
    env = _env(
        redis_server.url,
        CIO_WORKER_CONSOLE_BASIC_AUTH=f"{USER}:{PASSWORD}",
        CIO_WORKER_CONSOLE_TOKEN=TOKEN,
    )
    process, base = _start_console(env, log)
    try:
        yield {"base": base, "log": log}
    finally:
        stop_processes([process])


@pytest.fixture
def web(console: dict[str, Any], redis_url: str) -> Iterator[httpx.Client]:
    """A signed-in client (basic auth) on a freshly flushed Redis."""
    with httpx.Client(base_url=console["base"], auth=AUTH, timeout=10) as client:
        yield client


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert match, "no CSRF token in the page"
    return match.group(1)


def _dead_letter(
    client: redis.Redis,
    *,
    kind: Kind = Kind.SEND_EMAIL,
    payload: dict[str, Any] | None = None,
    reason: str = "400 Bad Request: template refused",
    status: int | None = 400,
    at: float | None = None,
    job_id: str | None = None,
) -> str:
    job = Job(
        id=job_id or new_ulid(),
        kind=kind,
        payload=payload
        or {"transactional_message_id": 3, "identifiers": {"id": "u1"}, "to": EMAIL},  # fmt: skip
        created_at=time.time(),
    )
    error = ErrorRecord(reason, status, f'{{"error": "{EMAIL} refused"}}', at or time.time())
    DeadLetterStore(client).add(job, 1, error, None)
    return job.id


def _log_records(log: Path) -> list[dict[str, Any]]:
    records = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class TestSignIn:
    PAGES = ("/", "/dead-letters", "/dead-letters/01M8Q0FKS3TCQ5YK9G43BHT2JP", "/scheduled",
             "/webhooks")  # fmt: skip

    def test_every_page_needs_credentials(self, console: dict[str, Any], redis_url: str) -> None:
        """Without credentials, or with wrong ones, every page is a 401 asking for them; a POST
        too, before it reads anything."""
        base = console["base"]
        for path in self.PAGES:
            for auth in (None, (USER, "wrong"), ("intruder", PASSWORD)):
                answer = httpx.get(f"{base}{path}", auth=auth, timeout=10)
                assert answer.status_code == 401, (path, auth)
                assert answer.headers["www-authenticate"].startswith("Basic ")
                assert 'name="password"' in answer.text  # the sign-in form
            bearer = {"authorization": "Bearer not-the-token-at-all"}
            assert httpx.get(f"{base}{path}", headers=bearer).status_code == 401
        posted = httpx.post(f"{base}/dead-letters/apply", data={"do": "delete:filter"})
        assert posted.status_code == 401
        # Health and the style sheet answer anyone, and say nothing about the data.
        assert httpx.get(f"{base}/healthz").json() == {"ok": True, "redis": "ok"}
        assert httpx.get(f"{base}/static/console.css").status_code == 200

    def test_basic_bearer_and_the_sign_in_cookie(
        self, console: dict[str, Any], redis_url: str
    ) -> None:
        base = console["base"]
        assert httpx.get(f"{base}/dead-letters", auth=AUTH).status_code == 200
        bearer = {"authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{base}/dead-letters", headers=bearer).status_code == 200
        with httpx.Client(base_url=base, timeout=10) as browser:
            failed = browser.post("/login", data={"token": "guess-guess-guess", "next": "/"})
            assert failed.status_code == 401 and "Wrong credentials" in failed.text
            signed = browser.post("/login", data={"token": TOKEN, "next": "/scheduled"})
            assert signed.status_code == 303 and signed.headers["location"] == "/scheduled"
            cookie = signed.headers["set-cookie"]
            assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
            page = browser.get("/dead-letters")
            assert page.status_code == 200 and "log out" in page.text
            # Another site's address is never where a sign-in leads.
            away = browser.post("/login", data={"user": USER, "password": PASSWORD,
                                                "next": "//evil.example/"})  # fmt: skip
            assert away.headers["location"] == "/"
            browser.cookies.set("cio_console", browser.cookies["cio_console"][:-2] + "00")
            assert browser.get("/dead-letters").status_code == 401
        records = _log_records(console["log"])
        assert any(r.get("event") == "console_sign_in_failed" for r in records)
        assert not any(TOKEN in json.dumps(r) or PASSWORD in json.dumps(r) for r in records)

    def test_a_post_without_the_csrf_token_changes_nothing(
        self, web: httpx.Client, redis_client: redis.Redis
    ) -> None:
        job_id = _dead_letter(redis_client)
        for data in ({"do": "delete:selected", "id": job_id},
                     {"do": "delete:selected", "id": job_id, "csrf": "0" * 64}):  # fmt: skip
            assert web.post("/dead-letters/apply", data=data).status_code == 403
        assert DeadLetterStore(redis_client).get(job_id) is not None


class TestDeadLetters:
    def test_the_list_filters_validates_and_paginates(
        self, web: httpx.Client, redis_client: redis.Redis
    ) -> None:
        old = time.time() - 7200
        emails = [_dead_letter(redis_client, at=old) for _ in range(55)]
        pushes = [
            _dead_letter(redis_client, kind=Kind.SEND_PUSH, reason="422 Unprocessable: no device",
                         status=422, payload={"identifiers": {"id": "u2"}})
            for _ in range(3)
        ]  # fmt: skip
        first = web.get("/dead-letters").text
        assert "58 of 58 dead letters match" in first and "Page 1 of 2" in first
        assert first.count('name="id"') == 50
        second = web.get("/dead-letters", params={"page": 2}).text
        assert second.count('name="id"') == 8
        filtered = web.get("/dead-letters", params={"kind": "send_push", "reason": "DEVICE"}).text
        assert sorted(re.findall(r'name="id" value="(\w+)"', filtered)) == sorted(pushes)
        assert "Replay all 3" in filtered
        by_status = web.get("/dead-letters", params={"status": "422", "newer_than": "1h"}).text
        assert sorted(re.findall(r'name="id" value="(\w+)"', by_status)) == sorted(pushes)
        aged = web.get("/dead-letters", params={"older_than": "1h", "family": "transactional"})
        assert "55 of 58" in aged.text and emails[0] in aged.text
        for params, field in (
            ({"kind": "bogus"}, "kind: must be one of identify"),
            ({"family": "nope"}, "family: must be one of track"),
            ({"status": "999"}, "status: must be an HTTP status"),
            ({"older_than": "3 weeks"}, "older_than: must be a number and a unit"),
            ({"page": "0"}, "page: must be a page number"),
        ):
            answer = web.get("/dead-letters", params=params)
            assert answer.status_code == 400 and field in answer.text, params

    def test_ids_reasons_and_payloads_are_text_never_markup(
        self, web: httpx.Client, redis_client: redis.Redis
    ) -> None:
        job_id = _dead_letter(
            redis_client,
            job_id=f"01EVIL{EVIL}",
            reason=f"400 {EVIL}",
            payload={f"key{EVIL}": {"nested": EVIL}, "to": EMAIL},
        )
        listing = web.get("/dead-letters").text
        detail = web.get(f"/dead-letters/{quote(job_id, safe='')}")
        assert detail.status_code == 200
        revealed = web.post(detail.url.path + "/reveal", data={"csrf": _csrf(detail.text)}).text
        for page in (listing, detail.text, revealed):
            assert "<img" not in page and "onerror=alert(1)>" not in page
            assert "&lt;img src=x onerror=alert(1)&gt;" in page
        # The payload's key is shown (as JSON, escaped), its values masked.
        assert "&quot;key\\&quot;&gt;&lt;img src=x onerror=alert(1)&gt;&quot;" in detail.text

    def test_personal_values_stay_masked_until_revealed_and_the_reveal_is_logged(
        self, console: dict[str, Any], web: httpx.Client, redis_client: redis.Redis
    ) -> None:
        job_id = _dead_letter(redis_client)
        listing = web.get("/dead-letters").text
        detail = web.get(f"/dead-letters/{job_id}").text
        for page in (listing, detail):
            assert EMAIL not in page and "example.com" not in page
        assert "&quot;to&quot;: &quot;•••&quot;" in detail  # keys shown, values masked
        revealed = web.post(f"/dead-letters/{job_id}/reveal", data={"csrf": _csrf(detail)})
        assert revealed.status_code == 200 and EMAIL in revealed.text
        assert web.get(f"/dead-letters/{job_id}/reveal").status_code == 405  # never a GET
        reveals = [
            r for r in _log_records(console["log"])
            if r.get("event") == "console_action" and r.get("action") == "reveal"
        ]  # fmt: skip
        assert reveals and reveals[-1]["user"] == USER and reveals[-1]["job_id"] == job_id
        assert not any(EMAIL in json.dumps(r) for r in _log_records(console["log"]))

    def test_delete_a_selection_confirming_the_count(
        self, console: dict[str, Any], web: httpx.Client, redis_client: redis.Redis
    ) -> None:
        ids = [_dead_letter(redis_client) for _ in range(4)]
        csrf = _csrf(web.get("/dead-letters").text)
        asked = {"csrf": csrf, "do": "delete:selected", "id": [ids[0], ids[1], "01GONE"]}
        question = web.post("/dead-letters/confirm", data=asked)
        assert question.status_code == 200
        assert "Delete 2 dead letters?" in question.text  # the gone one is not counted
        assert DeadLetterStore(redis_client).count() == 4  # asking changed nothing
        carried = dict(re.findall(r'name="(csrf|do)" value="([^"]+)"', question.text))
        carried_ids = re.findall(r'name="id" value="(\w+)"', question.text)
        done = web.post("/dead-letters/apply", data={**carried, "id": carried_ids})
        assert done.status_code == 303
        landed = web.get(done.headers["location"]).text
        assert "Deleted 2 of 2 dead letters." in landed
        assert sorted(DeadLetterStore(redis_client).all_ids()) == sorted(ids[2:])
        actions = [r for r in _log_records(console["log"]) if r.get("action") == "delete"]
        assert actions[-1]["user"] == USER and actions[-1]["count"] == 2

    def test_replay_the_whole_filter_leaves_later_letters_alone(
        self, web: httpx.Client, redis_client: redis.Redis
    ) -> None:
        pushes = [_dead_letter(redis_client, kind=Kind.SEND_PUSH) for _ in range(3)]
        other = _dead_letter(redis_client, kind=Kind.SEND_SMS)
        csrf = _csrf(web.get("/dead-letters").text)
        question = web.post(
            "/dead-letters/confirm", data={"csrf": csrf, "do": "replay:filter", "kind": "send_push"}
        )
        assert "Replay 3 dead letters?" in question.text
        fields = dict(re.findall(r'name="(\w+)" value="([^"]+)"', question.text))
        assert fields["kind"] == "send_push" and fields["do"] == "replay:filter"
        time.sleep(0.01)
        late = _dead_letter(redis_client, kind=Kind.SEND_PUSH)  # arrives after the question
        done = web.post("/dead-letters/apply", data=fields)
        assert done.status_code == 303 and "kind=send_push" in done.headers["location"]
        store = DeadLetterStore(redis_client)
        assert sorted(store.all_ids()) == sorted([other, late])
        for job_id in pushes:  # back in the ledger, queued again under the same id
            assert redis_client.hget(keys.job(job_id), "state") == b"queued"


class TestScheduled:
    def _waiting(self, client: redis.Redis) -> tuple[str, str]:
        """A retry due in an hour (after a 503) and a job parked for its circuit."""
        ledger = JobLedger(client)
        retry = Job(new_ulid(), Kind.SEND_EMAIL, {"to": EMAIL}, time.time())
        parked = Job(new_ulid(), Kind.SEND_SMS, {"to": "+15550100"}, time.time())
        for job in (retry, parked):
            ledger.enqueue(job)
            assert ledger.claim(job.id, Family.TRANSACTIONAL, "w1", 30).outcome == "ok"
        ledger.record_failure(retry.id, ErrorRecord("503 Service Unavailable", 503, None, 1.0))
        assert ledger.defer(retry.id, 3600, "w1")
        assert ledger.park(parked.id, "transactional", "w1")
        return retry.id, parked.id

    def test_retry_now_makes_due_once_and_never_requeues(self, redis_client: redis.Redis) -> None:
        retry, parked = self._waiting(redis_client)
        scheduled = ScheduledJobs(redis_client)
        listed = scheduled.retries()
        assert [(j.id, j.kind, j.family, j.attempts, j.status) for j in listed] == [
            (retry, "send_email", "transactional", 1, 503)
        ]
        assert listed[0].at > time.time() + 3500
        assert [(j.id, j.bucket) for j in scheduled.parked()] == [(parked, "transactional")]
        assert scheduled.count_parked()["transactional"] == 1
        ledger = JobLedger(redis_client)
        assert ledger.due() == []
        assert scheduled.retry_now([retry, parked, "01NOTWAITING"]) == 2
        assert sorted(ledger.due()) == sorted([(retry, "send_email"), (parked, "send_sms")])
        assert redis_client.zcard(keys.parked("transactional")) == 0
        # The sweeper pushes each once; asking again afterwards adds nothing back.
        assert [ledger.push_again(i, k, "due") for i, k in ledger.due()] == [True, True]
        assert scheduled.retry_now([retry, parked]) == 0
        assert redis_client.zcard(keys.delayed()) == 0
        assert redis_client.llen("cio.transactional") == 4  # 2 enqueues + 2 pushes, no more

    def test_the_page_lists_both_and_retries_one(
        self, console: dict[str, Any], web: httpx.Client, redis_client: redis.Redis
    ) -> None:
        retry, parked = self._waiting(redis_client)
        page = web.get("/scheduled").text
        assert retry in page and parked in page and "503 Service Unavailable" in page
        assert EMAIL not in page
        done = web.post("/scheduled/retry", data={"csrf": _csrf(page), "one": retry})
        assert done.status_code == 303
        assert "Made 1 of 1 jobs due now." in web.get(done.headers["location"]).text
        assert JobLedger(redis_client).due() == [(retry, "send_email")]
        assert redis_client.zscore(keys.parked("transactional"), parked) is not None
        actions = [r for r in _log_records(console["log"]) if r.get("action") == "retry_now"]
        assert actions[-1]["user"] == USER and actions[-1]["count"] == 1


class TestOverviewAndWebhooks:
    def test_overview_refreshes_itself_and_shows_every_family(
        self, web: httpx.Client, redis_client: redis.Redis
    ) -> None:
        _dead_letter(redis_client)
        page = web.get("/")
        assert page.status_code == 200
        assert '<meta http-equiv="refresh"' in page.text
        for family in Family:
            assert f"<b>{family.value}</b>" in page.text
        assert "workers online" in page.text and "scheduled retries" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        assert page.headers["cache-control"] == "no-store"

    def test_webhooks_list_ids_and_counts_and_reveal_a_body(
        self, console: dict[str, Any], web: httpx.Client, redis_client: redis.Redis
    ) -> None:
        store = WebhookStore(redis_client)
        event = {"event_id": "01EVENT", "object_type": "email", "metric": "opened",
                 "timestamp": 1_700_000_000,
                 "data": {"delivery_id": "dlv-7", "recipient": EMAIL}}  # fmt: skip
        stream_id = store.append(event, json.dumps(event).encode())
        assert stream_id
        store.count("rejected_mismatch", 2)
        page = web.get("/webhooks").text
        assert "01EVENT" in page and "dlv-7" in page and "opened" in page
        assert "rejected_mismatch" in page and EMAIL not in page
        shown = web.post(f"/webhooks/{stream_id}/reveal", data={"csrf": _csrf(page)}).text
        assert EMAIL in shown
        assert any(r.get("action") == "reveal_webhook" for r in _log_records(console["log"]))


class TestRedisAway:
    def test_pages_answer_503_in_one_line(self, tmp_path: Path) -> None:
        server = RedisServer(tmp_path / "redis").start()
        env = _env(server.url, CIO_WORKER_CONSOLE_TOKEN=TOKEN)
        process, base = _start_console(env, tmp_path / "console.log")
        try:
            server.stop()
            bearer = {"authorization": f"Bearer {TOKEN}"}
            for path in ("/", "/dead-letters", "/scheduled", "/webhooks"):
                answer = httpx.get(f"{base}{path}", headers=bearer, timeout=10)
                assert answer.status_code == 503, path
                assert f"Redis is unreachable at {server.url}" in answer.text
                assert "Traceback" not in answer.text
            assert httpx.get(f"{base}/healthz").status_code == 503
        finally:
            stop_processes([process])
            server.stop()
        assert "Traceback" not in (tmp_path / "console.log").read_text()

    def test_the_command_refuses_to_start_in_one_line(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("CIO_WORKER_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
        monkeypatch.setenv("CIO_WORKER_LOG_FORMAT", "json")
        cases = [
            ([], {}, 2, "the console needs CIO_WORKER_CONSOLE_BASIC_AUTH"),
            (["--local-only", "--host", "0.0.0.0"], {}, 2, "--local-only serves a loopback"),
            ([], {"CIO_WORKER_CONSOLE_TOKEN": "short"}, 2, "at least 16 characters"),
            ([], {"CIO_WORKER_CONSOLE_BASIC_AUTH": "ops"}, 2, "must be user:password"),
            ([], {"CIO_WORKER_CONSOLE_BASIC_AUTH": AUTH[0] + ":" + AUTH[1]}, 1,
             "Redis at redis://127.0.0.1:"),
            (["--local-only"], {}, 1, "does not answer"),
        ]  # fmt: skip
        for args, env, code, line in cases:
            for name in ("CIO_WORKER_CONSOLE_BASIC_AUTH", "CIO_WORKER_CONSOLE_TOKEN"):
                monkeypatch.delenv(name, raising=False)
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            assert main(["console", "--port", str(free_port()), *args]) == code, args
            err = capsys.readouterr().err.strip()
            assert line in err and len(err.splitlines()) == 1, err
            assert PASSWORD not in err

    def test_a_port_in_use_is_one_line(
        self,
        redis_url: str,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setenv("CIO_WORKER_REDIS_URL", redis_url)
        monkeypatch.setenv("CIO_WORKER_CONSOLE_TOKEN", TOKEN)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            assert main(["console", "--port", str(port)]) == 1
        err = capsys.readouterr().err.strip()
        assert (
            err == f"cio-worker: console: cannot listen on 127.0.0.1:{port}: Address already in use"
        )


def test_rates_are_per_minute_over_the_last_minute() -> None:
    window = RateWindow(span_s=60)
    assert window.add({"track:delivered": 100}, now=1000.0) == ({}, 0.0)
    assert window.add({"track:delivered": 130}, now=1030.0) == ({"track:delivered": 60.0}, 30.0)
    window.add({"track:delivered": 160}, now=1070.0)
    # The base moves to the newest sample at least a minute old (1000 -> 1030 at 1095).
    rates, span = window.add({"track:delivered": 190}, now=1095.0)
    assert span == 65.0 and rates == {"track:delivered": pytest.approx(60 * 60 / 65)}


def test_settings_keep_the_console_secrets_out_of_repr() -> None:
    settings = Settings.from_env(
        {"CIO_WORKER_CONSOLE_BASIC_AUTH": f"{USER}:{PASSWORD}", "CIO_WORKER_CONSOLE_TOKEN": TOKEN}
    )
    assert settings.console_basic_auth == f"{USER}:{PASSWORD}"
    assert settings.console_token == TOKEN
    assert PASSWORD not in repr(settings) and TOKEN not in repr(settings)
