"""Metrics recorded in Redis, collected at scrape time and served by the Prometheus exporter."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from cio_worker import keys
from cio_worker.config import Settings
from cio_worker.connection import create_redis
from cio_worker.dev import free_port
from cio_worker.ids import new_ulid
from cio_worker.job import Job
from cio_worker.kinds import Family, Kind, queue_name
from cio_worker.limiter._circuit import Circuit
from cio_worker.ops._exporter import build_registry, serve
from cio_worker.ops._metrics import (
    LATENCY_BUCKETS_S,
    collect,
    enqueue_latency_s,
    record_delivery,
)
from cio_worker.queue._deadletter import DeadLetterStore
from cio_worker.queue._envelope import task_message
from cio_worker.queue._ledger import ErrorRecord, JobLedger

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana-dashboard.json"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def delivered(client: redis.Redis, kind: Kind, latency_s: float, wait_s: float = 0.0) -> None:
    record_delivery(
        client,
        family=kind.family.value,
        kind=kind.value,
        outcome="delivered",
        latency_s=latency_s,
        limiter_wait_s=wait_s,
    )


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def queue_job(client: redis.Redis, kind: Kind, enqueued_at_s: float) -> str:
    job_id = new_ulid(int(enqueued_at_s * 1000))
    client.lpush(queue_name(kind.family), task_message(job_id, kind))
    return job_id


def dead_letter(client: redis.Redis, kind: Kind) -> None:
    job = Job(id=new_ulid(), kind=kind, payload={"user_id": "u1"}, created_at=time.time())
    error = ErrorRecord(reason="400: bad", status=400, body_excerpt=None, at=time.time())
    DeadLetterStore(client).add(job, 1, error, None)


def unreachable_redis() -> redis.Redis:
    return create_redis(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)


class TestRecordDelivery:
    def test_counts_by_family_kind_and_outcome(
        self, redis_client: redis.Redis, settings: Settings
    ) -> None:
        """Each call adds one to its (family, kind, outcome) counter and nothing else."""
        delivered(redis_client, Kind.IDENTIFY, 0.2)
        delivered(redis_client, Kind.IDENTIFY, 0.3)
        for outcome in ("retry", "dead", "rate_limited"):
            record_delivery(
                redis_client,
                family="transactional",
                kind="send_email",
                outcome=outcome,
                latency_s=None,
                limiter_wait_s=None,
            )
        counts = collect(redis_client, settings).deliveries
        assert counts[("track", "identify", "delivered")] == 2
        assert counts[("transactional", "send_email", "retry")] == 1
        assert counts[("transactional", "send_email", "dead")] == 1
        assert counts[("transactional", "send_email", "rate_limited")] == 1
        assert counts[("track", "identify", "dead")] == 0
        assert sum(counts.values()) == 5

    def test_latency_buckets_are_cumulative(
        self, redis_client: redis.Redis, settings: Settings
    ) -> None:
        """0.03 s counts from 0.05 up, 0.5 s from 0.5 up (bounds are inclusive), 2 s from 2.5."""
        delivered(redis_client, Kind.TRACK, 0.03)
        delivered(redis_client, Kind.TRACK, 0.5)
        delivered(redis_client, Kind.TRACK, 2.0)
        histogram = collect(redis_client, settings).latency["track"]
        buckets = dict(histogram.buckets)
        assert buckets[0.01] == buckets[0.025] == 0
        assert buckets[0.05] == buckets[0.25] == 1
        assert buckets[0.5] == buckets[1.0] == 2
        assert buckets[2.5] == buckets[3600.0] == 3
        assert histogram.count == 3
        assert histogram.sum_s == pytest.approx(2.53)
        assert [bound for bound, _ in histogram.buckets] == list(LATENCY_BUCKETS_S)

    def test_latency_is_observed_only_for_delivered(
        self, redis_client: redis.Redis, settings: Settings
    ) -> None:
        """A retry's latency is ignored; its limiter wait is still observed."""
        record_delivery(
            redis_client,
            family="track",
            kind="track",
            outcome="retry",
            latency_s=5.0,
            limiter_wait_s=0.004,
        )
        snapshot = collect(redis_client, settings)
        assert snapshot.latency["track"].count == 0
        wait = snapshot.limiter_wait["track"]
        assert wait.count == 1
        assert dict(wait.buckets)[0.0025] == 0
        assert dict(wait.buckets)[0.005] == 1

    def test_clock_skew_and_nan(self, redis_client: redis.Redis, settings: Settings) -> None:
        """A negative latency (hosts' clocks disagree) counts as 0; NaN is not observed."""
        delivered(redis_client, Kind.TRACK, -0.5)
        delivered(redis_client, Kind.TRACK, float("nan"))
        snapshot = collect(redis_client, settings)
        histogram = snapshot.latency["track"]
        assert histogram.count == 1
        assert histogram.sum_s == 0.0
        assert dict(histogram.buckets)[0.01] == 1
        assert snapshot.deliveries[("track", "track", "delivered")] == 2

    def test_one_round_trip(self, redis_client: redis.Redis) -> None:
        """Counter and both histograms are written by one atomic script call."""
        delivered(redis_client, Kind.SEND_EMAIL, 0.2, wait_s=0.01)  # loads the script once
        redis_client.config_resetstat()
        delivered(redis_client, Kind.SEND_EMAIL, 0.2, wait_s=0.01)
        stats = redis_client.info("commandstats")
        stats.pop("cmdstat_config")  # the reset itself
        # Commands run inside the script are counted too: 1 + (11 + 1) + (10 + 1) HINCRBYs.
        assert stats["cmdstat_evalsha"]["calls"] == 1
        assert stats["cmdstat_hincrby"]["calls"] == 24
        assert stats["cmdstat_hincrbyfloat"]["calls"] == 2
        assert set(stats) == {"cmdstat_evalsha", "cmdstat_hincrby", "cmdstat_hincrbyfloat"}

    @pytest.mark.parametrize(
        ("labels", "field"),
        [
            ({"family": "sms", "kind": "send_sms", "outcome": "delivered"}, "family"),
            ({"family": "track", "kind": "nope", "outcome": "delivered"}, "kind"),
            ({"family": "track", "kind": "track", "outcome": "ok"}, "outcome"),
        ],
    )
    def test_bad_labels_are_refused_without_raising(
        self, redis_client: redis.Redis, labels: dict[str, str], field: str
    ) -> None:
        """An unknown label value is logged naming the field, and nothing is written."""
        with capture_logs() as logs:
            record_delivery(redis_client, **labels, latency_s=1.0, limiter_wait_s=None)
        assert redis_client.keys(keys.metrics("*")) == []
        assert logs[0]["log_level"] == "warning"
        assert logs[0]["error"].startswith(f"{field}: must be")

    def test_redis_down_never_raises(self) -> None:
        """With Redis unreachable the call returns quietly (a debug line) within the timeout."""
        client = unreachable_redis()
        started = time.monotonic()
        with capture_logs() as logs:
            delivered(client, Kind.IDENTIFY, 0.1, wait_s=0.0)
        assert time.monotonic() - started < 2.0
        assert [(log["event"], log["log_level"]) for log in logs] == [
            ("metrics_not_recorded", "debug")
        ]
        assert "ConnectionError" in logs[0]["error"]


