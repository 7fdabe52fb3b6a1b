"""A taken batch's request body, kept within Customer.io's request limit.

A take counts each job's stored record plus ITEM_SLACK_BYTES (customerio/_batch_items.py), so a
body almost always fits. When items grow more than that (a Pipelines page copies its URL into
its item), the sender does not send a body Customer.io would refuse with a 413 for every job:
it sends the oldest jobs that fit and puts the rest back at the front of the shard, first in
line for the next take, with no attempt counted. Order holds: the jobs put back are younger than
those sent, and nobody takes from the shard while this sender holds it.
"""

from __future__ import annotations

from cio_worker import logs
from cio_worker.customerio import MAX_BATCH_BYTES, REQUEST_LIMIT_BYTES, fitting_count, records_body
from cio_worker.queue import BatchItem, BatchQueue, TakenBatch

log = logs.get_logger(__name__)


def body_within_limit(
    queue: BatchQueue, owner: str, batch: TakenBatch, sendable: list[BatchItem]
) -> tuple[TakenBatch, list[BatchItem], bytes] | None:
    """The body for `sendable` (jobs of `batch`), trimmed to the request limit if it has to be,
    with the batch and the jobs it now holds; None if this owner lost the shard meanwhile."""
    records = [(item.job_id, item.record) for item in sendable]
    content = records_body(records, queue.api)
    while len(content) > REQUEST_LIMIT_BYTES and len(sendable) > 1:
        # Items are written alike alone and together (`_batch_items._body`), so one round does;
        # at least one fewer each round keeps the loop finite whatever the measure says.
        fit = min(fitting_count(records, queue.api, MAX_BATCH_BYTES), len(sendable) - 1)
        # The batch keeps every job up to the last one sent: any before it that is not sent (its
        # record gone, or dead-lettered just now) is forgotten with it.
        keep = batch.items.index(sendable[fit - 1]) + 1
        # A Redis error here propagates: the caller gives its gate back, the lease the batch.
        if queue.restore(batch, owner, hold_s=0, attempt=False, keep=keep) < 0:
            return None  # this owner's lease ran out meanwhile
        log.warning(
            "batch_trimmed", bytes=len(content), jobs=len(sendable), sent=fit, shard=batch.shard
        )
        batch = TakenBatch(batch.api, batch.shard, batch.items[:keep])
        sendable, records = sendable[:fit], records[:fit]
        content = records_body(records, queue.api)
    return batch, sendable, content
