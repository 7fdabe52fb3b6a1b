"""Every Redis key cio_worker uses, built here and nowhere else (prefix `cio:`).

Celery's queues are the exception: kombu names them after the queue (`cio.track`, ...).
"""

from __future__ import annotations

PREFIX = "cio:"


def job(job_id: str) -> str:
    """Hash holding a job's payload and attempt count until it is delivered or dead-lettered."""
    return f"{PREFIX}job:{job_id}"


def stats() -> str:
    """Hash of counters `<family>:<outcome>` shared by every producer and worker."""
    return f"{PREFIX}stats"


def dead_letters() -> str:
    """Hash: job id -> dead-letter entry (JSON)."""
    return f"{PREFIX}dlq:entries"


def dead_letter_index() -> str:
    """Sorted set: job id scored by the time it was dead-lettered (for listing and retention)."""
    return f"{PREFIX}dlq:index"


def limiter(workspace: str, bucket: str, part: str) -> str:
    """One of a limiter bucket's keys. The hash tag keeps a bucket's keys in one cluster slot."""
    return f"{PREFIX}{{limiter:{workspace}:{bucket}}}:{part}"
