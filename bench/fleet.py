"""Fleet scale: what idle workers cost Redis, what a queued job costs Redis memory, events/s.

Run: .venv/bin/python bench/fleet.py [--workers 1,4,8] [--idle-s 10] [--load-events 20000]
                                     [--memory-jobs 20000] [--settle-s 3]

Starts its own redis-server (AOF on) and the strict sandbox, and prints, beside the targets of
issue 18:
- memory per queued job: with no worker running, bulk-enqueues `--memory-jobs` Track events,
  then as many transactional emails, and divides each `INFO memory` used_memory delta by the count;
- for each N in `--workers`, on a fresh Redis: N real `celery -A cio_worker worker` processes,
  idle for `--idle-s` seconds once ready: Redis commands/s (INFO commandstats deltas, the
  bench's own INFO subtracted) in all, per worker and by command, Redis CPU (used_cpu_sys +
  used_cpu_user over the wall time) and the workers' CPU; the projection to 100 idle workers
  (linear: 100 x the per-worker rate); then under load: `--load-events` Track events bulk-enqueued
  while the workers run, the time until the last is delivered, events/s, Redis commands/s and CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from cio_worker import Producer
from cio_worker.config import Settings
from cio_worker.dev import RedisServer, SandboxProcess, stop_processes
from cio_worker.queue import stats

#: Issue 18's targets.
TARGET_IDLE_CMDS_PER_WORKER = 10
TARGET_FLEET_CMDS = 1_000
TARGET_TRACK_BYTES = 300
TARGET_EMAIL_BYTES = 600
FLEET = 100


@dataclass(frozen=True)
class Window:
    """What Redis and the workers did between two snapshots, the bench's own commands taken out."""

    seconds: float
    calls: Counter[str]
    redis_cpu_s: float
    worker_cpu_s: list[float]

    @property
    def commands_per_s(self) -> float:
        return sum(self.calls.values()) / self.seconds

    def top(self, count: int | None = 6) -> str:
        """The busiest commands, `count` of them or all; rates under 10/s with one decimal."""
        return ", ".join(
            f"{name.upper()} {_rate(calls / self.seconds)}/s"
            for name, calls in self.calls.most_common(count)
            if calls > 0
        )

    @property
    def redis_cpu_pct(self) -> float:
        return 100 * self.redis_cpu_s / self.seconds


def _rate(per_s: float) -> str:
    return f"{per_s:,.1f}" if per_s < 10 else f"{per_s:,.0f}"


class Probe:
    """Snapshots of one Redis (INFO all) and of the workers' CPU time; counts its own commands."""

    def __init__(self, client: redis.Redis, pids: list[int]) -> None:
        self.client = client
        self.pids = pids
        self.own: Counter[str] = Counter()
        client.ping()  # connect now, not inside a window
        self.own["ping"] += 1

    def snapshot(self) -> tuple[float, dict[str, Any], list[float]]:
        info: dict[str, Any] = self.client.info("all")
        self.own["info"] += 1  # counted by Redis once the call returns: in the next snapshot
        return time.monotonic(), info, [cpu_seconds(pid) for pid in self.pids]

    def call(self, name: str, command: Callable[[], Any]) -> Any:
        """Run one of the bench's own commands inside a window, counted to be subtracted."""
        self.own[name] += 1
        return command()

    def window(self, measure: Callable[[], None]) -> Window:
        own_before = Counter(self.own)
        t0, before, cpu0 = self.snapshot()
        measure()
        t1, after, cpu1 = self.snapshot()
        calls = _calls(after) - _calls(before)
        calls.subtract(self.own - own_before - Counter(info=1))  # the closing INFO is not in
        return Window(
            seconds=t1 - t0,
            calls=+calls,
            redis_cpu_s=_redis_cpu(after) - _redis_cpu(before),
            worker_cpu_s=[b - a for a, b in zip(cpu0, cpu1, strict=True)],
        )


def _calls(info: dict[str, Any]) -> Counter[str]:
    return Counter(
        {key.removeprefix("cmdstat_"): int(value["calls"])
         for key, value in info.items() if key.startswith("cmdstat_")}
    )  # fmt: skip


