"""A local stand-in for Customer.io's Track (v1, v2), App and Data Pipelines APIs.

It checks credentials, enforces rate limits as strict rolling windows, validates bodies against
Customer.io's published limits, answers in each API's error shapes, records every request, and
injects faults on demand. Control endpoints live under /_sandbox/ (see control.py).
"""

from __future__ import annotations

from cio_worker.sandbox.asgi import create_app
from cio_worker.sandbox.config import SandboxConfig
from cio_worker.sandbox.server import run_sandbox

__all__ = ["SandboxConfig", "create_app", "run_sandbox"]
