"""customerio/_http.py under a network partition: a name that does not resolve, a refused
connection, and a pooled connection whose peer vanished all become
`TransportError(request_sent=False)`: nothing reached Customer.io, so the outcome is not ambiguous
and even a transactional send may be retried.

Real httpx/httpcore over real loopback sockets; no packet leaves the machine (the DNS failure is
the resolver's own error, raised by a patched `getaddrinfo` instead of asking a name server).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from chaos.partition import Partition

from cio_worker.config import Settings
from cio_worker.customerio._http import CustomerIoClient
from cio_worker.customerio._operations import HttpOperation
from cio_worker.dev import free_port
from cio_worker.errors import RetryableError, TransportError

SEND = HttpOperation(
    "app",
    "transactional",
    "POST",
    "/v1/send/email",
    {"transactional_message_id": 1, "identifiers": {"id": "u-1"}, "to": "a@example.test"},
)
TRACK = HttpOperation("track", "track", "PUT", "/api/v1/customers/u-1", {"plan": "pro"})


def _settings(base_url: str) -> Settings:
    return Settings(
        site_id="site",
        track_api_key="track-key",
        app_api_key="app-key",
        track_url=base_url,
        app_url=base_url,
        pipelines_url=base_url,
        http_timeout_s=5,
    )


def _send(client: CustomerIoClient, op: HttpOperation) -> TransportError:
    with pytest.raises(TransportError) as caught:
        client.send(op, job_id="job-1")
    return caught.value


def test_unresolvable_host_is_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DNS failure (httpx.ConnectError from socket.gaierror) means nothing was sent."""
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    client = CustomerIoClient(_settings("https://track.cio-worker-test.invalid"))
    try:
        for op in (SEND, TRACK):
            error = _send(client, op)
            assert error.request_sent is False
            assert isinstance(error, RetryableError) and error.job_id == "job-1"
            assert isinstance(error.__cause__, httpx.ConnectError)
            assert "ConnectError" in str(error) and "Name or service not known" in str(error)
    finally:
        client.close()


def test_refused_connection_is_not_sent() -> None:
    """Nothing listening on the port: connection refused, request_sent=False."""
    client = CustomerIoClient(_settings(f"http://127.0.0.1:{free_port()}"))
    try:
        for op in (SEND, TRACK):
            error = _send(client, op)
            assert error.request_sent is False
            assert isinstance(error.__cause__, httpx.ConnectError)
            assert "Connection refused" in str(error)
    finally:
        client.close()


class _Ok(BaseHTTPRequestHandler):
    """Answers every request 200 `{}` on a kept-alive HTTP/1.1 connection."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps({}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield "127.0.0.1", int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_partition_cut_and_heal(server: tuple[str, int]) -> None:
    """Through partition.py: delivered; cut (the pooled connection is reset and the port
    refuses): TransportError with request_sent=False, every time; healed: delivered again."""
    with Partition(*server) as link:
        client = CustomerIoClient(_settings(link.url))
        try:
            assert client.send(SEND).status_code == 200
            assert client.send(TRACK).status_code == 200
            assert link.open_connections() == 1  # one kept-alive connection, reused

            link.cut()
            for op in (SEND, TRACK, SEND):
                error = _send(client, op)
                assert error.request_sent is False, error
                assert isinstance(error.__cause__, httpx.ConnectError)

            link.heal()
            assert client.send(SEND).status_code == 200
        finally:
            client.close()
