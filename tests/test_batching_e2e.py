"""Batched delivery end to end: real redis-server, real worker processes, the strict sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from cio_worker.config import Settings
from cio_worker.dev import RedisServer, SandboxProcess, stop_processes
from cio_worker.produce._producer import Producer
from cio_worker.queue._ledger import stats

pytestmark = pytest.mark.integration


@contextmanager
def stack(tmp: Path, workers: int = 1, **env_extra: str) -> Iterator[dict[str, Any]]:
    """Redis, the sandbox and `workers` worker processes, all stopped at the end."""
    with RedisServer(tmp / "redis") as server, SandboxProcess() as sandbox:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CIO_", "CUSTOMERIO_"))},
            "CIO_WORKER_REDIS_URL": server.url,
            "CIO_WORKER_SANDBOX_URL": sandbox.url,
            "CIO_WORKER_BACKOFF_BASE_S": "0.2",
            "CIO_WORKER_BACKOFF_MAX_S": "1",
            **env_extra,
        }
        procs = []
        for index in range(workers):
            with open(tmp / f"worker{index}.log", "wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "cio_worker", "worker", "--loglevel",
                     "INFO", "-n", f"batch{index}@%h", "--without-mingle", "--without-gossip"],
                    env=env, stdout=log, stderr=subprocess.STDOUT,
                ))  # fmt: skip
        client = redis.Redis.from_url(server.url)
        try:
            yield {"settings": Settings.from_env(env), "sandbox": sandbox.url, "redis": client}
        finally:
            stop_processes(procs)
            client.close()


def wait_delivered(client: redis.Redis, total: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counters = stats(client)
        if counters.get("track:delivered", 0) + counters.get("track:dead", 0) >= total:
            return
        time.sleep(0.1)
    raise AssertionError(f"not all {total} jobs ended: {stats(client)}")


def accepted_ops(sandbox: str) -> list[dict[str, Any]]:
    records = httpx.get(f"{sandbox}/_sandbox/requests", timeout=30).json()
    ops: list[dict[str, Any]] = []
    for record in sorted(records, key=lambda r: r["seq"]):
        if record["status"] == 200 and isinstance(record.get("body"), dict):
            ops += record["body"].get("batch", [])
    return ops


class TestOrderAndDurability:
    def test_identify_arrives_before_a_persons_later_events_through_failures(
        self, tmp_path: Path
    ) -> None:
        """Two workers, 200 people x (identify + 3 events), the first batches meeting 503s: every
        job is delivered once, and for each person the identify is accepted before its events,
        which arrive in enqueue order."""
        with stack(tmp_path, workers=2) as s:
            httpx.post(f"{s['sandbox']}/_sandbox/faults", json={"status": 503, "count": 4})
            producer = Producer(s["settings"])
            order: dict[str, list[str]] = {}
            with producer.pipeline() as bulk:
                for round_ in range(4):
                    for person in range(200):
                        user = f"user-{person}"
                        if round_ == 0:
                            job_id = bulk.enqueue_identify(user, {"plan": "pro"})
                        else:
                            job_id = bulk.enqueue_track(user, f"Step {round_}")
                        order.setdefault(user, []).append(job_id)
            wait_delivered(s["redis"], 800)
            ops = accepted_ops(s["sandbox"])
            counters = stats(s["redis"])
        assert counters["track:delivered"] == 800
        assert counters.get("track:retried", 0) > 0  # the 503s really happened
        seen: dict[str, list[str]] = {}
        for op in ops:
            user = op["identifiers"]["id"]
            seen.setdefault(user, []).append(
                op["action"] if op["action"] == "identify" else op["id"]
            )
        assert len(seen) == 200
        for user, sequence in seen.items():
            assert sequence == ["identify", *order[user][1:]], user


class TestPipelinesApi:
    @pytest.mark.parametrize("batch", ["on", "off"])
    def test_identify_and_track_reach_pipelines_with_auth_message_id_and_strict_mode(
        self, tmp_path: Path, batch: str
    ) -> None:
        """CIO_WORKER_DATA_API=pipelines: Basic auth with the key as user, messageId = job id,
        X-Strict-Mode: 1; batched to /v1/batch, or one call each to /v1/identify and /v1/track."""
        with stack(tmp_path, CIO_WORKER_DATA_API="pipelines", CIO_WORKER_BATCH=batch) as s:
            producer = Producer(s["settings"])
            identify = producer.enqueue_identify("u-1", {"plan": "pro"}, timestamp=1_700_000_000)
            track = producer.enqueue_track("u-1", "Signed Up", {"source": "ad"})
            wait_delivered(s["redis"], 2)
            records = httpx.get(f"{s['sandbox']}/_sandbox/requests", timeout=30).json()
        accepted = [r for r in records if r["status"] == 200]
        for record in accepted:
            headers = {k.lower(): v for k, v in record["headers"].items()}
            assert headers.get("x-strict-mode") == "1"
            # The sandbox checks Basic auth with the Pipelines key as user and an empty password
            # and records the verdict (never the header itself).
            assert record["auth"] == "ok"
            assert "authorization" not in headers
        if batch == "on":
            assert [r["path"] for r in accepted] == ["/v1/batch"]
            calls = accepted[0]["body"]["batch"]
        else:
            assert sorted(r["path"] for r in accepted) == ["/v1/identify", "/v1/track"]
            calls = [{**r["body"], "type": r["path"].rsplit("/", 1)[1]} for r in accepted]
        by_type = {call["type"]: call for call in calls}
        assert by_type["identify"]["messageId"] == identify
        assert by_type["identify"]["timestamp"] == "2023-11-14T22:13:20Z"
        assert by_type["track"]["messageId"] == track
        assert by_type["track"]["event"] == "Signed Up"
