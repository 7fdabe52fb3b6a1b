"""Flower in a real browser: a worker, Flower behind basic auth, our jobs, headless Chromium.

Issue 7: with a worker running, Flower lists it through its API and answers 401 without auth; its
tasks carry our names (`cio_worker.<kind>`) and only the job id, never personal data; a real
headless Chromium renders the tasks page over loopback and saves a screenshot. Set
CIO_WORKER_SCREENSHOT_TO=docs/flower.png to keep a copy of it. The worker's Kubernetes liveness
probe (deploy/k8s/worker.yaml) is run here too, against this real worker.

Chromium is Debian's `chromium`: installed with apt-get when missing; when that is impossible the
browser test is skipped with the reason, except under CI (env CI set), where it fails.
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from browser import INSTALL_TIMEOUT_S, chromium_or_skip, spawn, wait_until
from prometheus_client.parser import text_string_to_metric_families

from cio_worker.config import Settings
from cio_worker.dev import RedisServer, SandboxProcess, free_port, stop_processes
from cio_worker.produce._producer import Producer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(INSTALL_TIMEOUT_S + 120)]

ROOT = Path(__file__).resolve().parents[1]
WINDOW = (1400, 900)
USER = "ops"
#: Personal data put into the jobs; none of it may reach Flower or the browser.
EMAIL = "ada.lovelace@example.com"
PERSONAL = (EMAIL, "Lovelace-4f1c", "Spring sale 7e2", "@example.com")
#: Flower's task table with the arguments shown, so the page itself proves they are only ids.
TASK_COLUMNS = "name,args,state,received,runtime,worker"
#: Where to keep a copy of the screenshot. Read at import: conftest.py's autouse fixture clears
#: every CIO_* variable before each test runs.
SCREENSHOT_TO = os.environ.get("CIO_WORKER_SCREENSHOT_TO")


def _stop(process: subprocess.Popen[bytes]) -> None:
    stop_processes([process], timeout_s=20)


# --- Chromium -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    """The path of a headless-capable Chromium, installed when missing."""
    return chromium_or_skip()


def _run_chromium(chromium: str, url: str, profile: Path, *mode: str) -> str:
    """Run headless Chromium on `url` once; return its stdout. Only loopback is reachable."""
    args = [
        chromium,
        "--headless",
        "--no-sandbox",  # the tests run as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        # Nothing but 127.0.0.1 resolves: no traffic leaves the machine.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        # Let the page's scripts fetch and draw the task table before the snapshot.
        "--virtual-time-budget=8000",
        *mode,
        url,
    ]
    env = {**os.environ, "HOME": str(profile)}
    # Its own process group, so its helper processes are stopped with it on a timeout.
    process = subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError("Chromium did not finish within 60 s") from None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, f"Chromium failed ({process.returncode}): {err[-2000:]}"
    return out


# --- PNG ------------------------------------------------------------------------------------------


def _png_facts(data: bytes) -> dict[str, int]:
    """Width, height and distinct pixel rows of a PNG, after checking its structure and CRCs."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, chunks, idat = 8, [], b""
    header: tuple[int, ...] = ()
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        chunks.append(kind)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND", chunks
    width, height, depth, color = header[:4]
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    row = 1 + width * channels * depth // 8  # a filter byte, then the pixels
    raw = zlib.decompress(idat)
    assert len(raw) == row * height, "pixel data does not match the header"
    rows = {raw[i * row : (i + 1) * row] for i in range(height)}
    return {"width": width, "height": height, "distinct_rows": len(rows), "bytes": len(data)}


