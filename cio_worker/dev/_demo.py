"""`make run`: a real Redis, the sandbox, a worker, Flower and the operator console, a demo load,
and a live display.

With real Customer.io credentials in the environment it starts Redis, a worker, Flower and the
console against Customer.io and sends no demo data. Ctrl-C stops every process it started.
Flower and the console get a fresh random password each run, passed in their environment (never
on a command line, where `ps` shows it); the banner prints their URLs with the credentials.
"""

from __future__ import annotations

import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live

from cio_worker.config import Settings
from cio_worker.dev._embedded import RedisServer, SandboxProcess, free_port
from cio_worker.dev._progress import Progress
from cio_worker.kinds import Family, queue_name
from cio_worker.produce import Producer
from cio_worker.worker import worker_command

#: Give up waiting for the demo load after this long (it normally ends in well under a minute).
DEMO_TIMEOUT_S = 600


class Supervisor:
    """Starts child processes and makes sure every one of them stops."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the child
        child = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.children.append((name, child))
        return child

    def adopt(self, name: str, child: subprocess.Popen[bytes] | None) -> None:
        """Watch and stop a child started elsewhere (e.g. by SandboxProcess)."""
        if child is not None:
            self.children.append((name, child))

    def check(self) -> None:
        for name, child in self.children:
            if child.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {child.returncode}; see {self.log_dir / name}.log"
                )

    def stop(self) -> None:
        for _, child in reversed(self.children):
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 20
        for _, child in reversed(self.children):
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _live_credentials() -> bool:
    return bool(
        (os.environ.get("CUSTOMERIO_SITE_ID") and os.environ.get("CUSTOMERIO_TRACK_API_KEY"))
        or os.environ.get("CUSTOMERIO_APP_API_KEY")
        or os.environ.get("CUSTOMERIO_PIPELINES_API_KEY")
    ) and not os.environ.get("CIO_WORKER_SANDBOX_URL")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo(
    *,
    data_dir: str,
    people: int,
    messages: int,
    exit_when_done: bool,
    flower: bool,
    operator_console: bool = True,
) -> int:
    console = Console()
    root = Path(data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    live = _live_credentials()
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C stops everything even when whoever started us ignores SIGINT (a script's
    # background job does): Python then installs no handler, while Celery, our child, always
    # does, so the worker would stop alone and the demo would report it as a crash.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    supervisor = Supervisor(root)
    redis_server: RedisServer | None = None
    try:
        env = dict(os.environ, CIO_WORKER_LOG_FORMAT="json")
        if not os.environ.get("CIO_WORKER_REDIS_URL"):
            redis_server = RedisServer(root / "redis").start()
            env["CIO_WORKER_REDIS_URL"] = redis_server.url
        console.print(f"redis      {env['CIO_WORKER_REDIS_URL']} (AOF in {root / 'redis'})")
        if not live:
            sandbox = SandboxProcess(env=env, log_path=root / "sandbox.log").start()
            supervisor.adopt("sandbox", sandbox.process)
            env["CIO_WORKER_SANDBOX_URL"] = sandbox.url
            console.print(f"sandbox    {env['CIO_WORKER_SANDBOX_URL']} (stats at /_sandbox/stats)")
        settings = Settings.from_env(env)
        worker_args = worker_command(["-n", "demo@%h"])
        if live:
            families = [f for f in Family if not settings.missing_credentials({f.value})]
            worker_args += ["-Q", ",".join(queue_name(f) for f in families)]
        supervisor.start("worker", worker_args, env)
        console.print(f"worker     logs in {root / 'worker.log'}")
        if flower:
            _start_page(console, supervisor, env, "flower", "FLOWER_BASIC_AUTH")
        if operator_console:
            _start_page(console, supervisor, env, "console", "CIO_WORKER_CONSOLE_BASIC_AUTH")
        if live:
            console.print(
                "Customer.io credentials found: the worker delivers to Customer.io; no demo "
                "data is sent. Enqueue from your application with "
                f"CIO_WORKER_REDIS_URL={env['CIO_WORKER_REDIS_URL']}. Ctrl-C stops."
            )
            while True:
                supervisor.check()
                time.sleep(1)
        return _run_load(console, supervisor, settings, people, messages, exit_when_done)
    except KeyboardInterrupt:
        console.print("stopping...")
        return 130
    finally:
        supervisor.stop()
        if redis_server:
            redis_server.stop()


def _start_page(
    console: Console, supervisor: Supervisor, env: dict[str, str], name: str, auth_variable: str
) -> None:
    """Start Flower or the operator console on a free loopback port behind basic auth with a
    new random password (in its environment only), and print its URL and credentials."""
    user, password = "cio", secrets.token_urlsafe(12)
    port = free_port()
    if name == "flower":
        args = ["celery", "-A", "cio_worker", "flower", "--address=127.0.0.1", f"--port={port}"]
    else:
        args = ["cio_worker", "console", "--host", "127.0.0.1", "--port", str(port)]
    supervisor.start(
        name, [sys.executable, "-m", *args], {**env, auth_variable: f"{user}:{password}"}
    )
    console.print(f"{name:<10} http://127.0.0.1:{port}  (user {user}, password {password})")


def _run_load(
    console: Console,
    supervisor: Supervisor,
    settings: Settings,
    people: int,
    messages: int,
    exit_when_done: bool,
) -> int:
    producer = Producer(settings)
    expected = {Family.TRACK: 2 * people, Family.TRANSACTIONAL: messages, Family.BROADCAST: 1}
    progress = Progress(producer.redis, expected)
    latencies: list[float] = []

    def timed(enqueue: Callable[..., str], *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        enqueue(*args, **kwargs)
        latencies.append(time.perf_counter() - started)

    now = int(time.time())
    for i in range(people):
        user = f"demo-user-{i}"
        traits = {"email": f"{user}@example.com", "plan": "pro", "created_at": now - i}
        timed(producer.enqueue_identify, user, traits)
        timed(producer.enqueue_track, user, "Signed Up", {"source": "demo", "n": i}, timestamp=now)
    for i in range(messages):
        user = f"demo-user-{i}"
        timed(
            producer.enqueue_send_email,
            1,
            identifiers={"id": user},
            to=f"{user}@example.com",
            message_data={"order": i},
        )
    audience = [f"demo-user-{i}" for i in range(50)]
    timed(producer.enqueue_broadcast, 7, data={"headline": "cio_worker demo"}, ids=audience)
    ordered = sorted(latencies)
    console.print(
        f"enqueued {len(ordered)} jobs: p50 {statistics.median(ordered) * 1000:.3f} ms, "
        f"p99 {ordered[int(len(ordered) * 0.99) - 1] * 1000:.3f} ms per enqueue"
    )
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    with Live(progress.table(), console=console, refresh_per_second=4) as display:
        while not progress.done() and time.monotonic() < deadline:
            supervisor.check()
            time.sleep(0.25)
            progress.refresh()
            display.update(progress.table())
    console.print()
    console.print(progress.summary())
    if settings.sandbox_url:
        _print_sandbox_stats(console, settings.sandbox_url)
    ok = progress.done()
    total = sum(expected.values())
    ended = sum(p.ended for p in progress.families.values())
    console.print(
        f"{'all' if ok else 'NOT all'} {total} jobs ended ({ended} delivered or dead-lettered)"
    )
    if not exit_when_done and ok:
        console.print("Everything stays up for you to look around: Ctrl-C stops every process.")
        while True:
            supervisor.check()
            time.sleep(1)
    return 0 if ok else 1


def _print_sandbox_stats(console: Console, base: str) -> None:
    stats = httpx.get(f"{base}/_sandbox/stats", timeout=5).json()
    families = stats.get("families", {})
    parts = [
        f"{name}: {row.get('accepted', 0)} requests accepted, {row.get('rate_limited', 0)} x 429, "
        f"max {row.get('max_in_window', 0)} in any {row.get('window_s', 1):g}s"
        for name, row in families.items()
        if row.get("accepted") or row.get("rate_limited")
    ]
    console.print("sandbox saw: " + "; ".join(parts))
    console.print(
        "(track jobs travel in batch requests of up to ~450 KB: many events per request; "
        "CIO_WORKER_BATCH=off sends one request each)"
    )