class TestCollect:
    def test_gauges_read_live_redis_state(
        self, redis_client: redis.Redis, settings: Settings
    ) -> None:
        """Queue depth, oldest job age, delayed retries, dead letters and cio:stats counters."""
        now = time.time()
        queue_job(redis_client, Kind.IDENTIFY, now - 90)  # oldest: pushed first, at the tail
        queue_job(redis_client, Kind.TRACK, now - 30)
        queue_job(redis_client, Kind.SEND_EMAIL, now - 5)
        redis_client.zadd(keys.delayed(), {new_ulid(): now * 1000 + 60_000})
        dead_letter(redis_client, Kind.BROADCAST)
        dead_letter(redis_client, Kind.IDENTIFY)
        ledger = JobLedger(redis_client)
        ledger.count(Family.TRACK, "enqueued", 7)
        ledger.count(Family.APP, "retried", 2)
        ledger.count(Family.BROADCAST, "rate_limited", 3)

        snapshot = collect(redis_client, settings, now_s=now)

        assert snapshot.queue_depth == {"track": 2, "transactional": 1, "broadcast": 0, "app": 0}
        assert snapshot.oldest_job_age_s["track"] == pytest.approx(90, abs=0.01)
        assert snapshot.oldest_job_age_s["transactional"] == pytest.approx(5, abs=0.01)
        assert snapshot.oldest_job_age_s["broadcast"] == 0.0
        assert snapshot.delayed_jobs == 1
        assert snapshot.dead_letters == 2
        assert snapshot.stats[("track", "enqueued")] == 7
        assert snapshot.stats[("app", "retried")] == 2
        assert snapshot.stats[("broadcast", "rate_limited")] == 3
        assert snapshot.stats[("broadcast", "dead")] == 1  # counted by DeadLetterStore.add
        assert snapshot.stats[("transactional", "enqueued")] == 0

    def test_a_message_without_a_job_id_has_no_age(
        self, redis_client: redis.Redis, settings: Settings
    ) -> None:
        """A foreign message at the tail is counted in the depth but given no made-up age."""
        redis_client.lpush(queue_name("app"), json.dumps({"headers": {"id": "not-a-ulid"}}))
        redis_client.lpush(queue_name("broadcast"), b"\xff not json")
        snapshot = collect(redis_client, settings)
        assert snapshot.queue_depth["app"] == 1
        assert snapshot.oldest_job_age_s["app"] is None
        assert snapshot.oldest_job_age_s["broadcast"] is None

    def test_enqueue_latency_from_the_ulid(self) -> None:
        """The job id's timestamp gives the time since enqueue; a non-ULID gives None."""
        job_id = new_ulid(1_700_000_000_000)
        assert enqueue_latency_s(job_id, now_s=1_700_000_002.5) == pytest.approx(2.5)
        assert enqueue_latency_s("job-1") is None

    def test_keys_are_under_cio_metrics(self, redis_client: redis.Redis) -> None:
        """Everything record_delivery writes lives under the cio:metrics prefix."""
        delivered(redis_client, Kind.BROADCAST, 12.0, wait_s=0.2)
        written = sorted(key.decode() for key in redis_client.keys("*"))
        assert written == [
            "cio:metrics:deliveries",
            "cio:metrics:latency:broadcast",
            "cio:metrics:limiter_wait:broadcast",
        ]


