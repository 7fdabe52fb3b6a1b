"""The operator console in a real browser: headless Chromium (Debian's) driven by Playwright.

A real Redis, the sandbox, a Celery worker and `cio-worker console` (basic auth). Dead letters
are made the way production makes them: the sandbox answers real 400s to real sends. Then, in
the browser: 401 without credentials; the list with no personal value in its HTML; filter by
kind in the page, tick three letters, Replay, confirm; and the sandbox must have received
exactly those three jobs, once each. A letter's page shows its email only after Reveal.

Screenshots of the dead-letter page and of the overview are checked as PNGs; set
CIO_WORKER_CONSOLE_SCREENSHOTS=docs to keep them as docs/console.png and
docs/console-overview.png (the README's pictures).

Chromium is Debian's `chromium`, installed with apt-get when missing (as root); Playwright is a
dev dependency, used with that executable (never `playwright install`). When either cannot be
had the test is skipped with the reason, except under CI (env CI set), where it fails.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import INSTALL_TIMEOUT_S, chromium_or_skip, spawn, wait_until

from cio_worker.config import Settings
from cio_worker.dev import RedisServer, SandboxProcess, free_port, stop_processes
from cio_worker.produce import Producer
from cio_worker.queue import DeadLetterStore

#: apt-get may download ~100 MB on a fresh machine; the test itself takes ~20 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(INSTALL_TIMEOUT_S + 120)]

ROOT = Path(__file__).resolve().parents[1]
#: Read at import: conftest.py's autouse fixture clears every CIO_* variable before each test.
SCREENSHOTS = os.environ.get("CIO_WORKER_CONSOLE_SCREENSHOTS")
WINDOW = {"width": 1400, "height": 900}
USER = "ops"
#: Six emails and two SMS meet a 400; so do two identify calls (another family, another kind).
EMAILS = [f"person-{i}@example.com" for i in range(6)]
PHONE = "+15550100"
PERSONAL = (*EMAILS, PHONE, "example.com")


def _records(sandbox: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{sandbox}/_sandbox/requests", timeout=5).json()
    return found


def _recipient(record: dict[str, Any]) -> str | None:
    body = record.get("body")
    return body.get("identifiers", {}).get("id") if isinstance(body, dict) else None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Redis, the sandbox, one worker and the console, with ten dead letters made by 400s."""
    root = tmp_path_factory.mktemp("console-browser")
    password = secrets.token_hex(10)
    redis_server = RedisServer(root / "redis").start()
    processes: list[subprocess.Popen[bytes]] = []
    sandbox: SandboxProcess | None = None
    try:
        sandbox_port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CIO_", "CUSTOMERIO_"))},
            "CIO_WORKER_REDIS_URL": redis_server.url,
            "CIO_WORKER_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}",
            "CIO_WORKER_BATCH": "off",  # one request per job: each is recorded on its own
            "CIO_WORKER_LOG_FORMAT": "json",
        }
        processes.append(
            spawn(
                [sys.executable, "-m", "celery", "-A", "cio_worker", "worker", "--loglevel",
                 "INFO", "-n", f"console-{sandbox_port}@%h", "--without-mingle",
                 "--without-gossip"],
                env,
                root / "worker.log",
            )
        )  # fmt: skip
        port = free_port()
        console_env = {**env, "CIO_WORKER_CONSOLE_BASIC_AUTH": f"{USER}:{password}"}
        console_log = root / "console.log"
        processes.append(
            spawn(
                [sys.executable, "-m", "cio_worker", "console", "--port", str(port)],
                console_env,
                console_log,
            )  # fmt: skip
        )
        sandbox = SandboxProcess(env=env, log_path=root / "sandbox.log", port=sandbox_port)
        sandbox.start()
        base = f"http://127.0.0.1:{port}"

        def console_up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(console_up, "the console")
        # Real rejections: the next ten requests the sandbox gets answer 400.
        httpx.post(f"{sandbox.url}/_sandbox/faults", json={"status": 400, "count": 10})
        producer = Producer(Settings.from_env(env))
        emails = {
            producer.enqueue_send_email(
                7, identifiers={"id": f"mail-{i}"}, to=email, message_data={"first": "Ada"}
            ): f"mail-{i}"
            for i, email in enumerate(EMAILS)
        }
        for i in range(2):
            producer.enqueue_send_sms(8, identifiers={"id": f"sms-{i}"}, to=PHONE)
            producer.enqueue_identify(f"person-{i}", {"email": EMAILS[i], "plan": "pro"})
        store = DeadLetterStore(producer.redis)
        wait_until(lambda: store.count() >= 10, "ten dead letters")
        httpx.delete(f"{sandbox.url}/_sandbox/faults")
        yield {
            "base": base,
            "auth": {"username": USER, "password": password},
            "sandbox": sandbox.url,
            "emails": emails,
            "store": store,
            "log": console_log,
            "root": root,
        }
    finally:
        stop_processes(processes, timeout_s=20)
        if sandbox is not None:
            sandbox.stop()
        redis_server.stop()


