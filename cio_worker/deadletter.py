"""`from cio_worker.deadletter import DeadLetterStore`, documented before the tree had stages.

Dead letters live in `cio_worker.queue` now; this path is kept so code written against the old
README keeps working.
"""

from __future__ import annotations

from cio_worker.queue import DeadLetterStore

__all__ = ["DeadLetterStore"]