@pytest.fixture
def exporter_url(redis_client: redis.Redis, settings: Settings) -> Iterator[str]:
    """A real exporter serving HTTP on a free loopback port, stopped after the test."""
    port = free_port()
    server, thread = serve(redis_client, settings, host="127.0.0.1", port=port)
    yield f"http://127.0.0.1:{port}/metrics"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


class TestExporter:
    def test_series_move_when_deliveries_are_recorded(
        self, redis_client: redis.Redis, exporter_url: str
    ) -> None:
        """Counters and histograms served over HTTP grow as deliveries are recorded."""
        delivered(redis_client, Kind.SEND_EMAIL, 0.4, wait_s=0.002)
        before = scrape(exporter_url)
        email = {"family": "transactional", "kind": "send_email"}
        assert value(before, "cio_worker_deliveries_total", **email, outcome="delivered") == 1
        assert value(before, "cio_worker_redis_up") == 1

        delivered(redis_client, Kind.SEND_EMAIL, 3.0, wait_s=0.02)
        delivered(redis_client, Kind.SEND_EMAIL, 0.2)
        record_delivery(redis_client, **email, outcome="retry", latency_s=None, limiter_wait_s=None)
        after = scrape(exporter_url)

        assert value(after, "cio_worker_deliveries_total", **email, outcome="delivered") == 3
        assert value(after, "cio_worker_deliveries_total", **email, outcome="retry") == 1
        latency = "cio_worker_delivery_latency_seconds"
        assert value(after, f"{latency}_count", family="transactional") == 3
        assert value(after, f"{latency}_sum", family="transactional") == pytest.approx(3.6)
        assert value(after, f"{latency}_bucket", family="transactional", le="0.5") == 2
        assert value(after, f"{latency}_bucket", family="transactional", le="+Inf") == 3
        wait = "cio_worker_limiter_wait_seconds"
        assert value(after, f"{wait}_count", family="transactional") == 3
        assert value(after, f"{wait}_bucket", family="transactional", le="0.001") == 1
        assert value(after, f"{wait}_bucket", family="transactional", le="0.025") == 3

    def test_gauges_and_stats_counters(self, redis_client: redis.Redis, exporter_url: str) -> None:
        """Queue depth, oldest job age, delayed, DLQ size and cio:stats counters, per scrape."""
        queue_job(redis_client, Kind.IDENTIFY, time.time() - 120)
        queue_job(redis_client, Kind.IDENTIFY, time.time())
        redis_client.zadd(keys.delayed(), {"a": 1, "b": 2, "c": 3})
        dead_letter(redis_client, Kind.SEND_SMS)
        JobLedger(redis_client).count(Family.TRACK, "enqueued", 2)
        JobLedger(redis_client).count(Family.TRACK, "retried", 4)
        JobLedger(redis_client).count(Family.APP, "rate_limited", 1)

        samples = scrape(exporter_url)

        assert value(samples, "cio_worker_queue_depth", family="track") == 2
        assert value(samples, "cio_worker_queue_depth", family="app") == 0
        assert value(samples, "cio_worker_oldest_job_age_seconds", family="track") == (
            pytest.approx(120, abs=5)
        )
        assert value(samples, "cio_worker_oldest_job_age_seconds", family="app") == 0
        assert value(samples, "cio_worker_delayed_jobs") == 3
        assert value(samples, "cio_worker_dead_letter_queue_size") == 1
        assert value(samples, "cio_worker_enqueued_total", family="track") == 2
        assert value(samples, "cio_worker_retries_total", family="track") == 4
        assert value(samples, "cio_worker_rate_limited_total", family="app") == 1
        assert value(samples, "cio_worker_dead_letters_total", family="transactional") == 1

        redis_client.rpop(queue_name(Family.TRACK))  # a worker takes the oldest job
        samples = scrape(exporter_url)
        assert value(samples, "cio_worker_queue_depth", family="track") == 1
        assert value(samples, "cio_worker_oldest_job_age_seconds", family="track") < 60

    def test_circuit_state_transitions_and_parked_jobs(
        self, redis_client: redis.Redis, settings: Settings, exporter_url: str
    ) -> None:
        circuit = Circuit(settings.replace(circuit_threshold=1), redis_client)
        samples = scrape(exporter_url)
        assert value(samples, "cio_worker_circuit_open", family="broadcast") == 0
        assert value(samples, "cio_worker_circuit_transitions_total", family="broadcast",
                     to="open") == 0  # fmt: skip
        circuit.failure("broadcast")
        redis_client.zadd(keys.parked("broadcast"), {"a": 1})
        samples = scrape(exporter_url)
        assert value(samples, "cio_worker_circuit_open", family="broadcast") == 1
        assert value(samples, "cio_worker_circuit_open", family="track") == 0
        assert value(samples, "cio_worker_parked_jobs", family="broadcast") == 1
        assert value(samples, "cio_worker_circuit_transitions_total", family="broadcast",
                     to="open") == 1  # fmt: skip
        circuit.success("broadcast")
        samples = scrape(exporter_url)
        assert value(samples, "cio_worker_circuit_open", family="broadcast") == 0
        assert value(samples, "cio_worker_circuit_transitions_total", family="broadcast",
                     to="closed") == 1  # fmt: skip

    def test_every_series_is_named_cio_worker(self, exporter_url: str) -> None:
        """All families the brief names are served, and nothing outside the cio_worker_ prefix."""
        names = {
            family.name for family in text_string_to_metric_families(httpx.get(exporter_url).text)
        }
        assert names == {
            "cio_worker_redis_up",
            "cio_worker_deliveries",
            "cio_worker_retries",
            "cio_worker_rate_limited",
            "cio_worker_dead_letters",
            "cio_worker_enqueued",
            "cio_worker_delivery_latency_seconds",
            "cio_worker_limiter_wait_seconds",
            "cio_worker_queue_depth",
            "cio_worker_oldest_job_age_seconds",
            "cio_worker_delayed_jobs",
            "cio_worker_dead_letter_queue_size",
            "cio_worker_circuit_open",
            "cio_worker_circuit_transitions",
            "cio_worker_parked_jobs",
        }

    def test_redis_down_still_answers(self, settings: Settings) -> None:
        """A scrape with Redis unreachable is a 200 with cio_worker_redis_up 0 and no stale data."""
        port = free_port()
        server, thread = serve(unreachable_redis(), settings, host="127.0.0.1", port=port)
        try:
            samples = scrape(f"http://127.0.0.1:{port}/metrics")
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
        assert samples == {("cio_worker_redis_up", frozenset()): 0.0}

    def test_no_global_registry(self, redis_client: redis.Redis, settings: Settings) -> None:
        """Each exporter has its own registry; prometheus_client's global one is left alone."""
        before = set(prometheus_client.REGISTRY._names_to_collectors)
        first = build_registry(redis_client, settings)
        second = build_registry(redis_client, settings)
        assert first is not second
        assert set(prometheus_client.REGISTRY._names_to_collectors) == before
        assert first.get_sample_value("cio_worker_redis_up") == 1

    def test_cli_serves_metrics(self, redis_url: str, redis_client: redis.Redis) -> None:
        """`cio-worker metrics --port N` in its own process serves what workers record."""
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CIO_", "CUSTOMERIO_"))}
        env["CIO_WORKER_REDIS_URL"] = redis_url
        process = subprocess.Popen(
            [sys.executable, "-m", "cio_worker", "metrics", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    first = scrape(url)
                    break
                except httpx.TransportError:
                    assert process.poll() is None, process.stdout.read() if process.stdout else ""
                    assert time.monotonic() < deadline, "the exporter did not start"
                    time.sleep(0.1)
            labels = {"family": "track", "kind": "delete", "outcome": "delivered"}
            assert value(first, "cio_worker_deliveries_total", **labels) == 0
            delivered(redis_client, Kind.DELETE, 0.1)
            assert value(scrape(url), "cio_worker_deliveries_total", **labels) == 1
        finally:
            process.terminate()
            process.wait(timeout=10)
            if process.stdout:
                process.stdout.close()


class TestExporterAuth:
    def test_basic_auth_when_configured(
        self, redis_client: redis.Redis, settings: Settings
    ) -> None:
        """With CIO_WORKER_METRICS_BASIC_AUTH every path answers 401 (with a Basic challenge)
        unless the request carries exactly those credentials."""
        port = free_port()
        guarded = settings.replace(metrics_basic_auth="prom:scrape-pw")
        server, thread = serve(redis_client, guarded, host="127.0.0.1", port=port)
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            for path in ("/metrics", "/", "/anything"):
                refused = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
                assert refused.status_code == 401, path
                assert refused.headers["www-authenticate"].startswith("Basic ")
                assert "cio_worker" not in refused.text
            for auth in (("prom", "wrong"), ("other", "scrape-pw"), ("prom", "scrape-pw-x")):
                assert httpx.get(url, auth=auth, timeout=5).status_code == 401, auth
            for header in ("Basic !!!", "Bearer scrape-pw", "Basic", "Basic cHJvbQ=="):
                response = httpx.get(url, headers={"Authorization": header}, timeout=5)
                assert response.status_code == 401, header
            response = httpx.get(url, auth=("prom", "scrape-pw"), timeout=5)
            assert response.status_code == 200
            assert value(parse(response.text), "cio_worker_redis_up") == 1
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)

    def test_cli_takes_the_credentials_from_the_environment(
        self, redis_url: str, tmp_path: Path
    ) -> None:
        """`cio-worker metrics` reads CIO_WORKER_METRICS_BASIC_AUTH, says so, never prints it."""
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CIO_", "CUSTOMERIO_"))}
        env["CIO_WORKER_REDIS_URL"] = redis_url
        env["CIO_WORKER_METRICS_BASIC_AUTH"] = "prom:scrape-pw"
        log = tmp_path / "out.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "cio_worker", "metrics", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    refused = httpx.get(url, timeout=5)
                    break
                except httpx.TransportError:
                    assert process.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, "the exporter did not start"
                    time.sleep(0.1)
            assert refused.status_code == 401
            assert httpx.get(url, auth=("prom", "scrape-pw"), timeout=5).status_code == 200
        finally:
            process.terminate()
            process.wait(timeout=10)
        output = log.read_text()
        assert f"127.0.0.1:{port}/metrics (basic auth)" in output
        assert "scrape-pw" not in output


class TestDashboard:
    def load(self) -> dict[str, Any]:
        dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
        return dashboard

    def test_is_a_grafana_dashboard(self) -> None:
        """Valid JSON with the fields Grafana's import needs and a Prometheus datasource input."""
        dashboard = self.load()
        assert dashboard["title"] and dashboard["uid"]
        assert isinstance(dashboard["schemaVersion"], int)
        assert dashboard["panels"]
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for panel in dashboard["panels"]:
            assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == "${datasource}"

    def test_queries_use_only_exported_series(
        self, redis_client: redis.Redis, exporter_url: str
    ) -> None:
        """Every cio_worker_ name in a query is served by the exporter, and each is charted."""
        delivered(redis_client, Kind.IDENTIFY, 0.1, wait_s=0.01)
        served = {name for name, _ in scrape(exporter_url)}
        queried: set[str] = set()
        for panel in self.load()["panels"]:
            for target in panel.get("targets", []):
                queried |= set(re.findall(r"cio_worker_[a-z_]+", target["expr"]))
        assert queried
        assert queried <= served, queried - served
        charted = {re.sub(r"_(bucket|sum|count)$", "", name) for name in queried}
        exported = {re.sub(r"_(bucket|sum|count)$", "", name) for name in served}
        assert exported <= charted, exported - charted