# --- The stack ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Redis, the sandbox, one worker and Flower (basic auth from FLOWER_BASIC_AUTH), with jobs."""
    root = tmp_path_factory.mktemp("flower-ui")
    password = secrets.token_hex(12)
    redis_server = RedisServer(root / "redis").start()
    processes: list[subprocess.Popen[bytes]] = []
    sandbox: SandboxProcess | None = None
    try:
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("CIO_", "CUSTOMERIO_", "FLOWER_"))
            },
            "CIO_WORKER_REDIS_URL": redis_server.url,
            "CIO_WORKER_LOG_FORMAT": "json",
        }
        sandbox = SandboxProcess(env=env, log_path=root / "sandbox.log").start()
        env["CIO_WORKER_SANDBOX_URL"] = sandbox.url
        # Celery's default node name in a pod is celery@<pod name>; the probe relies on it.
        host = f"flowerui-{redis_server.port}"
        worker_log = root / "worker.log"
        worker = spawn(
            [sys.executable, "-m", "celery", "-A", "cio_worker", "worker", "--loglevel", "INFO",
             "-n", f"celery@{host}", "--without-mingle", "--without-gossip"],
            env,
            worker_log,
        )  # fmt: skip
        processes.append(worker)

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        # The recipes' way: Flower reads FLOWER_BASIC_AUTH itself (no password in argv).
        flower_env = {**env, "FLOWER_BASIC_AUTH": f"{USER}:{password}"}
        processes.append(
            spawn(
                [sys.executable, "-m", "celery", "-A", "cio_worker", "flower",
                 "--address=127.0.0.1", f"--port={port}", f"--tasks_columns={TASK_COLUMNS}"],
                flower_env,
                root / "flower.log",
            )
        )  # fmt: skip
        auth = (USER, password)

        def flower_up() -> bool:
            try:
                return httpx.get(f"{base}/healthcheck", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(flower_up, "Flower")

        # Flower fills its worker list once at start; refresh=1 asks the workers again.
        def worker_listed() -> bool:
            if worker.poll() is not None:  # fail now, with the reason, not after the timeout
                log = worker_log.read_text(errors="replace")[-2000:]
                raise AssertionError(f"the worker exited with {worker.returncode}: {log}")
            listed = httpx.get(f"{base}/api/workers?refresh=1", auth=auth, timeout=10).json()
            return f"celery@{host}" in listed

        wait_until(worker_listed, "the worker in Flower")

        producer = Producer(Settings.from_env(env))
        # Kinds sent one request per job, so each is one Celery task. Track-family kinds that
        # travel in batch requests (batch_ops.BATCHABLE) show as one `cio_worker.track_batch`
        # task per request; one is enqueued so that its personal data is looked for too.
        jobs = {
            producer.enqueue_track_anonymous(
                "anon-7", "Viewed pricing", {"contact": EMAIL}
            ): "track_anonymous",
            producer.enqueue_send_email(
                12, identifiers={"id": "user-42"}, to=EMAIL, message_data={"name": "Lovelace-4f1c"}
            ): "send_email",
            producer.enqueue_send_push(
                13, identifiers={"id": "user-42"}, message_data={"offer": "Spring sale 7e2"}
            ): "send_push",
            producer.enqueue_send_sms(14, identifiers={"email": EMAIL}): "send_sms",
            producer.enqueue_broadcast(7, data={"headline": "Spring sale 7e2"}, emails=[EMAIL]): (
                "broadcast"
            ),
        }
        producer.enqueue_identify("user-42", {"email": EMAIL, "last_name": "Lovelace-4f1c"})

        def all_succeeded() -> dict[str, Any]:
            tasks: dict[str, Any] = httpx.get(f"{base}/api/tasks", auth=auth, timeout=10).json()
            done = {i: t for i, t in tasks.items() if i in jobs and t.get("state") == "SUCCESS"}
            batch_done = any(
                t.get("name") == "cio_worker.track_batch" and t.get("state") == "SUCCESS"
                for t in tasks.values()
            )
            return tasks if len(done) == len(jobs) and batch_done else {}

        wait_until(all_succeeded, "every job to succeed in Flower")
        yield {
            "base": base,
            "auth": auth,
            "jobs": jobs,
            "host": host,
            "env": env,
            "root": root,
        }
    finally:
        for process in reversed(processes):
            _stop(process)
        if sandbox is not None:
            sandbox.stop()
        redis_server.stop()


# --- Tests ----------------------------------------------------------------------------------------


class TestFlowerAuth:
    def test_every_page_and_api_needs_basic_auth(self, stack: dict[str, Any]) -> None:
        """Without credentials, or with a wrong password, Flower answers 401 everywhere."""
        base = stack["base"]
        for path in ("/", "/workers", "/tasks", "/api/workers", "/api/tasks", "/tasks/datatable"):
            assert httpx.get(base + path, timeout=5).status_code == 401, path
            wrong = httpx.get(base + path, auth=(USER, "wrong"), timeout=5)
            assert wrong.status_code == 401, path
        assert httpx.get(base + "/api/tasks", auth=stack["auth"], timeout=5).status_code == 200

    def test_healthcheck_is_open_for_probes(self, stack: dict[str, Any]) -> None:
        """/healthcheck answers without auth: the Kubernetes probes in deploy/k8s use it."""
        response = httpx.get(stack["base"] + "/healthcheck", timeout=5)
        assert response.status_code == 200
        assert response.text == "OK"


#: Paths Flower (2.x) serves without auth whatever --basic_auth says: its probe, its Prometheus
#: metrics, its static files and the login/logout pages (views only, no data).
OPEN_IN_FLOWER = {"/healthcheck", "/metrics", "/static/x", "/login", "/logout"}
#: What Flower's /metrics carries: its own series, and the process/platform collectors of
#: prometheus_client's default registry (nothing else registers there in a Flower process).
FLOWER_SERIES = ("flower_", "process_", "python_")
FLOWER_LABELS = {"worker", "task", "type", "le", "implementation", "major", "minor", "patchlevel",
                 "version", "generation"}  # fmt: skip


def _flower_paths() -> list[str]:
    """One concrete path per route in Flower's URL table (a group becomes `x`)."""
    from flower.urls import handlers  # installed with the [embedded] extra

    paths = []
    for handler in handlers:
        pattern = handler.regex.pattern if hasattr(handler, "regex") else handler[0]
        path = re.sub(r"\([^)]*\)", "x", pattern).replace("/?", "").rstrip("$")
        if path not in (".*", "x"):
            paths.append(path)
    return paths


class TestFlowerOpenPaths:
    def test_only_the_documented_paths_answer_without_auth(self, stack: dict[str, Any]) -> None:
        """Every route of Flower's own URL table is asked without credentials: all but the
        documented open ones answer 401 (or 405 for a POST-only API)."""
        opened = set()
        for path in _flower_paths():
            status = httpx.get(stack["base"] + path, timeout=10).status_code
            if status not in (401, 405):
                opened.add(path)
        assert opened == OPEN_IN_FLOWER

    def test_metrics_carry_worker_and_task_names_only(self, stack: dict[str, Any]) -> None:
        """/metrics answers without auth (Flower serves it so since 2.0): Flower's counters by
        worker node and task name, no job id, no argument, nothing personal."""
        response = httpx.get(stack["base"] + "/metrics", timeout=10)
        assert response.status_code == 200
        text = response.text
        tasks = set()
        for family in text_string_to_metric_families(text):
            assert family.name.startswith(FLOWER_SERIES), family.name
            for sample in family.samples:
                assert set(sample.labels) <= FLOWER_LABELS, sample
                if "task" in sample.labels:
                    tasks.add(sample.labels["task"])
                if "worker" in sample.labels:
                    assert sample.labels["worker"] == f"celery@{stack['host']}", sample
        assert tasks and all(re.fullmatch(r"cio_worker\.[a-z_]+", task) for task in tasks), tasks
        for job_id in stack["jobs"]:
            assert job_id not in text
        for value in PERSONAL:
            assert value not in text

    def test_readme_says_what_is_open(self) -> None:
        """README.md's Flower section names both open paths and what /metrics shows."""
        readme = (ROOT / "README.md").read_text()
        section = readme.split("\n## Flower\n", 1)[1].split("\n## ", 1)[0]
        bullet = next(line for line in section.split("\n- ") if "/healthcheck" in line)
        assert "`/metrics`" in bullet, bullet
        assert "only `/healthcheck` is open" not in section
        assert "task names" in bullet and "no task id" in bullet, bullet


class TestFlowerApi:
    def test_lists_the_running_worker(self, stack: dict[str, Any]) -> None:
        """/api/workers?refresh=1 names our worker, with our four queues."""
        workers = httpx.get(
            f"{stack['base']}/api/workers?refresh=1", auth=stack["auth"], timeout=10
        ).json()
        node = workers[f"celery@{stack['host']}"]
        queues = {queue["name"] for queue in node["active_queues"]}
        assert queues == {"cio.track", "cio.transactional", "cio.broadcast", "cio.app"}

    def test_tasks_are_named_by_kind_and_carry_only_the_job_id(self, stack: dict[str, Any]) -> None:
        """Each job is a task cio_worker.<kind> whose only argument is its id; no personal data."""
        tasks = httpx.get(f"{stack['base']}/api/tasks", auth=stack["auth"], timeout=10).json()
        for job_id, kind in stack["jobs"].items():
            task = tasks[job_id]
            assert task["name"] == f"cio_worker.{kind}"
            assert task["state"] == "SUCCESS"
            assert ast.literal_eval(task["args"]) in ([job_id], (job_id,))
            assert ast.literal_eval(task["kwargs"]) == {}
            assert task["worker"] == f"celery@{stack['host']}"
        text = json.dumps(tasks)
        for value in PERSONAL:
            assert value not in text


class TestBatchesInFlower:
    def test_each_batch_request_is_a_task_with_counts_only(self, stack: dict[str, Any]) -> None:
        """The batched identify shows as a cio_worker.track_batch task: counts, no personal data."""
        tasks = httpx.get(f"{stack['base']}/api/tasks", auth=stack["auth"], timeout=10).json()
        batches = [t for t in tasks.values() if t["name"] == "cio_worker.track_batch"]
        assert batches, "no batch task in Flower"
        batch = batches[0]
        assert batch["state"] == "SUCCESS"
        assert batch["worker"] == f"celery@{stack['host']}"
        assert re.fullmatch(r"\(1 job, shard \d+\)", batch["args"]), batch["args"]
        assert "1 delivered" in batch["result"]


class TestBrowser:
    def test_chromium_renders_our_tasks_and_saves_a_screenshot(
        self, stack: dict[str, Any], chromium: str, tmp_path: Path
    ) -> None:
        """The tasks page, as a real browser draws it, lists our tasks and no personal data."""
        user, password = stack["auth"]
        url = f"http://{user}:{password}@{stack['base'].removeprefix('http://')}/tasks"
        dom = _run_chromium(chromium, url, tmp_path / "profile-dom", "--dump-dom")
        assert 'id="tasks-table"' in dom, dom[:500]
        for job_id, kind in stack["jobs"].items():
            assert job_id in dom, f"{kind} task {job_id} not rendered"
            assert f"cio_worker.{kind}" in dom
            assert f"[&#39;{job_id}&#39;]" in dom or f"['{job_id}']" in dom  # the args column
        for value in PERSONAL:
            assert value not in dom

        shot = tmp_path / "flower.png"
        _run_chromium(chromium, url, tmp_path / "profile-shot", f"--screenshot={shot}")
        facts = _png_facts(shot.read_bytes())
        assert (facts["width"], facts["height"]) == WINDOW
        # A blank or error page has few distinct rows and compresses to a few KB.
        assert facts["distinct_rows"] > 100, facts
        assert facts["bytes"] > 20_000, facts
        if SCREENSHOT_TO:
            target = Path(SCREENSHOT_TO)
            shutil.copyfile(shot, target if target.is_absolute() else ROOT / target)


class TestWorkerLivenessProbe:
    def _probe(self) -> list[str]:
        docs = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "worker.yaml").read_text())
        deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        command: list[str] = container["livenessProbe"]["exec"]["command"]
        return command

    def _run(self, stack: dict[str, Any], command: list[str], hostname: str) -> Any:
        # `celery` on PATH is this venv's, as it is the image's in a pod.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env = {**stack["env"], "HOSTNAME": hostname, "PATH": path}
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    def test_the_manifest_probe_passes_against_a_live_worker(self, stack: dict[str, Any]) -> None:
        """The exact liveness command of deploy/k8s/worker.yaml gets a pong from this worker."""
        result = self._run(stack, self._probe(), stack["host"])
        assert result.returncode == 0, result.stdout + result.stderr
        assert "pong" in result.stdout

    def test_the_probe_fails_when_the_worker_does_not_answer(self, stack: dict[str, Any]) -> None:
        """Pinging a node that is not there fails, so Kubernetes would restart the pod."""
        command = self._probe()
        shorter = [part.replace("--timeout 10", "--timeout 2") for part in command]
        assert shorter != command, "the probe's --timeout changed: update this test"
        result = self._run(stack, shorter, "no-such-pod")
        assert result.returncode != 0, result.stdout
