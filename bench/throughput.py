"""End-to-end throughput: events enqueued in bulk, drained by real workers into the sandbox.

Run: .venv/bin/python bench/throughput.py [--events 20000 --workers 2 --peer-events 2000]

Starts its own redis-server (AOF on) and the strict sandbox (Track: 100 requests per rolling
second, 429 past it), enqueues N track events with `producer.pipeline()`, starts real
`celery -A cio_worker worker` processes and waits until every event is delivered. Prints events/s
end to end (first enqueue to last acceptance), the enqueue rate, requests, the most requests in
any second, 429s, the workers' peak RSS, and the CPU each process spent (the producer while it
enqueued; redis-server, the sandbox and each worker from the first enqueue to the last
acceptance): on a machine whose speed drifts, where the time goes is steadier than the rate. Then
sends `--peer-events` events through the same
sandbox with the official `customerio` package (bench/peer.py) and prints the ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from cio_worker import Producer
from cio_worker.config import Settings
from cio_worker.dev import RedisServer, SandboxProcess, stop_processes
from cio_worker.queue import stats

sys.path.insert(0, str(Path(__file__).parent))
from fleet import cpu_seconds  # noqa: E402  (a script beside this one)


@dataclass(frozen=True)
class Figures:
    events: int
    delivered: int
    enqueue_s: float
    total_s: float
    requests: int
    max_per_second: int
    rate_limited: int
    rss_mb: list[float]
    #: CPU seconds by process (see the module).
    cpu_s: dict[str, float]

    @property
    def events_per_s(self) -> float:
        return self.delivered / self.total_s

    def report(self) -> str:
        return (
            f"  events {self.events}, delivered {self.delivered} in {self.total_s:.2f}s "
            f"(first enqueue to last acceptance)\n"
            f"  end to end: {self.events_per_s:,.0f} events/s   "
            f"enqueue (bulk): {self.events / self.enqueue_s:,.0f} jobs/s\n"
            f"  requests {self.requests}, max {self.max_per_second} in any 1s, "
            f"429s {self.rate_limited}\n"
            f"  worker peak RSS: {', '.join(f'{mb:.0f} MB' for mb in self.rss_mb)}\n"
            f"  CPU: {', '.join(f'{name} {s:.2f} s' for name, s in self.cpu_s.items())}; "
            f"{sum(self.cpu_s.values()) / self.events * 1e6:.0f} us per event in all"
        )


def run(root: Path, events: int, workers: int, people: int = 10_000) -> Figures:
    with RedisServer(root / "redis") as server, SandboxProcess() as sandbox:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CIO_", "CUSTOMERIO_"))},
            "CIO_WORKER_REDIS_URL": server.url,
            "CIO_WORKER_SANDBOX_URL": sandbox.url,
            "CIO_WORKER_LOG_LEVEL": "WARNING",
        }
        settings = Settings.from_env(env)
        client = redis.Redis.from_url(server.url)
        procs = [_start_worker(env, index, root) for index in range(workers)]
        try:
            _wait_ready(root, workers)
            pids = {"redis-server": server.pid, "sandbox": sandbox.pid}
            pids.update({f"worker {i}": proc.pid for i, proc in enumerate(procs)})
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            producer_cpu = time.process_time()
            started = time.time()
            with Producer(settings).pipeline() as bulk:
                for i in range(events):
                    bulk.enqueue_track(
                        f"user-{i % people}", "Viewed Page", {"page": "/pricing", "n": i}
                    )
            enqueue_s = time.time() - started
            cpu = {"producer": time.process_time() - producer_cpu}
            rss = [0.0] * workers
            deadline = time.monotonic() + 600
            while stats(client).get("track:delivered", 0) < events:
                rss = [max(old, _rss_mb(proc.pid)) for old, proc in zip(rss, procs, strict=True)]
                if time.monotonic() > deadline:
                    raise SystemExit(f"not delivered in time: {stats(client)}")
                time.sleep(0.02)
            cpu.update({name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()})
            records = httpx.get(f"{sandbox.url}/_sandbox/requests", timeout=60).json()
            family = httpx.get(f"{sandbox.url}/_sandbox/stats", timeout=5).json()["families"]
        finally:
            stop_processes(procs)
            client.close()
    accepted = [r for r in records if r["family"] == "track" and r["status"] == 200]
    last = max(r["t"] for r in accepted)
    delivered = sum(len(r["body"]["batch"]) for r in accepted if isinstance(r.get("body"), dict))
    return Figures(
        events=events,
        delivered=delivered,
        enqueue_s=enqueue_s,
        total_s=last - started,
        requests=len([r for r in records if r["family"] == "track"]),
        max_per_second=int(family["track"]["max_in_window"]),
        rate_limited=int(family["track"]["rate_limited"]),
        rss_mb=rss,
        cpu_s=cpu,
    )


def _start_worker(env: dict[str, str], index: int, root: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "celery", "-A", "cio_worker", "worker", "--loglevel",
               "INFO", "-n", f"bench{index}@%h", "--without-mingle",
               "--without-gossip"]  # fmt: skip
    with open(root / f"worker{index}.log", "wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_ready(root: Path, workers: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        logs = [(root / f"worker{i}.log").read_text(errors="replace") for i in range(workers)]
        if all("ready." in log for log in logs):
            return
        time.sleep(0.1)
    raise SystemExit("workers did not start")


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--peer-events", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ours = run(Path(tmp), args.events, args.workers)
    print(f"cio_worker: {args.events} track events, {args.workers} workers, batching on")
    print(ours.report())
    if args.peer_events:
        from peer import run_peer

        with SandboxProcess() as sandbox:
            peer = run_peer(sandbox.url, args.peer_events)
        print(f"official customerio package: {args.peer_events} events, one request each")
        print(peer.report())
        print(f"ratio (cio_worker / peer, events/s): {ours.events_per_s / peer.events_per_s:,.0f}x")


if __name__ == "__main__":
    main()
