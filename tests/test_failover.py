"""Replica confirmation (WAIT) and Redis Sentinel failover, against real redis-server processes:
a master with an attached replica, and a master + replica + three sentinels (dev/_sentinel.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cio_worker import keys
from cio_worker.aio import AsyncProducer
from cio_worker.config import Settings
from cio_worker.connection import broker_url, get_redis
from cio_worker.dev import RedisServer, SentinelCluster, online_replicas, replica_synced
from cio_worker.errors import EnqueueError
from cio_worker.produce._producer import Producer
from cio_worker.worker._tasks import create_app

#: An enqueue against a Redis that is not there fails within this (docs/design.md rule 1, with the
#: sentinels asked first).
ENQUEUE_BOUND_S = 3.0


def wait_calls(server: RedisServer) -> int:
    """How many WAIT commands `server` ran since its stats were last reset."""
    with redis.Redis(port=server.port, decode_responses=True) as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


def reset_stats(server: RedisServer) -> None:
    with redis.Redis(port=server.port) as client:
        client.config_resetstat()


def poll(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not callable(predicate) or not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(0.05)


def stored_on(server: RedisServer, job_id: str) -> bool:
    """Whether `server` holds the job: a ledger record or a batched job in a shard."""
    with redis.Redis(port=server.port, decode_responses=True) as client:
        if client.exists(keys.job(job_id)):
            return True
        return any(client.hexists(name, job_id) for name in client.scan_iter(match="cio:bq:*:jobs"))


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master with one replica attached and in sync."""
    master = RedisServer(tmp_path / "master").start()
    replica = RedisServer(tmp_path / "replica", replica_of=master.address)
    try:
        replica.start()
        poll(
            lambda: online_replicas(master) >= 1 and replica_synced(replica), 20, "a synced replica"
        )
        reset_stats(master)
        yield master, replica
    finally:
        replica.stop()
        master.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    with SentinelCluster(tmp_path / "cluster") as started:
        yield started


def sentinel_settings(url: str, **env: str) -> Settings:
    return Settings.from_env({"CIO_WORKER_REDIS_URL": url, **env})


def enqueue_both(producer: Producer) -> list[str]:
    """A batched track event (MULTI path) and a transactional email (ledger script path)."""
    return [
        producer.enqueue_track("u1", "Failover", {"n": 1}),
        producer.enqueue_send_email(7, identifiers={"id": "u1"}, to="u1@example.com"),
    ]


class TestReplicaWait:
    def test_waits_for_a_replica_when_one_is_attached(
        self, replicated: tuple[RedisServer, RedisServer]
    ) -> None:
        master, replica = replicated
        producer = Producer(Settings(redis_url=master.url))
        enqueue_both(producer)  # the first also loads the ledger script (NOSCRIPT, once)
        reset_stats(master)
        job_ids = enqueue_both(producer)
        assert wait_calls(master) == 2
        # WAIT returned only once the replica had each job: it is there already.
        assert all(stored_on(replica, job_id) for job_id in job_ids)
        assert producer.replicas.unconfirmed == 0

    def test_no_wait_without_a_replica(self, redis_url: str, redis_server: RedisServer) -> None:
        reset_stats(redis_server)
        producer = Producer(Settings(redis_url=redis_url))
        for _ in range(3):
            enqueue_both(producer)
        with producer.pipeline() as bulk:
            bulk.enqueue_track("u2", "Bulk")
        assert wait_calls(redis_server) == 0

    def test_no_wait_when_turned_off(self, replicated: tuple[RedisServer, RedisServer]) -> None:
        master, _ = replicated
        producer = Producer(Settings(redis_url=master.url, replica_wait_ms=0))
        enqueue_both(producer)
        assert wait_calls(master) == 0

    def test_bulk_flushes_and_asyncio_wait_too(
        self, replicated: tuple[RedisServer, RedisServer]
    ) -> None:
        master, replica = replicated
        settings = Settings(redis_url=master.url)
        enqueue_both(Producer(settings))  # load the ledger script
        reset_stats(master)
        with Producer(settings).pipeline(flush_every=3) as bulk:
            bulk_ids = [bulk.enqueue_track(f"u{i}", "Bulk") for i in range(5)]
            bulk_ids.append(
                bulk.enqueue_send_email(7, identifiers={"id": "u9"}, to="u9@example.com")
            )
        assert wait_calls(master) == 2  # one per flush: 3 jobs, then 3
        assert bulk.replicas.unconfirmed == 0

        async def enqueue() -> list[str]:
            producer = AsyncProducer(settings)
            try:
                return [
                    await producer.enqueue_track("u1", "Async"),
                    await producer.enqueue_send_email(
                        7, identifiers={"id": "u1"}, to="u1@example.com"
                    ),
                ]
            finally:
                await producer.aclose()

        async_ids = asyncio.run(enqueue())
        assert wait_calls(master) == 4
        assert all(stored_on(replica, job_id) for job_id in bulk_ids + async_ids)

    def test_a_silent_replica_delays_but_does_not_fail_the_enqueue(
        self, replicated: tuple[RedisServer, RedisServer]
    ) -> None:
        """The job is on the master: the enqueue returns its id after `replica_wait_ms`."""
        master, replica = replicated
        producer = Producer(Settings(redis_url=master.url, replica_wait_ms=300))
        producer.enqueue_identify("u0")  # learn that a replica is attached
        assert replica.process is not None
        os.kill(replica.process.pid, signal.SIGSTOP)  # attached, but answering nothing
        try:
            started = time.monotonic()
            job_id = producer.enqueue_send_email(7, identifiers={"id": "u1"}, to="u1@example.com")
            elapsed = time.monotonic() - started
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        assert 0.25 <= elapsed < 1.5
        assert stored_on(master, job_id)
        assert producer.replicas.unconfirmed == 1


