"""Enqueue speed: single `enqueue_*` latency (sync and asyncio) and the bulk rate.

Run: .venv/bin/python bench/enqueue.py [--jobs 20000] [--bulk 200000] [--bulk-emails 50000]
Starts its own redis-server (AOF on, as in production) in a temporary directory and prints
p50/p99/max per kind for single calls, the same for `cio_worker.aio`, and jobs/s for
`with producer.pipeline()` blocks: Track events (batched delivery on) and transactional emails
(the ledger path: one job record and one Celery task message each).

`--replica`: the single-enqueue latency against a master with one attached replica, with and
without `WAIT 1` (CIO_WORKER_REPLICA_WAIT_MS 1000 vs 0): what replica confirmation costs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable

from cio_worker import Producer
from cio_worker.aio import AsyncProducer
from cio_worker.config import Settings
from cio_worker.dev import RedisServer, replica_synced


def _line(name: str, samples: list[float], total: float) -> str:
    samples.sort()
    return (
        f"{name:34s} n={len(samples):6d}  p50={statistics.median(samples) * 1e3:.3f} ms  "
        f"p99={samples[int(len(samples) * 0.99) - 1] * 1e3:.3f} ms  "
        f"max={samples[-1] * 1e3:.3f} ms  rate={len(samples) / total:,.0f} jobs/s"
    )


async def _async_samples(settings: Settings, jobs: int) -> tuple[list[float], float]:
    producer = AsyncProducer(settings)
    try:
        for i in range(500):
            await producer.enqueue_track(f"user-{i}", "Signed Up", {"plan": "pro"})
        samples = []
        started = time.perf_counter()
        for i in range(jobs):
            t0 = time.perf_counter()
            await producer.enqueue_track(f"user-{i}", "Signed Up", {"plan": "pro", "n": i})
            samples.append(time.perf_counter() - t0)
        return samples, time.perf_counter() - started
    finally:
        await producer.aclose()


def _bulk(producer: Producer, jobs: int) -> float:
    started = time.perf_counter()
    with producer.pipeline() as bulk:
        for i in range(jobs):
            bulk.enqueue_track(f"user-{i % 10_000}", "Viewed Page", {"page": "/pricing", "n": i})
    return jobs / (time.perf_counter() - started)


def _bulk_email(producer: Producer, jobs: int) -> float:
    started = time.perf_counter()
    with producer.pipeline() as bulk:
        for i in range(jobs):
            bulk.enqueue_send_email(1, identifiers={"id": f"user-{i}"}, to=f"user-{i}@example.com")
    return jobs / (time.perf_counter() - started)


def _best_of_3(
    name: str, bulk: Callable[[Producer, int], float], producer: Producer, jobs: int
) -> str:
    rates = [bulk(producer, jobs) for _ in range(3)]
    return (
        f"{name:34s} n={jobs:6d}  rate={max(rates):,.0f} jobs/s (best of 3; all: "
        f"{', '.join(f'{rate:,.0f}' for rate in rates)})"
    )


def _single_calls(producer: Producer) -> dict[str, Callable[[int], str]]:
    return {
        "enqueue_track": lambda i: producer.enqueue_track(
            f"user-{i}", "Signed Up", {"plan": "pro", "n": i}
        ),
        "enqueue_send_email": lambda i: producer.enqueue_send_email(
            1, identifiers={"id": f"user-{i}"}, to=f"user-{i}@example.com"
        ),
    }


def _time_calls(call: Callable[[int], str], jobs: int) -> tuple[list[float], float]:
    for i in range(500):  # warm up the connection and code paths
        call(i)
    samples = []
    started = time.perf_counter()
    for i in range(jobs):
        t0 = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - t0)
    return samples, time.perf_counter() - started


def replica_cost(jobs: int) -> None:
    """Single enqueues on a master with one replica attached, with and without WAIT."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        RedisServer(f"{tmp}/master") as master,
        RedisServer(f"{tmp}/replica", replica_of=master.address) as replica,
    ):
        deadline = time.monotonic() + 30
        while not replica_synced(replica):
            if time.monotonic() > deadline:
                raise SystemExit("the replica did not sync")
            time.sleep(0.05)
        for wait_ms in (0, 1000):
            producer = Producer(Settings(redis_url=master.url, replica_wait_ms=wait_ms))
            label = "WAIT 1 1000" if wait_ms else "no WAIT"
            for name, call in _single_calls(producer).items():
                samples, total = _time_calls(call, jobs)
                print(_line(f"{name} ({label})", samples, total))
            if wait_ms:
                print(f"{'':26s} unconfirmed by the replica: {producer.replicas.unconfirmed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--bulk", type=int, default=200_000)
    parser.add_argument("--bulk-emails", type=int, default=50_000)
    parser.add_argument(
        "--replica",
        action="store_true",
        help="single enqueues against a master with one replica, with and without WAIT",
    )
    args = parser.parse_args()
    if args.replica:
        replica_cost(args.jobs)
        return
    with tempfile.TemporaryDirectory() as tmp, RedisServer(tmp) as server:
        settings = Settings(redis_url=server.url)
        producer = Producer(settings)
        calls = _single_calls(producer)
        calls["enqueue_identify"] = lambda i: producer.enqueue_identify(
            f"user-{i}", {"email": f"user-{i}@example.com", "plan": "pro"}
        )
        for name, call in calls.items():
            samples, total = _time_calls(call, args.jobs)
            print(_line(name, samples, total))
        samples, total = asyncio.run(_async_samples(settings, args.jobs))
        print(_line("aio.enqueue_track", samples, total))
        print(_best_of_3("pipeline() bulk track", _bulk, producer, args.bulk))
        print(_best_of_3("pipeline() bulk send_email", _bulk_email, producer, args.bulk_emails))


if __name__ == "__main__":
    main()
