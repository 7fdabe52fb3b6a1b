"""A Customer.io outage with the shipped default settings: is anything lost, how hard does the
fleet hit the dead API, and how soon does the backlog drain after recovery?

Run: .venv/bin/python bench/outage.py [--outage-s 360 --rate 8 --warmup-s 10 --after-s 20]

Starts its own redis-server (AOF on), the strict sandbox and two real `celery -A cio_worker
worker` processes, all with the defaults (only the Redis and sandbox URLs are set). A producer
enqueues a steady mix of track events, identifies and transactional sends at `--rate` jobs/s.
After `--warmup-s` every API answers 503 for `--outage-s`, then recovers; the producer goes on
for `--after-s` more, then the bench waits until every job has ended (delivered or
dead-lettered) and prints: jobs enqueued, delivered, dead-lettered, the requests the fleet sent
while the API was down (total, and the most in any one second, per family), and the seconds
from recovery to the last delivery. Exits 1 if any job was dead-lettered or never ended.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import redis

from cio_worker import Producer, keys
from cio_worker.config import Settings
from cio_worker.dev import RedisServer, SandboxProcess, stop_processes
from cio_worker.queue import DeadLetterStore, stats
from cio_worker.sandbox.recorder import max_in_window

#: The producer's cycle: 4 track events, 2 identifies, 2 transactional sends in every 8 jobs.
MIX = ("track", "identify", "track", "send", "track", "identify", "track", "send")
WORKERS = 2
#: Seconds at the start of an outage left out of the "steady" request rate.
OPENING_S = 10.0


@dataclass(frozen=True)
class Figures:
    outage_s: float
    enqueued: Counter[str]
    delivered: int
    dead: int
    unfinished: int
    down_requests: dict[str, int]
    down_max_per_s: dict[str, int]
    #: The same after the first OPENING_S of the outage: once the circuits had their say.
    steady_max_per_s: dict[str, int]
    recovery_to_last_delivery_s: float
    #: Seconds from recovery until every job enqueued before it had ended (polled every 0.5 s).
    backlog_drain_s: float | None
    backlog: int
    circuit_events: Counter[str]

    @property
    def lost(self) -> int:
        return sum(self.enqueued.values()) - self.delivered - self.dead

    def report(self) -> str:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.enqueued.items()))
        families = sorted(self.down_requests)
        down = (
            ", ".join(
                f"{family} {self.down_requests[family]} (max {self.down_max_per_s[family]}/s, "
                f"{self.steady_max_per_s[family]}/s after the first {OPENING_S:g}s)"
                for family in families
            )
            or "none"
        )
        events = ", ".join(f"{name} {n}" for name, n in sorted(self.circuit_events.items()))
        return (
            f"  outage: every API answered 503 for {self.outage_s:.0f}s\n"
            f"  jobs enqueued: {sum(self.enqueued.values())} ({kinds})\n"
            f"  delivered: {self.delivered}   dead-lettered: {self.dead}   "
            f"never ended: {self.unfinished}   lost: {self.lost}\n"
            f"  requests sent while down: {sum(self.down_requests.values())}: {down}\n"
            f"  recovery to the backlog's last delivery ({self.backlog} jobs queued before it): "
            f"{_seconds(self.backlog_drain_s)}; to the last delivery of all: "
            f"{self.recovery_to_last_delivery_s:.1f}s\n"
            f"  worker log: {events or 'no circuit events'}"
        )


def run(
    root: Path, *, outage_s: float, rate: float, warmup_s: float, after_s: float, drain_s: float
) -> Figures:
    with RedisServer(root / "redis") as server, SandboxProcess() as sandbox:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CIO_", "CUSTOMERIO_"))},
            "CIO_WORKER_REDIS_URL": server.url,
            "CIO_WORKER_SANDBOX_URL": sandbox.url,
            "CIO_WORKER_LOG_FORMAT": "json",
        }
        settings = Settings.from_env(env)
        producer = Producer(settings)
        client = redis.Redis.from_url(server.url)
        logs = [root / f"worker{i}.log" for i in range(WORKERS)]
        procs = [_start_worker(env, i, log) for i, log in enumerate(logs)]
        enqueued: Counter[str] = Counter()
        ids: list[str] = []
        try:
            _wait_ready(logs)
            started = time.monotonic()
            down_at = started + warmup_s
            up_at = down_at + outage_s
            stop_at = up_at + after_s
            down_wall = up_wall = up_monotonic = 0.0
            backlog: list[str] = []
            drained_after: float | None = None
            next_check = 0.0
            n = 0
            next_report = started + 30
            while (now := time.monotonic()) < stop_at:
                if down_wall == 0.0 and now >= down_at:
                    _fault(sandbox.url, {"status": 503})
                    down_wall = time.time()
                    _say(f"outage on: every API answers 503 for {outage_s:g}s")
                if down_wall and not up_wall and now >= up_at:
                    _fault(sandbox.url, {})
                    up_wall, up_monotonic = time.time(), time.monotonic()
                    backlog = list(ids)
                    _say("outage off")
                if backlog and drained_after is None and now >= next_check:
                    next_check = now + 0.5
                    if not _unfinished(client, backlog):
                        drained_after = time.monotonic() - up_monotonic
                kind = MIX[n % len(MIX)]
                ids.append(_enqueue(producer, kind, n))
                enqueued[kind] += 1
                n += 1
                if now >= next_report:
                    next_report += 30
                    _say(f"{now - started:.0f}s: {n} enqueued, {_progress(client)}")
                time.sleep(max(0.0, started + n / rate - time.monotonic()))
            _say(f"producer stopped after {n} jobs; waiting for every job to end")
            deadline = time.monotonic() + drain_s
            unfinished = _unfinished(client, ids)
            while unfinished and time.monotonic() < deadline:
                if drained_after is None and not _unfinished(client, backlog):
                    drained_after = time.monotonic() - up_monotonic
                time.sleep(0.5)
                unfinished = _unfinished(client, ids)
            if drained_after is None and backlog and not _unfinished(client, backlog):
                drained_after = time.monotonic() - up_monotonic
            records = httpx.get(f"{sandbox.url}/_sandbox/requests", timeout=60).json()
            counters = stats(client)
            dead = DeadLetterStore(client).count()
        finally:
            stop_processes(procs)
            client.close()
    figures = _figures(records, counters, dead, enqueued, unfinished, logs, down_wall, up_wall)
    return replace(figures, backlog_drain_s=drained_after, backlog=len(backlog))


def _enqueue(producer: Producer, kind: str, n: int) -> str:
    person = f"user-{n % 500}"
    if kind == "track":
        return producer.enqueue_track(person, "Viewed Page", {"page": "/pricing", "n": n})
    if kind == "identify":
        return producer.enqueue_identify(person, {"plan": "pro", "n": n})
    return producer.enqueue_send_email(
        7, identifiers={"id": person}, to=f"{person}@example.com", message_data={"n": n}
    )


def _fault(url: str, spec: dict[str, Any]) -> None:
    httpx.post(f"{url}/_sandbox/faults", json=spec, timeout=5).raise_for_status()


def _unfinished(client: redis.Redis, ids: list[str]) -> list[str]:
    """Jobs still stored: a ledger record, or a batched job in a shard's jobs hash."""
    batched: set[str] = set()
    for name in client.scan_iter(match="cio:bq:*:jobs", count=1000):
        batched.update(k.decode() if isinstance(k, bytes) else k for k in client.hkeys(name))
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.exists(keys.job(job_id))
    return [
        job_id
        for job_id, exists in zip(ids, pipe.execute(), strict=True)
        if exists or job_id in batched
    ]


