"""cio_worker.django with real Django, a real SQLite database and a real redis-server.

Enqueues inside `transaction.atomic()` are stored when the outermost transaction commits, exactly
once, and not at all when it (or their savepoint) rolls back; `immediately()` and
`CIO_WORKER_ON_COMMIT = False` store at the call; `manage.py check --deploy` reports a missing
credential and an unreachable Redis; the example project (examples/django) runs under runserver
and its committed order's event reaches the sandbox through a real worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import httpx
import pytest
import redis
import structlog
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction

import cio_worker
from cio_worker import keys
from cio_worker.config import Settings
from cio_worker.dev import RedisServer, SandboxProcess, free_port, stop_processes
from cio_worker.django import OnCommitProducer, enqueue_failed, immediately, read_settings
from cio_worker.produce import _defaults
from cio_worker.queue import JobLedger

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "django"
WAIT_S = 30


class Declined(Exception):
    """Raised inside a transaction to roll it back."""


@pytest.fixture(scope="module", autouse=True)
def django_project(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Django configured once for the module: two SQLite databases, cio_worker.django installed
    with CIO_WORKER pointing at the session's Redis; the default producer restored after."""
    assert not django_settings.configured, "another module configured Django in this process"
    root = tmp_path_factory.mktemp("django")
    previous = _defaults._default
    django_settings.configure(
        INSTALLED_APPS=["cio_worker.django"],
        DATABASES={
            alias: {"ENGINE": "django.db.backends.sqlite3", "NAME": str(root / f"{alias}.db")}
            for alias in ("default", "other")
        },
        CIO_WORKER={
            "CIO_WORKER_REDIS_URL": redis_server.url,
            "CIO_WORKER_SANDBOX_URL": "http://sandbox.test",
            "CIO_WORKER_BATCH": "off",  # track jobs in the ledger: one record per job
        },
        USE_TZ=True,
    )
    django.setup()
    for alias in ("default", "other"):
        with connections[alias].cursor() as cursor:
            cursor.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT)")
    try:
        yield
    finally:
        connections.close_all()
        _defaults._default = previous


@pytest.fixture
def stored(redis_client: redis.Redis) -> Any:
    """The ids of the job records in Redis, and the messages queued for the track workers."""

    def read() -> tuple[set[str], int]:
        prefix = keys.job("")
        ids = {key.decode()[len(prefix) :] for key in redis_client.scan_iter(keys.job("*"))}
        return ids, int(redis_client.llen("cio.track"))

    return read


def _orders(alias: str = "default") -> list[str]:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT customer FROM orders ORDER BY id")
        return [row[0] for row in cursor.fetchall()]


def _place(customer: str, alias: str = "default") -> str:
    with connections[alias].cursor() as cursor:
        cursor.execute("INSERT INTO orders (customer) VALUES (%s)", [customer])
    return cio_worker.enqueue_track(customer, "order_placed", {"total_cents": 4200})


@pytest.fixture(autouse=True)
def empty_tables() -> None:
    for alias in ("default", "other"):
        with connections[alias].cursor() as cursor:
            cursor.execute("DELETE FROM orders")


