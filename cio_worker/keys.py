"""Every Redis key cio_worker uses, built here and nowhere else (prefix `cio:`).

Celery's queues are the exception: kombu names them after the queue (`cio.track`, ...:
kinds.queue_name).
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


def kombu_unacked() -> str:
    """Hash kombu's Redis transport keeps delivered-but-unacknowledged messages in (its name is
    kombu's `Channel.unacked_key`; we only read it)."""
    return "unacked"


def limiter(workspace: str, bucket: str, part: str) -> str:
    """One of a limiter bucket's keys. The hash tag keeps a bucket's keys in one cluster slot."""
    return f"{PREFIX}{{limiter:{workspace}:{bucket}}}:{part}"


# -- The job ledger's indexes (queue/_ledger.py, queue/_sweeper.py) --------------------------------
def delayed() -> str:
    """Sorted set: job id scored by the Unix time (ms) its delayed retry or deferral is due."""
    return f"{PREFIX}delayed"


def leases() -> str:
    """Sorted set: job id scored by the Unix time (ms) its running worker's lease expires."""
    return f"{PREFIX}leases"


def parked(bucket: str) -> str:
    """Sorted set: job ids waiting for the bucket's circuit to close, scored by park time (ms)."""
    return f"{PREFIX}parked:{bucket}"


def receipts() -> str:
    """Hash: job id -> what Customer.io returned for a sent message (queue/_receipts.py)."""
    return f"{PREFIX}receipts"


def receipt_index() -> str:
    """Sorted set: job ids of receipts scored by when they were recorded (for retention)."""
    return f"{PREFIX}receipts:index"


def receipt_owners() -> str:
    """Hash: `<family>:<delivery or trigger id>` -> the job it was recorded for."""
    return f"{PREFIX}receipts:owners"


def circuit(bucket: str) -> str:
    """Hash: the bucket's circuit breaker (limiter/_circuit_scripts.py lists its fields)."""
    return f"{PREFIX}{{circuit:{bucket}}}"


def unclaimed(family: str) -> str:
    """Sorted set: job ids pushed onto the family's queue and not yet claimed, scored by seq."""
    return f"{PREFIX}unclaimed:{family}"


def push_seq(family: str) -> str:
    """Counter: the sequence number of the last message pushed onto the family's queue."""
    return f"{PREFIX}seq:{family}"


def claimed_seq(family: str) -> str:
    """The highest sequence number a worker has claimed from the family's queue."""
    return f"{PREFIX}claimed:{family}"


def waiting(family: str) -> str:
    """List (FIFO, RPUSH in) of job ids waiting for room in the family's queue (its window,
    queue/_window.py): they have no task message yet."""
    return f"{PREFIX}waiting:{family}"


def records(family: str) -> str:
    """Hash: waiting job id -> the job's record (`Job.record_json`: kind and payload, no id);
    the record moves into the job's hash when the job is released to its queue."""
    return f"{PREFIX}records:{family}"


def reaper_lock() -> str:
    """Short lock so that one worker in the fleet sweeps at a time."""
    return f"{PREFIX}reaper:lock"


# -- Batched Track-family delivery (queue/_shards.py) ----------------------------------------------
# Layout 2 (issue 18) stores one record per job; its keys are new so that a worker of layout 1
# still running during an upgrade never takes a job it cannot read. Workers adopt what layout 1
# left (queue/_shards.py `adopt_legacy`); nothing writes layout 1 any more.


def batch_queue(api: str, shard: int) -> str:
    """List of job ids for one shard of batched delivery (LPUSH in, oldest at the right)."""
    return f"{PREFIX}bq:v2:{api}:{shard}"


def batch_inflight(api: str, shard: int) -> str:
    """Hash describing the one batch of this shard being sent now (owner, lease, job ids)."""
    return f"{batch_queue(api, shard)}:inflight"


def batch_hold(api: str, shard: int) -> str:
    """Unix ms before which nobody sends from this shard (backoff or a 429 pause)."""
    return f"{batch_queue(api, shard)}:hold"


def batch_jobs(api: str, shard: int) -> str:
    """Hash: job id -> the job's record (`Job.record_json`: kind and payload, no id)."""
    return f"{batch_queue(api, shard)}:jobs"


def batch_suspects(api: str, shard: int) -> str:
    """Set of job ids whose batch was lost with its sender: each is next sent alone."""
    return f"{batch_queue(api, shard)}:suspects"


def batch_meta(api: str, shard: int) -> str:
    """Hash: `<job id>:attempts|first_error|last_error|since`, only for jobs that need one."""
    return f"{batch_queue(api, shard)}:meta"


def legacy_batch_shard(api: str, shard: int) -> str:
    """A shard's base in the layout before issue 18 (`<base>`, `<base>:jobs`, `:items`, ...)."""
    return f"{PREFIX}bq:{api}:{shard}"


def legacy_batch_keys(api: str, shard: int) -> list[str]:
    """Every key of a layout 1 shard, in the order its adoption script takes them: the list, then
    `inflight`, `hold`, `jobs`, `items`, `meta`, `suspects`."""
    base = legacy_batch_shard(api, shard)
    return [base, *(f"{base}:{part}" for part in _LEGACY_PARTS)]


_LEGACY_PARTS = ("inflight", "hold", "jobs", "items", "meta", "suspects")


# -- Doorbells (queue/_bells.py) -------------------------------------------------------------------
def bell(name: str) -> str:
    """List of at most one token, rung when work of `name` (`batch:<api>`, `due`) is ready."""
    return f"{PREFIX}bell:{name}"


def bell_stop(owner: str) -> str:
    """One process's private bell, rung to wake its own waiters at shutdown."""
    return f"{PREFIX}bell:stop:{owner}"


# -- Reporting webhooks (webhooks/_store.py): one hash tag, so a script's keys share a slot ----
def webhook_events() -> str:
    """Stream of verified reporting-webhook events, one entry per event_id, read by groups."""
    return f"{PREFIX}{{webhooks}}:events"


def webhook_seen(event_id: str) -> str:
    """Marker that `event_id` is already in the stream (expires after Customer.io's retries)."""
    return f"{PREFIX}{{webhooks}}:seen:{event_id}"


def webhook_counts() -> str:
    """Hash of webhook receiver counters: stored, duplicate, rejected_<reason>, invalid."""
    return f"{PREFIX}{{webhooks}}:counts"


# -- Delivery metrics (ops/_metrics.py, which documents the histograms' stored format) -------------
def metrics(name: str, family: str | None = None) -> str:
    """One of the metrics hashes: `deliveries` (`<family>:<kind>:<outcome>` -> count), or per
    family `latency` (enqueue -> accepted) and `limiter_wait` histograms. `metrics("*")` is a
    pattern matching every one of them."""
    return f"{PREFIX}metrics:{name}" if family is None else f"{PREFIX}metrics:{name}:{family}"