def _progress(client: redis.Redis) -> str:
    counters = stats(client)
    delivered = sum(n for name, n in counters.items() if name.endswith(":delivered"))
    dead = sum(n for name, n in counters.items() if name.endswith(":dead"))
    parked = sum(int(client.zcard(name)) for name in client.scan_iter(match="cio:parked:*"))
    return f"{delivered} delivered, {dead} dead-lettered, {parked} parked"


def _figures(
    records: list[dict[str, Any]],
    counters: dict[str, int],
    dead: int,
    enqueued: Counter[str],
    unfinished: list[str],
    logs: list[Path],
    down_wall: float,
    up_wall: float,
) -> Figures:
    down_times: dict[str, list[float]] = defaultdict(list)
    for record in records:
        if record["fault"] is not None:
            down_times[str(record["family"])].append(float(record["t"]))
    accepted = [float(r["t"]) for r in records if r["accepted"]]
    events: Counter[str] = Counter()
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            for name in ("circuit_opened", "circuit_closed", "circuit_probe_failed", "parked"):
                if f'"event": "{name}"' in line:
                    events[name] += 1
    return Figures(
        outage_s=up_wall - down_wall,
        enqueued=enqueued,
        delivered=sum(n for name, n in counters.items() if name.endswith(":delivered")),
        dead=dead,
        unfinished=len(unfinished),
        down_requests={family: len(times) for family, times in down_times.items()},
        down_max_per_s={family: max_in_window(t, 1.0) for family, t in down_times.items()},
        steady_max_per_s={
            family: max_in_window([x for x in t if x >= down_wall + OPENING_S], 1.0)
            for family, t in down_times.items()
        },
        recovery_to_last_delivery_s=max(accepted, default=up_wall) - up_wall,
        circuit_events=events,
        backlog_drain_s=None,
        backlog=0,
    )


def _start_worker(env: dict[str, str], index: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "celery", "-A", "cio_worker", "worker", "--loglevel",
               "INFO", "-n", f"outage{index}@%h", "--without-mingle",
               "--without-gossip"]  # fmt: skip
    with open(log, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_ready(logs: list[Path], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(" ready." in log.read_text(errors="replace") for log in logs):
            return
        time.sleep(0.1)
    raise SystemExit("workers did not start")


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s"


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--outage-s", type=float, default=360, help="503 for this long")
    parser.add_argument("--rate", type=float, default=8, help="jobs enqueued per second")
    parser.add_argument("--warmup-s", type=float, default=10, help="normal service first")
    parser.add_argument("--after-s", type=float, default=20, help="producing after recovery")
    parser.add_argument(
        "--drain-s", type=float, default=900, help="longest wait for every job to end"
    )
    parser.add_argument("--keep", type=Path, help="keep worker logs and Redis data here")
    args = parser.parse_args()
    options = {
        "outage_s": args.outage_s,
        "rate": args.rate,
        "warmup_s": args.warmup_s,
        "after_s": args.after_s,
        "drain_s": args.drain_s,
    }
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        figures = run(args.keep, **options)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            figures = run(Path(tmp), **options)
    print(f"cio_worker outage bench: shipped defaults, {WORKERS} workers, {args.rate:g} jobs/s")
    print(figures.report())
    if figures.dead or figures.unfinished or figures.lost > 0:
        print("FAIL: jobs were lost or dead-lettered")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