class TestOnCommit:
    def test_the_app_installs_the_on_commit_producer_from_cio_worker(
        self, redis_server: RedisServer
    ) -> None:
        producer = _defaults.default_producer()
        assert isinstance(producer, OnCommitProducer)
        assert producer.settings.redis_url == redis_server.url
        assert (producer.database, producer.on_commit) == ("default", True)

    def test_a_committed_transaction_stores_its_job_once_at_commit(
        self, stored: Any, redis_client: redis.Redis
    ) -> None:
        with transaction.atomic():
            job_id = _place("c-1")
            assert stored() == (set(), 0), "stored before the commit"
        assert stored() == ({job_id}, 1)
        assert _orders() == ["c-1"]
        loaded = JobLedger(redis_client).load(job_id)
        assert loaded is not None and loaded.job.payload["event"] == "order_placed"

    def test_a_rolled_back_transaction_stores_nothing(self, stored: Any) -> None:
        with pytest.raises(Declined), transaction.atomic():
            job_id = _place("c-1")
            raise Declined
        assert job_id and stored() == (set(), 0)
        assert _orders() == []

    def test_a_bad_argument_raises_at_the_call_inside_a_transaction(self, stored: Any) -> None:
        with transaction.atomic():
            with pytest.raises(cio_worker.ValidationError, match="user_id"):
                cio_worker.enqueue_track("", "order_placed")
            job_id = _place("c-1")
        assert stored() == ({job_id}, 1)

    def test_savepoints_keep_what_commits_and_drop_what_rolls_back(self, stored: Any) -> None:
        with transaction.atomic():
            outer = _place("outer")
            with pytest.raises(Declined), transaction.atomic():
                dropped = _place("rolled-back savepoint")
                raise Declined
            with transaction.atomic():
                kept = _place("released savepoint")
                with pytest.raises(Declined), transaction.atomic():
                    _place("rolled-back inner savepoint")
                    raise Declined
            assert stored() == (set(), 0), "stored before the outermost commit"
        ids, queued = stored()
        assert ids == {outer, kept} and dropped not in ids and queued == 2
        assert _orders() == ["outer", "released savepoint"]

    def test_a_savepoint_that_committed_is_dropped_with_its_outer_transaction(
        self, stored: Any
    ) -> None:
        with pytest.raises(Declined), transaction.atomic():
            with transaction.atomic():
                _place("inner")
            raise Declined
        assert stored() == (set(), 0)

    def test_outside_a_transaction_the_job_is_stored_at_the_call(self, stored: Any) -> None:
        job_id = _place("autocommit")
        assert stored() == ({job_id}, 1)

    def test_immediately_stores_at_the_call_even_if_the_transaction_rolls_back(
        self, stored: Any
    ) -> None:
        with pytest.raises(Declined), transaction.atomic():
            with immediately():
                job_id = _place("c-1")
            assert stored() == ({job_id}, 1)
            deferred = _place("c-2")
            raise Declined
        assert stored() == ({job_id}, 1) and deferred not in stored()[0]

    def test_on_commit_off_stores_at_the_call(self, settings: Settings, stored: Any) -> None:
        producer = OnCommitProducer(settings, on_commit=False)
        with pytest.raises(Declined), transaction.atomic():
            job_id = producer.enqueue_track("c-1", "order_placed")
            raise Declined
        assert stored() == ({job_id}, 1)

    def test_only_the_configured_databases_transactions_defer(
        self, settings: Settings, stored: Any
    ) -> None:
        producer = OnCommitProducer(settings, database="other")
        with transaction.atomic():  # "default": not the one this producer watches
            now = producer.enqueue_track("c-1", "order_placed")
            assert stored()[0] == {now}
        with pytest.raises(Declined), transaction.atomic(using="other"):
            producer.enqueue_track("c-2", "order_placed")
            raise Declined
        with transaction.atomic(using="other"):
            later = producer.enqueue_track("c-3", "order_placed")
            assert later not in stored()[0]
        assert stored() == ({now, later}, 2)


class TestRedisAwayAtCommit:
    def test_the_commit_stands_and_the_lost_job_is_logged_and_signalled(
        self, settings: Settings, stored: Any
    ) -> None:
        away = settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0")
        producer = OnCommitProducer(away)
        received: list[dict[str, Any]] = []

        def keep(sender: object, **job: Any) -> None:
            received.append(job)

        enqueue_failed.connect(keep)
        try:
            with structlog.testing.capture_logs() as lines, transaction.atomic():
                with connections["default"].cursor() as cursor:
                    cursor.execute("INSERT INTO orders (customer) VALUES ('c-1')")
                job_id = producer.enqueue_track("c-1", "order_placed", {"secret": "s3cr3t"})
                other = producer.enqueue_track("c-2", "order_placed")
        finally:
            enqueue_failed.disconnect(keep)
        assert _orders() == ["c-1"], "the commit stands"
        assert [r["job_id"] for r in received] == [job_id, other], "every job gets its turn"
        assert received[0]["payload"]["properties"] == {"secret": "s3cr3t"}
        assert isinstance(received[0]["error"], cio_worker.EnqueueError)
        errors = [line for line in lines if line["log_level"] == "error"]
        assert [line["job_id"] for line in errors] == [job_id, other]
        assert errors[0]["kind"] == "track" and "s3cr3t" not in json.dumps(errors, default=str)
        assert stored() == (set(), 0)


class TestSettings:
    def test_the_dict_wins_the_environment_fills_in_and_none_unsets(self) -> None:
        settings, options = read_settings(
            {"CIO_WORKER_TRACK_RPS": 42, "CUSTOMERIO_SITE_ID": None, "CIO_WORKER_ON_COMMIT": False},
            {"CIO_WORKER_TRACK_RPS": "7", "CIO_WORKER_APP_RPS": "3", "CUSTOMERIO_SITE_ID": "x"},
        )
        assert (settings.track_rps, settings.app_rps, settings.site_id) == (42.0, 3.0, None)
        assert options.on_commit is False and options.database == "default"

    @pytest.mark.parametrize(
        ("configured", "message"),
        [
            ({"CIO_WORKER_REDIS_ULR": "redis://x"}, "'CIO_WORKER_REDIS_ULR': not a setting"),
            ({"CIO_WORKER_BATCH": True}, r"CIO_WORKER\['CIO_WORKER_BATCH'\]: write the value"),
            ({"CIO_WORKER_TRACK_RPS": "fast"}, "CIO_WORKER_TRACK_RPS: must be a number"),
            ({"CIO_WORKER_ON_COMMIT": "no"}, "CIO_WORKER_ON_COMMIT'\\]: must be True or False"),
            ({"CIO_WORKER_CHECK_FAMILIES": ["track", "sms"]}, "unknown families sms"),
        ],
    )
    def test_a_bad_key_or_value_is_named(self, configured: dict[str, Any], message: str) -> None:
        with pytest.raises(ImproperlyConfigured, match=message):
            read_settings(configured, {})


