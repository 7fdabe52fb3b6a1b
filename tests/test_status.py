"""`cio-worker status --json`: queue depths, dead letters and limiter state from Redis."""

from __future__ import annotations

import json

import pytest
import redis

from cio_worker import keys
from cio_worker.cli._main import main
from cio_worker.cli._status import describe_circuit
from cio_worker.config import Settings
from cio_worker.limiter._circuit import Circuit
from cio_worker.limiter._limiter import Limiter
from cio_worker.ops._status import collect_status
from cio_worker.produce._producer import Producer
from cio_worker.queue._deadletter import DeadLetterStore
from cio_worker.queue._ledger import ErrorRecord, JobLedger


class TestCollectStatus:
    def test_counts_waiting_jobs_dead_letters_and_pauses(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """Waiting jobs per family, dead letters by kind and a paused bucket all show up."""
        producer = Producer(settings, redis_client=redis_client)
        for i in range(3):
            producer.enqueue_track(f"u{i}", "Viewed")
        dead = producer.enqueue_send_sms(5, identifiers={"id": "u1"})
        redis_client.delete("cio.transactional")
        entry = JobLedger(redis_client).load(dead)
        assert entry is not None
        DeadLetterStore(redis_client).add(
            entry.job, 1, ErrorRecord("400: bad", 400, None, 1.0), None
        )
        Limiter(settings, redis_client).pause("track", 30)
        report = collect_status(settings)
        assert report["queues"]["track"]["waiting"] == 3
        assert report["queues"]["track"]["enqueued"] == 3
        assert report["queues"]["transactional"]["dead"] == 1
        assert report["dead_letters"] == {"total": 1, "by_kind": {"send_sms": 1}}
        assert 25 < report["limiter"]["track"]["paused_for_s"] <= 30
        assert report["jobs_pending"] == 3

    def test_shows_each_circuit_and_its_parked_jobs(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        circuit = Circuit(
            settings.replace(circuit_threshold=1, circuit_probe_min_s=30), redis_client
        )
        circuit.failure("transactional")
        redis_client.zadd(keys.parked("transactional"), {"a": 1, "b": 2})
        report = collect_status(settings)
        assert report["queues"]["transactional"]["waiting"] == 2  # parked jobs wait too
        assert report["queues"]["transactional"]["parked"] == 2
        row = report["circuits"]["transactional"]
        assert row["state"] == "open" and row["parked"] == 2 and row["opened"] == 1
        assert 25 < row["next_probe_in_s"] <= 30
        assert report["circuits"]["track"]["state"] == "closed"
        assert describe_circuit(row).startswith("OPEN 0s, probe in 30s, 2 parked")
        assert describe_circuit(report["circuits"]["track"]) == "closed"

    def test_cli_prints_json(
        self, redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`cio-worker status --json` prints one parseable document with every family."""
        monkeypatch.setenv("CIO_WORKER_REDIS_URL", redis_url)
        assert main(["status", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert set(report["queues"]) == {"track", "transactional", "broadcast", "app"}
