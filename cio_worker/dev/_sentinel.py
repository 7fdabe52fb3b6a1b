"""A Redis Sentinel cluster for failover tests, benchmarks and demos, and the replication probes
they wait on: a master, one replica and sentinels, all `redis-server` child processes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self, TypeVar

import redis

from cio_worker.dev._embedded import (
    RedisServer,
    Started,
    find_redis_server,
    free_port,
    stop_processes,
)
from cio_worker.errors import ConfigError

T = TypeVar("T")


class SentinelCluster(Started):
    """A master, one replica and Redis Sentinels, all on free loopback ports, AOF on.

    For failover tests, benchmarks and demos:
    `with SentinelCluster(tmp) as cluster: cluster.url` (a `sentinel://` URL naming every
    sentinel, as `CIO_WORKER_REDIS_URL` takes it). `kill_master()` SIGKILLs whichever node is the
    master now and `wait_for_failover()` waits until the sentinels promoted another. Detection is
    quick on purpose (`down_after_ms`, default 1 s; production uses several seconds).
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        master_name: str = "mymaster",
        sentinels: int = 3,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        master = RedisServer(self.data_dir / "node0")
        replica = RedisServer(self.data_dir / "node1", replica_of=master.address)
        #: Every data node, whatever its role now.
        self.nodes = [master, replica]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ";".join(f"sentinel://127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"{hosts}/0?master_name={self.master_name}"

    @property
    def quorum(self) -> int:
        return len(self.sentinel_ports) // 2 + 1

    def start(self, *, timeout_s: float = 30.0) -> Self:
        deadline = time.monotonic() + timeout_s
        try:
            for node in self.nodes:
                node.start()
            master = self.nodes[0]
            _poll(lambda: replica_synced(self.nodes[1]), deadline, "the replica to sync")
            for index, port in enumerate(self.sentinel_ports):
                self._sentinels.append(self._start_sentinel(index, port, master))
            # Failover needs a quorum that knows the replica and each other (sentinels find
            # each other through hello messages on the master, every 2 s).
            _poll(
                self._sentinels_agree, deadline, "the sentinels to see the replica and each other"
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _start_sentinel(
        self, index: int, port: int, master: RedisServer
    ) -> subprocess.Popen[bytes]:
        directory = self.data_dir / f"sentinel{index}"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "sentinel.conf"  # Sentinel rewrites it: it must be writable
        name = self.master_name
        config.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {directory}\n"
            f"logfile {directory / 'sentinel.log'}\n"
            f"sentinel monitor {name} 127.0.0.1 {master.port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {name} 1\n"
        )
        return subprocess.Popen(
            [find_redis_server(), str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _sentinel_client(self, port: int) -> redis.Redis:
        return redis.Redis(
            port=port, socket_timeout=1, socket_connect_timeout=0.5, decode_responses=True
        )

    def _sentinels_agree(self) -> bool:
        for port in self.sentinel_ports:
            with self._sentinel_client(port) as client:
                fields = client.sentinel_master(self.master_name)
            if int(fields["num-slaves"]) < 1:
                return False
            if int(fields["num-other-sentinels"]) < len(self.sentinel_ports) - 1:
                return False
        return True

    def master_address(self) -> tuple[str, int] | None:
        """The master the first answering sentinel names (None if none answers)."""
        for port in self.sentinel_ports:
            try:
                with self._sentinel_client(port) as client:
                    found = client.sentinel_get_master_addr_by_name(self.master_name)
            except redis.RedisError:
                continue
            if found:
                return (str(found[0]), int(found[1]))
        return None

    def node_at(self, address: tuple[str, int]) -> RedisServer:
        for node in self.nodes:
            if node.port == address[1]:
                return node
        raise KeyError(f"no data node listens on {address}")

    def master(self) -> RedisServer:
        address = self.master_address()
        if address is None:
            raise ConfigError("no sentinel answers")
        return self.node_at(address)

    def kill_master(self) -> RedisServer:
        """SIGKILL the node that is master now, as a crash would; return it."""
        node = self.master()
        node.kill()
        return node

    def wait_for_failover(self, old: RedisServer, *, timeout_s: float = 30.0) -> RedisServer:
        """Wait until the sentinels name another node master and that node acts as one."""

        def promoted() -> RedisServer | None:
            address = self.master_address()
            if address is None or address[1] == old.port:
                return None
            node = self.node_at(address)
            with redis.Redis(port=node.port, socket_timeout=1, decode_responses=True) as client:
                return node if client.info("replication")["role"] == "master" else None

        return _poll(promoted, time.monotonic() + timeout_s, "a new master")

    def stop(self) -> None:
        stop_processes(self._sentinels, timeout_s=10)
        self._sentinels.clear()
        for node in self.nodes:
            node.stop()


def online_replicas(server: RedisServer) -> int:
    """How many replicas are attached to `server` and in sync (`state=online`)."""
    with redis.Redis(port=server.port, socket_timeout=1, decode_responses=True) as client:
        info = client.info("replication")
    return sum(
        1
        for key, value in info.items()
        if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )


def replica_synced(replica: RedisServer) -> bool:
    """`replica` has its master's data and has finished writing its first AOF (until then
    Redis 6.2 ignores SIGTERM: "Writing initial AOF, can't exit")."""
    with redis.Redis(port=replica.port, socket_timeout=1, decode_responses=True) as client:
        replication = client.info("replication")
        persistence = client.info("persistence")
    return (
        replication.get("master_link_status") == "up"
        and not persistence.get("aof_rewrite_in_progress")
        and not persistence.get("aof_rewrite_scheduled")
    )


def _poll(predicate: Callable[[], T | None], deadline: float, what: str) -> T:
    """`predicate()` once it is truthy; a Redis error counts as "not yet"."""
    while True:
        try:
            result = predicate()
            if result:
                return result
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise ConfigError(f"timed out waiting for {what}")
        time.sleep(0.05)