# -- The example project, in subprocesses ---------------------------------------------------------


def _example_env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIO_", "CUSTOMERIO_"))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return {**env, **variables}


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


class TestDeployCheck:
    def test_a_missing_credential_and_an_unreachable_redis_are_reported(
        self, tmp_path: Path
    ) -> None:
        env = _example_env(
            CIO_WORKER_REDIS_URL=f"redis://:hunter2@127.0.0.1:{free_port()}/0",
            DJANGO_DB_PATH=str(tmp_path / "db.sqlite3"),
        )
        result = _manage(env, "check", "--deploy")
        assert result.returncode == 1, result.stderr
        assert "(cio_worker.E001) CUSTOMERIO_SITE_ID, CUSTOMERIO_TRACK_API_KEY: not set" in (
            result.stderr
        )
        assert "(cio_worker.E002) Redis at redis://:***@127.0.0.1:" in result.stderr
        assert "hunter2" not in result.stderr + result.stdout
        # Without --deploy, the project still starts (migrate, runserver run the other checks).
        assert _manage(env, "check").returncode == 0

    def test_credentials_and_a_live_redis_pass(self, redis_url: str, tmp_path: Path) -> None:
        env = _example_env(
            CIO_WORKER_REDIS_URL=redis_url,
            CUSTOMERIO_SITE_ID="site",
            CUSTOMERIO_TRACK_API_KEY="key",
            DJANGO_DB_PATH=str(tmp_path / "db.sqlite3"),
        )
        result = _manage(env, "check", "--deploy", "--tag", "cio_worker")
        assert result.returncode == 0, result.stderr
        assert "cio_worker.E" not in result.stderr


@pytest.fixture(scope="module")
def example_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The example project under runserver, with its own Redis, the sandbox and one worker."""
    root = tmp_path_factory.mktemp("django-example")
    server = RedisServer(root / "redis").start()
    sandbox_port, web_port = free_port(), free_port()
    env = _example_env(
        CIO_WORKER_REDIS_URL=server.url,
        CIO_WORKER_SANDBOX_URL=f"http://127.0.0.1:{sandbox_port}",
        CIO_WORKER_BATCH="off",
        DJANGO_DB_PATH=str(root / "db.sqlite3"),
    )
    sandbox = SandboxProcess(env=env, log_path=root / "sandbox.log", port=sandbox_port).start()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        assert _manage(env, "migrate").returncode == 0
        for args, log in (
            (["manage.py", "runserver", f"127.0.0.1:{web_port}", "--noreload"], "web.log"),
            (["-m", "celery", "-A", "cio_worker", "worker", "-n", f"dj-{web_port}@%h",
              "--without-mingle", "--without-gossip"], "worker.log"),
        ):  # fmt: skip
            with open(root / log, "wb") as out:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, *args], cwd=EXAMPLE, env=env, stdout=out, stderr=out
                    )
                )
        web = f"http://127.0.0.1:{web_port}"
        _wait_until(lambda: _answers(web), "runserver to listen")
        yield {"web": web, "sandbox": sandbox.url, "redis": server.url, "root": root}
    finally:
        stop_processes(processes)
        sandbox.stop()
        server.stop()


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.TransportError:
        return False
    return True


def _wait_until(predicate: Any, what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {WAIT_S}s waiting for {what}")


@pytest.mark.integration
class TestExampleProject:
    def test_the_rollback_view_stores_nothing_the_commit_view_is_delivered(
        self, example_stack: dict[str, Any]
    ) -> None:
        web, sandbox = example_stack["web"], example_stack["sandbox"]
        declined = httpx.post(f"{web}/orders/rollback/", data={"customer": "ann"}, timeout=10)
        assert declined.status_code == 402 and declined.json()["committed"] is False
        placed = httpx.post(f"{web}/orders/commit/", data={"customer": "bob"}, timeout=10)
        assert placed.status_code == 200, placed.text
        job_id = placed.json()["job_id"]

        def delivered() -> list[dict[str, Any]]:
            records = httpx.get(f"{sandbox}/_sandbox/requests", timeout=5).json()
            return [r for r in records if r["status"] == 200]

        records = _wait_until(delivered, "the committed order's event at the sandbox")
        time.sleep(0.5)  # a second request (the rolled-back event, a duplicate) would be here
        records = delivered()
        assert len(records) == 1, records
        assert records[0]["path"] == "/api/v1/customers/bob/events"
        assert records[0]["body"]["name"] == "order_placed" and records[0]["body"]["id"] == job_id
        client = redis.Redis.from_url(example_stack["redis"])
        try:
            assert client.exists(keys.job(declined.json()["job_id"])) == 0
        finally:
            client.close()
