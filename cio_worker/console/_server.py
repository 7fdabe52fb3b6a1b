"""`cio-worker console`: the console app (console/_app.py) served by uvicorn.

It refuses to start without sign-in credentials unless told `local_only`, and then only on a
loopback address; and with Redis away it fails at once, in one line, rather than serving pages
that all answer 503. uvicorn bounds what comes before the app sees a request, as it does for the
webhook receiver (webhooks/_server.py): the request head, idle keep-alive connections, and
requests in progress.
"""

from __future__ import annotations

import ipaddress
import socket

import uvicorn

from cio_worker.config import Settings
from cio_worker.connection import get_redis
from cio_worker.console._app import create_console_app
from cio_worker.errors import CioWorkerError, ConfigError

#: Requests in progress before uvicorn answers 503 itself: a console has a few operators.
MAX_CONNECTIONS = 100
#: Largest request head (request line and headers) uvicorn buffers, bytes.
MAX_HEADER_BYTES = 16 * 1024
#: Seconds an idle keep-alive connection is kept.
KEEP_ALIVE_S = 5


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_console(settings: Settings, *, host: str, port: int, local_only: bool = False) -> None:
    """Serve the console until interrupted. Before listening it raises ConfigError (no
    credentials, `local_only` on a non-loopback host), redis.RedisError (Redis away), or
    CioWorkerError (the address cannot be listened on)."""
    if local_only and not is_loopback(host):
        raise ConfigError(
            f"--local-only serves a loopback address only (127.0.0.1, ::1, localhost), not {host!r}"
        )
    app = create_console_app(settings, local_only=local_only)
    get_redis(settings).ping()
    sock = _listen(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"cio-worker console on http://{shown}:{port}/ ({app.state.auth.kinds})", flush=True)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,  # the console logs who did what itself, without request details
        proxy_headers=True,
        server_header=False,
        timeout_graceful_shutdown=5,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, so that "in use" is said before the console says where it
    listens (uvicorn would log it and exit with a code of its own)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise CioWorkerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise CioWorkerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
