"""Running it locally: embedded Redis servers (alone or under Sentinel), the sandbox in a child
process, the demo, progress displays."""

from __future__ import annotations

from cio_worker.dev._demo import run_demo
from cio_worker.dev._embedded import (
    RedisServer,
    SandboxProcess,
    find_redis_server,
    free_port,
    stop_processes,
)
from cio_worker.dev._sentinel import SentinelCluster, online_replicas, replica_synced

__all__ = [
    "RedisServer",
    "SandboxProcess",
    "SentinelCluster",
    "find_redis_server",
    "free_port",
    "online_replicas",
    "replica_synced",
    "run_demo",
    "stop_processes",
]
