"""Shared-limiter benchmark: N processes x M threads push one bucket as hard as they can.

Run: .venv/bin/python bench/limiter.py [--processes 2 --threads 4 --seconds 10 --bucket track]
Starts its own redis-server and sandbox (strict rolling-window limits), then prints the achieved
rate, utilisation (achieved / limit), the most arrivals the sandbox saw in any window, 429s, and
fairness between processes (fewest / most requests sent by one process).

With --celery it runs real Celery workers instead (bench/celery_fleet.py): 1,500 transactional
sends and 3 broadcast triggers queued at once, drained by 2 worker processes x 8 threads:
    .venv/bin/python bench/limiter.py --celery [--workers 2 --concurrency 8 --sends 1500]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import threading
import time
from pathlib import Path

import httpx

from cio_worker.config import Settings
from cio_worker.connection import get_redis
from cio_worker.customerio import CustomerIoClient, HttpOperation
from cio_worker.dev import RedisServer, SandboxProcess
from cio_worker.errors import RateLimitedError
from cio_worker.limiter import Limiter, bucket_rates

OPERATIONS = {
    "track": HttpOperation("track", "track", "PUT", "/api/v1/customers/bench", {"plan": "pro"}),
    "transactional": HttpOperation(
        "app", "transactional", "POST", "/v1/send/email",
        {"transactional_message_id": 1, "identifiers": {"id": "b"}, "to": "b@example.com"},
    ),
}  # fmt: skip


def hammer(
    limiter: Limiter,
    client: CustomerIoClient,
    bucket: str,
    operation: HttpOperation,
    *,
    threads: int,
    seconds: float,
) -> dict[str, int]:
    """`threads` threads take a slot from `bucket` and send `operation` as fast as they are
    allowed for `seconds`; returns how many were sent and how many met a 429."""
    deadline = time.monotonic() + seconds
    counts = {"sent": 0, "429": 0}
    lock = threading.Lock()

    def loop() -> None:
        while time.monotonic() < deadline:
            try:
                limiter.acquire(bucket)
                client.send(operation)
                outcome = "sent"
            except RateLimitedError as exc:
                if exc.status_code != 429:
                    time.sleep(min(exc.retry_after_seconds or 0.1, 0.5))
                    continue
                outcome = "429"
            with lock:
                counts[outcome] += 1

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return counts


def _run_process(
    env: dict[str, str], bucket: str, threads: int, seconds: float, out: object
) -> None:
    settings = Settings.from_env(env)
    limiter = Limiter(settings, get_redis(settings))
    client = CustomerIoClient(settings)
    counts = hammer(limiter, client, bucket, OPERATIONS[bucket], threads=threads, seconds=seconds)
    out.put(counts)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--bucket", choices=sorted(OPERATIONS), default="track")
    parser.add_argument("--margin", default="0.97")
    parser.add_argument("--celery", action="store_true", help="real Celery workers, end to end")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sends", type=int, default=1500)
    parser.add_argument("--broadcasts", type=int, default=3)
    args = parser.parse_args()
    if args.celery:
        from celery_fleet import run_fleet

        with tempfile.TemporaryDirectory() as tmp:
            figures = run_fleet(
                Path(tmp),
                transactional=args.sends,
                broadcasts=args.broadcasts,
                workers=args.workers,
                concurrency=args.concurrency,
                margin=args.margin,
            )
        print(
            f"celery workers={args.workers} concurrency={args.concurrency} "
            f"sends={args.sends} broadcasts={args.broadcasts} margin={args.margin}"
        )
        print(figures.report())
        return
    with tempfile.TemporaryDirectory() as tmp, RedisServer(tmp) as server:
        sandbox = SandboxProcess().start()
        base = sandbox.url
        try:
            env = {"CIO_WORKER_REDIS_URL": server.url, "CIO_WORKER_SANDBOX_URL": base,
                   "CIO_WORKER_RATE_MARGIN": args.margin}  # fmt: skip
            ctx = multiprocessing.get_context("spawn")
            queue = ctx.Queue()
            procs = [ctx.Process(target=_run_process,
                                 args=(env, args.bucket, args.threads, args.seconds, queue))
                     for _ in range(args.processes)]  # fmt: skip
            for proc in procs:
                proc.start()
            results = [queue.get(timeout=args.seconds + 60) for _ in procs]
            for proc in procs:
                proc.join()
            stats = httpx.get(f"{base}/_sandbox/stats", timeout=5).json()
            records = httpx.get(f"{base}/_sandbox/requests", timeout=30).json()
        finally:
            sandbox.stop()
    limit = bucket_rates(Settings())[args.bucket]
    family = stats["families"][args.bucket]
    # Rate from the server's own arrival times: processes start a little staggered.
    arrivals = sorted(r["t"] for r in records if r["status"] == 200)
    achieved = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    sent = [r["sent"] for r in results]
    print(
        f"bucket={args.bucket} processes={args.processes} threads={args.threads} "
        f"seconds={args.seconds:g} margin={args.margin}\n"
        f"  achieved {achieved:.1f} req/s of {limit:g}  utilisation {achieved / limit:.3f}\n"
        f"  max arrivals in any {family['window_s']:g}s window: {family['max_in_window']}\n"
        f"  429s: {family['rate_limited']}\n"
        f"  fairness (min/max per process): {min(sent) / max(sent):.3f}  per process: {sent}"
    )


if __name__ == "__main__":
    main()