def _redis_cpu(info: dict[str, Any]) -> float:
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (psutil), else /proc/<pid>/stat."""
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    try:
        process = psutil.Process(pid)
        return sum(sum(p.cpu_times()[:2]) for p in [process, *process.children(recursive=True)])
    except psutil.Error:
        return 0.0


def memory_per_job(root: Path, jobs: int) -> dict[str, float]:
    """Bytes of `used_memory` per queued job of each kind, no worker consuming."""
    kinds: dict[str, Callable[[Producer, int], object]] = {
        "Track event": lambda bulk, i: bulk.enqueue_track(
            f"user-{i % 10_000}", "Viewed Page", {"page": "/pricing", "n": i}
        ),
        "transactional email": lambda bulk, i: bulk.enqueue_send_email(
            1, identifiers={"id": f"user-{i}"}, to=f"user-{i}@example.com"
        ),
    }
    with RedisServer(root / "memory") as server, redis.Redis.from_url(server.url) as probe:
        settings = Settings(redis_url=server.url)
        _enqueue(settings, 200, *kinds.values())  # scripts, stats hashes, shards: not per job
        figures = {}
        for name, enqueue in kinds.items():
            before = _used_memory(probe)
            _enqueue(settings, jobs, enqueue)
            figures[name] = (_used_memory(probe) - before) / jobs
    return figures


def _enqueue(settings: Settings, jobs: int, *calls: Callable[[Producer, int], object]) -> None:
    """Bulk-enqueue on a connection of its own, closed after: its buffers are not the jobs'."""
    with redis.Redis.from_url(settings.redis_url) as writer:
        with Producer(settings, redis_client=writer).pipeline() as bulk:
            for call in calls:
                for i in range(jobs):
                    call(bulk, i)


def _used_memory(client: redis.Redis) -> int:
    time.sleep(0.2)  # the writer's disconnect reaches the server
    return int(client.info("memory")["used_memory"])


@dataclass(frozen=True)
class FleetRun:
    workers: int
    idle: Window
    load_events: int
    delivered: int
    enqueue_s: float
    load_s: float
    load: Window
    rate_limited: int

    @property
    def per_worker(self) -> float:
        return self.idle.commands_per_s / self.workers

    def report(self) -> str:
        cpu = self.idle.worker_cpu_s
        worker_pct = [100 * s / self.idle.seconds for s in cpu]
        load = self.load
        return (
            f"{self.workers} worker(s), idle {self.idle.seconds:.1f}s:\n"
            f"  Redis commands/s: {self.idle.commands_per_s:,.0f} in all, "
            f"{self.per_worker:,.0f} per idle worker (target <= {TARGET_IDLE_CMDS_PER_WORKER})\n"
            f"  by command: {self.idle.top(None) or '-'}\n"
            f"  Redis CPU {self.idle.redis_cpu_pct:.1f}% of a core; workers' CPU "
            f"{sum(worker_pct) / len(worker_pct):.1f}% of a core each "
            f"({', '.join(f'{p:.1f}' for p in worker_pct)})\n"
            f"  projection to {FLEET} idle workers: {FLEET * self.per_worker:,.0f} commands/s "
            f"(target < {TARGET_FLEET_CMDS:,})\n"
            f"  under load: {self.delivered} of {self.load_events} Track events delivered in "
            f"{self.load_s:.2f}s (first enqueue to last delivery): "
            f"{self.delivered / self.load_s:,.0f} events/s, 429s {self.rate_limited}; "
            f"bulk enqueue {self.load_events / self.enqueue_s:,.0f} jobs/s\n"
            f"  under load: Redis commands/s {load.commands_per_s:,.0f} (the bulk enqueue "
            f"included, {sum(load.calls.values()) / max(self.delivered, 1):.1f} per event), "
            f"Redis CPU {load.redis_cpu_pct:.0f}% of a core\n"
            f"  under load, top: {load.top()}"
        )


def run_fleet(
    root: Path, workers: int, *, idle_s: float, settle_s: float, load_events: int
) -> FleetRun:
    root.mkdir(parents=True)
    with RedisServer(root / "redis") as server, SandboxProcess() as sandbox:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CIO_", "CUSTOMERIO_"))},
            "CIO_WORKER_REDIS_URL": server.url,
            "CIO_WORKER_SANDBOX_URL": sandbox.url,
            "CIO_WORKER_LOG_LEVEL": "WARNING",
        }
        settings = Settings.from_env(env)
        logs = [root / f"worker{i}.log" for i in range(workers)]
        procs = [_start_worker(env, i, log) for i, log in enumerate(logs)]
        client = redis.Redis.from_url(server.url)
        try:
            _wait_ready(logs, procs, timeout_s=60 + 15 * workers)
            time.sleep(settle_s)  # start-up work (reconcile, first sweeps) is not idling
            probe = Probe(client, [proc.pid for proc in procs])
            idle = probe.window(lambda: time.sleep(idle_s))
            timing: list[tuple[float, float]] = []
            load = probe.window(lambda: timing.append(_deliver(settings, probe, load_events)))
            delivered = int(stats(client).get("track:delivered", 0))
            track = httpx.get(f"{sandbox.url}/_sandbox/stats", timeout=10).json()["families"]
        finally:
            stop_processes(procs)
            client.close()
    return FleetRun(
        workers=workers,
        idle=idle,
        load_events=load_events,
        delivered=delivered,
        enqueue_s=timing[0][0],
        load_s=timing[0][1],
        load=load,
        rate_limited=int(track["track"]["rate_limited"]),
    )


