"""The partition switch (partition.py) over real loopback sockets: forwards both ways, a cut
refuses new connections and resets open ones, a heal listens again on the same port."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from .partition import Partition


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = _Server(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield str(host), int(port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        # Send from a thread while reading here: an echo of a large payload fills the buffers.
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        received = b""
        while len(received) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        sender.join(5)
        return received


def _partition_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("partition:")]


def test_forwards_cuts_and_heals(echo: tuple[str, int]) -> None:
    link = Partition(*echo).start()
    try:
        port = link.port
        assert link.url == f"http://127.0.0.1:{port}"
        big = bytes(range(256)) * 1024  # more than one read in each direction
        assert _roundtrip(port, big) == big

        with socket.create_connection(("127.0.0.1", port), timeout=5) as held:
            held.sendall(b"ping")
            assert held.recv(4) == b"ping"
            assert link.open_connections() == 1

            link.cut()
            assert link.is_cut and link.open_connections() == 0
            # The open connection was reset: the next read fails at once, it does not hang.
            with pytest.raises(ConnectionResetError):
                held.recv(4096)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)

        link.heal()
        assert link.port == port and not link.is_cut
        assert _roundtrip(port, b"after heal") == b"after heal"
    finally:
        link.close()
    assert _partition_threads() == [], "a forwarder thread outlived close()"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_target_down_closes_the_client_connection() -> None:
    """With nothing behind it the forwarder accepts and resets the connection at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = int(probe.getsockname()[1])

    def connect_and_read(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            return sock.recv(16)

    with Partition("127.0.0.1", dead_port) as link:
        # The reset may come while connecting or on the first read: the forwarder is that fast.
        with pytest.raises(ConnectionResetError):
            connect_and_read(link.port)
    assert _partition_threads() == []
