"""Enqueue latency: p50/p99/max of single `enqueue_*` calls to a local redis-server.

Run: .venv/bin/python bench/enqueue.py [--jobs 20000]
Starts its own redis-server (AOF on, as in production) in a temporary directory.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from cio_worker.config import Settings
from cio_worker.embedded import RedisServer
from cio_worker.producer import Producer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(tmp) as server:
        producer = Producer(Settings(redis_url=server.url))
        for name, call in {
            "enqueue_track": lambda i: producer.enqueue_track(
                f"user-{i}", "Signed Up", {"plan": "pro", "n": i}
            ),
            "enqueue_identify": lambda i: producer.enqueue_identify(
                f"user-{i}", {"email": f"user-{i}@example.com", "plan": "pro"}
            ),
            "enqueue_send_email": lambda i: producer.enqueue_send_email(
                1, identifiers={"id": f"user-{i}"}, to=f"user-{i}@example.com"
            ),
        }.items():
            for i in range(500):  # warm up the connection and code paths
                call(i)
            samples = []
            started = time.perf_counter()
            for i in range(args.jobs):
                t0 = time.perf_counter()
                call(i)
                samples.append(time.perf_counter() - t0)
            total = time.perf_counter() - started
            samples.sort()
            print(
                f"{name:20s} n={args.jobs:6d}  p50={statistics.median(samples) * 1e3:.3f} ms  "
                f"p99={samples[int(len(samples) * 0.99) - 1] * 1e3:.3f} ms  "
                f"max={samples[-1] * 1e3:.3f} ms  rate={args.jobs / total:,.0f} jobs/s"
            )


if __name__ == "__main__":
    main()
