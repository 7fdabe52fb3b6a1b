"""`cio-worker webhooks serve`: the receiver (webhooks/_app.py) served by uvicorn.

uvicorn bounds what comes before the app sees a request: headers to MAX_HEADER_BYTES
(h11_max_incomplete_event_size), idle keep-alive connections to KEEP_ALIVE_S, and requests in
progress to MAX_CONNECTIONS (beyond it uvicorn answers 503 itself). The app bounds the bodies
(webhooks/_limits.py).
"""

from __future__ import annotations

import uvicorn

from cio_worker.config import Settings
from cio_worker.webhooks._app import create_webhook_app

#: Where the receiver listens unless told otherwise (put a TLS proxy in front for the internet).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8788
#: Requests in progress uvicorn allows before answering 503 itself (a backstop: the body slots
#: are what bound memory).
MAX_CONNECTIONS = 1000
#: Largest request head (request line and headers) uvicorn's h11 parser buffers, bytes.
MAX_HEADER_BYTES = 16 * 1024
#: Seconds an idle keep-alive connection is kept.
KEEP_ALIVE_S = 5


def serve_webhooks(
    settings: Settings, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> None:
    """Serve the receiver with uvicorn until interrupted (SIGINT/SIGTERM finish in-flight
    requests first)."""
    app = create_webhook_app(settings)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # our own log lines say what matters, without client details
        proxy_headers=True,
        timeout_graceful_shutdown=10,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )
