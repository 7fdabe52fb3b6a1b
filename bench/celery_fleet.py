"""Real Celery workers against the sandbox: the limiter measured end to end.

`run_fleet` queues transactional sends and broadcast triggers all at once, starts N real worker
processes (`celery -A cio_worker worker`, threads pool) on a private redis-server and the strict
sandbox, waits until every job is delivered, and reads the figures from the sandbox's own record
of arrivals. bench/limiter.py --celery prints them; tests/test_limiter_fleet.py asserts on them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from cio_worker import Producer
from cio_worker.config import Settings
from cio_worker.dev import RedisServer, SandboxProcess, stop_processes
from cio_worker.queue import stats


@dataclass(frozen=True)
class FleetFigures:
    transactional: int
    broadcasts: int
    delivered: int
    seconds: float
    achieved_rps: float
    limit_rps: float
    max_in_window: int
    rate_limited: int
    rate_limited_by_family: dict[str, int]
    broadcast_gaps_s: list[float]
    per_worker: list[int]
    per_second: list[int]

    @property
    def utilisation(self) -> float:
        return self.achieved_rps / self.limit_rps

    def report(self) -> str:
        gaps = ", ".join(f"{gap:.2f}" for gap in self.broadcast_gaps_s) or "-"
        fairness = min(self.per_worker) / max(self.per_worker) if max(self.per_worker) else 0.0
        return (
            f"  delivered {self.delivered} of {self.transactional + self.broadcasts} "
            f"in {self.seconds:.1f}s\n"
            f"  transactional achieved {self.achieved_rps:.1f} req/s of {self.limit_rps:g}  "
            f"utilisation {self.utilisation:.3f}\n"
            f"  max transactional arrivals in any 1s window: {self.max_in_window}\n"
            f"  429s: {self.rate_limited} {self.rate_limited_by_family or ''}\n"
            f"  seconds between broadcast triggers: {gaps}\n"
            f"  fairness (min/max per worker): {fairness:.3f}  per worker: {self.per_worker}\n"
            f"  transactional arrivals per second: {self.per_second}"
        )


def run_fleet(
    root: Path,
    *,
    transactional: int = 1500,
    broadcasts: int = 3,
    workers: int = 2,
    concurrency: int = 8,
    margin: str = "0.97",
    timeout_s: float = 120.0,
) -> FleetFigures:
    with RedisServer(root / "redis") as server, SandboxProcess() as sandbox:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CIO_", "CUSTOMERIO_"))},
            "CIO_WORKER_REDIS_URL": server.url,
            "CIO_WORKER_SANDBOX_URL": sandbox.url,
            "CIO_WORKER_RATE_MARGIN": margin,
            "CIO_WORKER_LOG_FORMAT": "json",
        }
        settings = Settings.from_env(env)
        producer = Producer(settings)
        for i in range(transactional):
            producer.enqueue_send_email(7, identifiers={"id": f"u{i}"}, to=f"person{i}@example.com")
        for i in range(broadcasts):
            producer.enqueue_broadcast(9, data={"n": i})
        logs = [root / f"worker{i}.log" for i in range(workers)]
        procs = [_start_worker(env, i, concurrency, log) for i, log in enumerate(logs)]
        started = time.monotonic()
        client = redis.Redis.from_url(server.url)
        try:
            total = transactional + broadcasts
            while time.monotonic() - started < timeout_s:
                counters = stats(client)
                done = counters.get("transactional:delivered", 0) + counters.get(
                    "broadcast:delivered", 0
                )
                if done >= total:
                    break
                time.sleep(0.2)
            seconds = time.monotonic() - started
            records = httpx.get(f"{sandbox.url}/_sandbox/requests", timeout=30).json()
            sandbox_stats = httpx.get(f"{sandbox.url}/_sandbox/stats", timeout=5).json()
        finally:
            stop_processes(procs)
            client.close()
    return _figures(records, sandbox_stats, settings, logs, transactional, broadcasts, seconds)


def _start_worker(
    env: dict[str, str], index: int, concurrency: int, log: Path
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "celery", "-A", "cio_worker", "worker", "--loglevel",
               "INFO", "-n", f"fleet{index}@%h", "--concurrency", str(concurrency),
               "--without-mingle", "--without-gossip"]  # fmt: skip
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def _figures(
    records: list[dict[str, Any]],
    sandbox_stats: dict[str, Any],
    settings: Settings,
    logs: list[Path],
    transactional: int,
    broadcasts: int,
    seconds: float,
) -> FleetFigures:
    sends = sorted(r["t"] for r in records if r["family"] == "transactional" and r["status"] == 200)
    triggers = sorted(r["t"] for r in records if r["family"] == "broadcast" and r["status"] == 200)
    achieved = (len(sends) - 1) / (sends[-1] - sends[0]) if len(sends) > 1 else 0.0
    families = sandbox_stats["families"]
    return FleetFigures(
        transactional=transactional,
        broadcasts=broadcasts,
        delivered=len(sends) + len(triggers),
        seconds=seconds,
        achieved_rps=achieved,
        limit_rps=settings.transactional_rps,
        max_in_window=int(families["transactional"]["max_in_window"]),
        rate_limited=sum(int(f["rate_limited"]) for f in families.values()),
        rate_limited_by_family={
            name: int(f["rate_limited"]) for name, f in families.items() if f["rate_limited"]
        },
        broadcast_gaps_s=[b - a for a, b in zip(triggers, triggers[1:], strict=False)],
        per_worker=[_delivered_in(log) for log in logs],
        per_second=[
            sum(1 for t in sends if sends[0] + i <= t < sends[0] + i + 1)
            for i in range(int(sends[-1] - sends[0]) + 1 if sends else 0)
        ],
    )


def _delivered_in(log: Path) -> int:
    count = 0
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and json.loads(line).get("event") == "delivered":
            count += 1
    return count
