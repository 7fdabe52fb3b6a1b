"""The kinds of job and the API family each belongs to.

A *family* is both a queue (one Celery queue per family, so a slow family never starves another)
and, except where noted in limiter/_limiter.py, a rate-limit bucket.
"""

from __future__ import annotations

from enum import StrEnum


class Family(StrEnum):
    """Queues, one per group of Customer.io endpoints sharing a limit."""

    TRACK = "track"
    TRANSACTIONAL = "transactional"
    BROADCAST = "broadcast"
    APP = "app"


class Kind(StrEnum):
    """Every job kind the producer accepts."""

    IDENTIFY = "identify"
    TRACK = "track"
    TRACK_ANONYMOUS = "track_anonymous"
    PAGE = "page"
    DELETE = "delete"
    MERGE = "merge"
    SUPPRESS = "suppress"
    UNSUPPRESS = "unsuppress"
    ADD_DEVICE = "add_device"
    REMOVE_DEVICE = "remove_device"
    SEND_EMAIL = "send_email"
    SEND_PUSH = "send_push"
    SEND_SMS = "send_sms"
    BROADCAST = "broadcast"

    @property
    def family(self) -> Family:
        return KIND_FAMILY[self]

    @property
    def task_name(self) -> str:
        """The Celery task name, as Flower shows it."""
        return f"cio_worker.{self.value}"


_MESSAGE_KINDS = {Kind.SEND_EMAIL, Kind.SEND_PUSH, Kind.SEND_SMS}

KIND_FAMILY: dict[Kind, Family] = {
    kind: (
        Family.TRANSACTIONAL
        if kind in _MESSAGE_KINDS
        else Family.BROADCAST
        if kind is Kind.BROADCAST
        else Family.TRACK
    )
    for kind in Kind
}


#: Kinds by value, for readers of thousands of stored records (a dict lookup, not `Kind(...)`).
KINDS: dict[str, Kind] = {kind.value: kind for kind in Kind}

QUEUE_PREFIX = "cio."


def queue_name(family: Family | str) -> str:
    """The Redis list / Celery queue that holds a family's jobs."""
    return f"{QUEUE_PREFIX}{Family(family).value}"


def family_of_queue(name: str) -> Family | None:
    """The family whose jobs a queue holds, or None for a queue that is not ours."""
    if not name.startswith(QUEUE_PREFIX):
        return None
    try:
        return Family(name.removeprefix(QUEUE_PREFIX))
    except ValueError:
        return None
