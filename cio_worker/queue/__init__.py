"""Where jobs wait in Redis: the ledger, leases, batch shards, scheduled retries, dead letters."""

from __future__ import annotations

from cio_worker.queue._bells import IDLE_WAIT_S, Doorbell, batch_bell, due_bell, wait_for_work
from cio_worker.queue._deadletter import (
    AGE_RULE,
    STATUS_RULE,
    DeadLetter,
    DeadLetterStore,
    LetterFilter,
    parse_age,
    parse_status,
)
from cio_worker.queue._leases import LeaseKeeper, new_owner_id
from cio_worker.queue._ledger import (
    ErrorRecord,
    JobLedger,
    LedgerEntry,
    stats,
)
from cio_worker.queue._receipts import Receipt, ReceiptBook, remote_id_of
from cio_worker.queue._replication import (
    ReplicaWait,
    queue_exec,
    queue_multi,
    queue_wait,
    write_error,
)
from cio_worker.queue._routing import (
    JobWriter,
    Router,
    batch_api,
    batched_kinds,
    is_batched,
    run_write,
    run_write_async,
)
from cio_worker.queue._scheduled import ScheduledJob, ScheduledJobs
from cio_worker.queue._shards import (
    SHARDS,
    BatchItem,
    BatchQueue,
    ShardRecords,
    TakenBatch,
    queue_enqueue,
    shard_for,
)
from cio_worker.queue._sweeper import Sweeper

__all__ = [
    "IDLE_WAIT_S",
    "Doorbell",
    "batch_bell",
    "due_bell",
    "wait_for_work",
    "parse_status",
    "parse_age",
    "STATUS_RULE",
    "AGE_RULE",
    "LetterFilter",
    "DeadLetter",
    "BatchItem",
    "BatchQueue",
    "DeadLetterStore",
    "ErrorRecord",
    "JobLedger",
    "JobWriter",
    "LeaseKeeper",
    "LedgerEntry",
    "Receipt",
    "ReceiptBook",
    "ReplicaWait",
    "Router",
    "SHARDS",
    "ScheduledJob",
    "ScheduledJobs",
    "Sweeper",
    "TakenBatch",
    "batch_api",
    "is_batched",
    "batched_kinds",
    "new_owner_id",
    "queue_enqueue",
    "ShardRecords",
    "shard_for",
    "queue_exec",
    "queue_multi",
    "queue_wait",
    "remote_id_of",
    "run_write",
    "run_write_async",
    "stats",
    "write_error",
]
