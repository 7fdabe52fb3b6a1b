"""The Celery side: the app, its tasks, the deliverer, the batcher, what a failure means.

`app` (the Celery app, `celery -A cio_worker`) is built on first use: importing this package for
`supervise` (the CLI, the demo) must not configure Celery.
"""

from __future__ import annotations

import typing as _typing

from cio_worker.worker._supervise import supervise, worker_command

if _typing.TYPE_CHECKING:
    from celery import Celery

    app: Celery

__all__ = [
    "app",
    "supervise",
    "worker_command",
]


def __getattr__(name: str) -> _typing.Any:
    if name == "app":
        from cio_worker.worker._tasks import app

        return app
    raise AttributeError(f"module 'cio_worker.worker' has no attribute {name!r}")
