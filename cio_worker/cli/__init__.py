"""The `cio-worker` command."""

from __future__ import annotations

from cio_worker.cli._main import main

__all__ = [
    "main",
]
