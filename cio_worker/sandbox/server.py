"""run_sandbox: serve the sandbox with uvicorn until interrupted."""

from __future__ import annotations

import uvicorn

from cio_worker.gc_tuning import quiet_collector
from cio_worker.sandbox.asgi import create_app
from cio_worker.sandbox.config import SandboxConfig
from cio_worker.sandbox.faults import quiet_dropped_connections

#: Where the sandbox listens unless told otherwise: loopback only, it accepts well-known keys.
DEFAULT_HOST = "127.0.0.1"
#: The sandbox's usual port.
DEFAULT_PORT = 8765


def run_sandbox(
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, config: SandboxConfig | None = None
) -> None:
    """Serve the sandbox on `host:port`; blocks until the process is interrupted."""
    quiet_dropped_connections()
    app = create_app(config)
    # The sandbox keeps every body it parses (its record of requests): see gc_tuning.py.
    quiet_collector()
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
