"""Running it locally: embedded Redis servers, the demo, progress displays."""

from __future__ import annotations

from cio_worker.dev._demo import run_demo

__all__ = [
    "run_demo",
]