def _deliver(
    settings: Settings, probe: Probe, events: int, timeout_s: float = 600
) -> tuple[float, float]:
    """Bulk-enqueue Track events; seconds the enqueue took, and from the first enqueue until
    all are delivered (the ledger's `track:delivered` counter)."""
    started = time.monotonic()
    with Producer(settings, redis_client=probe.client).pipeline() as bulk:
        for i in range(events):
            bulk.enqueue_track(f"user-{i % 10_000}", "Viewed Page", {"page": "/pricing", "n": i})
    enqueued = time.monotonic() - started
    while probe.call("hgetall", lambda: stats(probe.client)).get("track:delivered", 0) < events:
        if time.monotonic() - started > timeout_s:
            raise SystemExit(f"not delivered in {timeout_s:.0f}s: {stats(probe.client)}")
        time.sleep(0.02)
    return enqueued, time.monotonic() - started


def _start_worker(env: dict[str, str], index: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "celery", "-A", "cio_worker", "worker", "--loglevel",
               "INFO", "-n", f"fleet{index}@%h", "--without-mingle",
               "--without-gossip"]  # fmt: skip
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_ready(logs: list[Path], procs: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(proc.poll() is not None for proc in procs):
            raise SystemExit(f"a worker exited; see {logs[0].parent}")
        if all("ready." in log.read_text(errors="replace") for log in logs):
            return
        time.sleep(0.1)
    raise SystemExit(f"workers not ready in {timeout_s:.0f}s")


def _verdict(measured: float, target: float, *, strict: bool = False) -> str:
    met = measured < target if strict else measured <= target
    return "met" if met else "NOT met"


def _worker_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        message = f"{text!r}: a comma-separated list of whole numbers"
        raise argparse.ArgumentTypeError(message) from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: each count must be at least 1")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=_worker_counts, default=[1, 4, 8], help="e.g. 1,4,8")
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle window, seconds")
    parser.add_argument("--settle-s", type=float, default=3.0, help="wait after ready, seconds")
    parser.add_argument("--load-events", type=int, default=20_000)
    parser.add_argument("--memory-jobs", type=int, default=20_000, help="of each kind")
    args = parser.parse_args()
    if args.idle_s <= 0 or args.settle_s < 0 or args.load_events < 1 or args.memory_jobs < 1:
        parser.error("--idle-s must be > 0, --settle-s >= 0, --load-events and --memory-jobs >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        memory = memory_per_job(Path(tmp), args.memory_jobs)
        print(f"memory per queued job ({args.memory_jobs:,} of each kind, no worker running, "
              "INFO memory used_memory delta):")  # fmt: skip
        targets = {"Track event": TARGET_TRACK_BYTES, "transactional email": TARGET_EMAIL_BYTES}
        for name, size in memory.items():
            print(f"  {name}: {size:,.0f} B (target <= {targets[name]})")
        runs = []
        for workers in args.workers:
            run = run_fleet(
                Path(tmp) / f"fleet{workers}",
                workers,
                idle_s=args.idle_s,
                settle_s=args.settle_s,
                load_events=args.load_events,
            )
            runs.append(run)
            print(run.report(), flush=True)
    biggest = max(runs, key=lambda run: run.workers)
    fleet = FLEET * biggest.per_worker
    print("issue 18's targets:")
    for line in (
        f"  <= {TARGET_IDLE_CMDS_PER_WORKER} Redis commands/s per idle worker: "
        + ", ".join(f"{run.per_worker:,.0f} (N={run.workers})" for run in runs)
        + f" -- {_verdict(max(run.per_worker for run in runs), TARGET_IDLE_CMDS_PER_WORKER)}",
        f"  < {TARGET_FLEET_CMDS:,} commands/s for {FLEET} idle workers: {fleet:,.0f} "
        f"(from N={biggest.workers}) -- {_verdict(fleet, TARGET_FLEET_CMDS, strict=True)}",
        f"  <= {TARGET_TRACK_BYTES} B per queued Track event: {memory['Track event']:,.0f} -- "
        f"{_verdict(memory['Track event'], TARGET_TRACK_BYTES)}",
        f"  <= {TARGET_EMAIL_BYTES} B per queued email: {memory['transactional email']:,.0f} -- "
        f"{_verdict(memory['transactional email'], TARGET_EMAIL_BYTES)}",
    ):
        print(line)


if __name__ == "__main__":
    main()
