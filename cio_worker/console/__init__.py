"""The operator console: a web page for queues, retries, dead letters, limits and webhooks.

`cio-worker console` serves it (`serve_console`); `create_console_app` is the ASGI app, for
embedding or tests. Every page needs sign-in (CIO_WORKER_CONSOLE_BASIC_AUTH or
CIO_WORKER_CONSOLE_TOKEN) unless it runs local only; docs/console.md shows what it does.
"""

from __future__ import annotations

from cio_worker.console._app import create_console_app
from cio_worker.console._server import is_loopback, serve_console

__all__ = ["create_console_app", "is_loopback", "serve_console"]