@pytest.fixture(scope="module")
def browser(stack: dict[str, Any]) -> Iterator[Any]:
    executable = chromium_or_skip()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        message = "Playwright is not installed (pip install playwright: a dev dependency)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must be able to run it")
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",  # the tests run as root, where Chromium's sandbox will not start
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # loopback only
            ],
        )
        try:
            yield chromium
        finally:
            chromium.close()


def _png(data: bytes, name: str) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, f"{name}: not a real PNG"
    if SCREENSHOTS:
        target = ROOT / SCREENSHOTS / name
        target.write_bytes(data)


def test_replay_a_selection_in_the_browser(stack: dict[str, Any], browser: Any) -> None:
    base = stack["base"]
    # Without credentials: 401 and the sign-in form (fetched by the browser's own HTTP stack;
    # a page navigation would stop at Chromium's sign-in prompt).
    stranger = browser.new_context(viewport=WINDOW)
    try:
        for path in ("/", "/dead-letters", "/scheduled", "/webhooks"):
            answer = stranger.request.get(f"{base}{path}")
            assert answer.status == 401, path
            assert answer.headers["www-authenticate"].startswith("Basic ")
            assert 'name="password"' in answer.text()
    finally:
        stranger.close()

    context = browser.new_context(viewport=WINDOW, http_credentials=stack["auth"])
    page = context.new_page()
    try:
        page.goto(f"{base}/dead-letters")
        assert "10 of 10 dead letters match" in page.inner_text("main")
        html = page.content()
        for value in PERSONAL:
            assert value not in html, value

        # Filter in the page: the kind's menu, then the Filter button.
        page.select_option("select[name=kind]", "send_email")
        page.click("button:has-text('Filter')")
        page.wait_for_url("**/dead-letters?kind=send_email*")
        listed = page.eval_on_selector_all(
            "input[type=checkbox][name=id]", "boxes => boxes.map(b => b.value)"
        )
        assert sorted(listed) == sorted(stack["emails"])
        chosen = listed[:3]
        for job_id in chosen:
            page.check(f"input[name=id][value='{job_id}']")
        _png(page.screenshot(full_page=True), "console.png")

        page.click("button:has-text('Replay selected')")
        assert page.inner_text("h1") == "Replay 3 dead letters?"
        page.click("button:has-text('Replay 3 dead letters')")
        page.wait_for_url("**/dead-letters?kind=send_email&done=replay*")
        assert "Replayed 3 of 3 dead letters." in page.inner_text("main")

        sandbox = stack["sandbox"]
        wanted = {stack["emails"][job_id] for job_id in chosen}

        def delivered() -> list[str]:
            ok = [_recipient(r) for r in _records(sandbox) if r["status"] == 200]
            return [who for who in ok if who and who.startswith("mail-")]

        wait_until(lambda: set(delivered()) >= wanted, "the three replayed sends")
        time.sleep(1.0)  # a second send of any of them would arrive by now
        assert sorted(delivered()) == sorted(wanted)  # those three, once each, no other
        assert stack["store"].count() == 7

        # A letter's page: masked, then revealed on request.
        remaining = next(job_id for job_id in stack["emails"] if job_id not in chosen)
        page.goto(f"{base}/dead-letters/{remaining}")
        assert "person-" not in page.content()
        page.click("button:has-text('Reveal personal values')")
        assert "@example.com" in page.inner_text("pre")

        page.goto(f"{base}/")
        assert "workers online" in page.inner_text("main")
        _png(page.screenshot(full_page=True), "console-overview.png")
    finally:
        context.close()

    actions = [json.loads(line) for line in stack["log"].read_text().splitlines()
               if '"console_action"' in line]  # fmt: skip
    assert {(a["action"], a["count"], a["user"]) for a in actions} >= {
        ("replay", 3, USER),
        ("reveal", 1, USER),
    }
    assert not any(value in json.dumps(actions) for value in PERSONAL)
