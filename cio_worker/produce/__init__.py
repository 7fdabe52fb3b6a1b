"""Producing jobs: validate input, build each job's payload, store it durably in one round trip."""

from __future__ import annotations

from cio_worker.produce._producer import (
    BulkProducer,
    Producer,
    configure,
    enqueue_add_device,
    enqueue_broadcast,
    enqueue_delete,
    enqueue_identify,
    enqueue_merge,
    enqueue_page,
    enqueue_remove_device,
    enqueue_send_email,
    enqueue_send_push,
    enqueue_send_sms,
    enqueue_suppress,
    enqueue_track,
    enqueue_track_anonymous,
    enqueue_unsuppress,
)

__all__ = [
    "BulkProducer",
    "Producer",
    "configure",
    "enqueue_add_device",
    "enqueue_broadcast",
    "enqueue_delete",
    "enqueue_identify",
    "enqueue_merge",
    "enqueue_page",
    "enqueue_remove_device",
    "enqueue_send_email",
    "enqueue_send_push",
    "enqueue_send_sms",
    "enqueue_suppress",
    "enqueue_track",
    "enqueue_track_anonymous",
    "enqueue_unsuppress",
]