class TestSentinel:
    def test_kombu_survives_switching_to_every_sentinel(self, cluster: SentinelCluster) -> None:
        """kombu moves to the next alternate URL when its connection fails (a failover); the
        last one used to carry `?master_name=` and crash the worker with a TypeError."""
        url = cluster.url.replace("/0?", "/3?")
        app = create_app(sentinel_settings(url))
        assert "?" not in app.conf.broker_url
        connection = app.connection_for_write()
        try:
            for _ in range(len(connection.alt)):
                connection.maybe_switch_next()  # TypeError here without connection.broker_url
                connection.ensure_connection(max_retries=3)
                client: Any = connection.default_channel.client  # type: ignore[attr-defined]
                assert client.ping()
                # Every alternate names the same database, not just the one that had a path.
                assert client.connection_pool.connection_kwargs["db"] == 3
        finally:
            connection.release()

    def test_broker_url_keeps_password_and_database_on_every_sentinel(self) -> None:
        url = "sentinel://:p%40ss@h1:26379;sentinel://h2:26380;sentinel://h3/2?master_name=m"
        assert broker_url(url) == (
            "sentinel://:p%40ss@h1:26379/2;sentinel://:p%40ss@h2:26380/2;"
            "sentinel://:p%40ss@h3:26379/2"
        )
        assert broker_url("redis://cache:6379/0") == "redis://cache:6379/0"

    def test_clients_and_producers_follow_the_new_master(self, cluster: SentinelCluster) -> None:
        settings = sentinel_settings(cluster.url)
        producer = Producer(settings)
        shared = get_redis(settings)  # what the sweeper, batcher, limiter and ledger use
        before = enqueue_both(producer)
        assert producer.replicas.unconfirmed == 0  # the replica confirmed both
        old = cluster.kill_master()

        # Until the sentinels promote the replica, an enqueue fails fast, and loudly.
        failures = 0
        deadline = time.monotonic() + 30
        while True:
            started = time.monotonic()
            try:
                after = enqueue_both(producer)
                break
            except EnqueueError:
                failures += 1
                assert time.monotonic() - started < ENQUEUE_BOUND_S
            assert time.monotonic() < deadline, "no enqueue succeeded within 30 s of the kill"
        assert failures > 0  # the kill was noticed: this is a failover, not a no-op

        new = cluster.wait_for_failover(old)
        assert all(stored_on(new, job_id) for job_id in before + after)
        shared.set("cio:test:after-failover", "1")
        pool: Any = shared.connection_pool  # a SentinelConnectionPool
        assert pool.get_master_address()[1] == new.port

        async def enqueue() -> str:
            async_producer = AsyncProducer(settings)
            try:
                return await async_producer.enqueue_send_email(
                    7, identifiers={"id": "a1"}, to="a1@example.com"
                )
            finally:
                await async_producer.aclose()

        assert stored_on(new, asyncio.run(enqueue()))

    def test_no_master_known_is_an_enqueue_error_in_bounded_time(
        self, cluster: SentinelCluster
    ) -> None:
        settings = sentinel_settings(cluster.url)
        producer = Producer(settings)
        enqueue_both(producer)
        for node in cluster.nodes:
            node.kill()
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(EnqueueError):
                enqueue_both(producer)
            assert time.monotonic() - started < ENQUEUE_BOUND_S

        async def enqueue() -> str:
            async_producer = AsyncProducer(settings)
            try:
                return await async_producer.enqueue_track("u1", "Async")
            finally:
                await async_producer.aclose()

        started = time.monotonic()
        with pytest.raises(EnqueueError):
            asyncio.run(enqueue())
        assert time.monotonic() - started < ENQUEUE_BOUND_S
