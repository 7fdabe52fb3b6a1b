"""How full a backlog's batches are: requests per queued event, the figure that decides how fast
a backlog drains through Track's 100 requests a second (after an outage, say).

Starts its own redis-server, bulk-enqueues `--events` jobs for `--people` people with no worker
running, then takes every batch as a sender does (the same byte limit and per-item slack) and
builds its body, trimmed to the request limit as a sender would (`worker/_batch_fit.py`):

    .venv/bin/python bench/batch_fill.py                       # Track v2, ordinary events
    .venv/bin/python bench/batch_fill.py --slack 96            # the slack counted before
    .venv/bin/python bench/batch_fill.py --api pipelines --kind page   # 100-byte URLs

Nothing is sent: the bodies are measured and the batches completed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import redis

from cio_worker import Producer
from cio_worker.config import Settings
from cio_worker.customerio import ITEM_SLACK_BYTES, MAX_BATCH_BYTES
from cio_worker.dev import RedisServer
from cio_worker.queue import BatchQueue, TakenBatch
from cio_worker.worker._batch_fit import body_within_limit

#: Track's published limit, less the limiter's default margin (CIO_WORKER_RATE_MARGIN).
TRACK_REQUESTS_PER_S = 100 * 0.97
#: A page URL as long as validation allows (100 bytes), as tracking links often are.
PAGE_URL = (
    "https://shop.example.com/p/blue-widget?utm_source=newsletter&utm_medium=email&utm_c="
    + ("x" * 15)
)


def _enqueue(producer: Producer, events: int, people: int, kind: str) -> None:
    with producer.pipeline() as bulk:
        for i in range(events):
            user = f"user-{i % people}"
            if kind == "page":
                bulk.enqueue_page(user, PAGE_URL, {"title": "Blue widget", "n": i})
            else:
                bulk.enqueue_track(user, "Viewed Page", {"path": f"/p/{i}", "n": i})


def run(events: int, people: int, api: str, kind: str, slack: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        client = redis.Redis.from_url(server.url)
        settings = Settings(redis_url=server.url, data_api=api)  # type: ignore[arg-type]
        _enqueue(Producer(settings, redis_client=client), events, people, kind)
        queue = BatchQueue(client, api)
        sizes: list[tuple[int, int]] = []
        started = time.perf_counter()
        while True:
            taken = queue.take("bench", max_bytes=MAX_BATCH_BYTES, linger_ms=0, item_slack=slack)
            if taken is None:
                break
            if not isinstance(taken, TakenBatch):
                continue
            built = body_within_limit(queue, "bench", taken, list(taken.items))
            assert built is not None
            batch, sent, body = built
            sizes.append((len(sent), len(body)))
            queue.complete(batch, "bench")
        elapsed = time.perf_counter() - started
        client.close()
    per_request = sum(n for n, _ in sizes) / len(sizes)
    largest, mean = max(b for _, b in sizes), sum(b for _, b in sizes) / len(sizes)
    ceiling = per_request * TRACK_REQUESTS_PER_S
    whom = "1 person" if people == 1 else f"{people:,} people"
    print(f"cio_worker: {events:,} {kind} jobs for {whom}, {api} API, slack {slack} B")
    sent = sum(n for n, _ in sizes)
    print(f"  {sent:,} events in {len(sizes)} requests, {per_request:,.0f} a request on average")
    print(f"  body bytes: largest {largest:,}, mean {mean:,.0f} (take limit {MAX_BATCH_BYTES:,})")
    print(f"  drain ceiling at {TRACK_REQUESTS_PER_S:g} requests/s: {ceiling:,.0f} events/s")
    print(f"  takes and bodies: {elapsed:.2f} s in this process")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--people", type=int, default=1_000)
    parser.add_argument("--api", choices=["track", "pipelines"], default="track")
    parser.add_argument("--kind", choices=["track", "page"], default="track")
    parser.add_argument("--slack", type=int, help="bytes counted per item (default: the API's)")
    args = parser.parse_args(argv)
    slack = ITEM_SLACK_BYTES[args.api] if args.slack is None else args.slack
    run(args.events, args.people, args.api, args.kind, slack)
    return 0


if __name__ == "__main__":
    sys.exit(main())
