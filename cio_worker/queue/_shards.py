"""Batched delivery's queue: Track-family jobs in per-person shards, taken many at a time.

One Celery message per event tops out near 350 tasks/s per worker on two cores, far below what
a 100 requests/s limit allows when each request carries a 500 KB batch. So batchable jobs
(`customerio.batchable`) skip Celery: the producer stores each job's record (kind and payload) and
pushes its id onto one of `SHARDS` lists, chosen by the person, in one MULTI for any number of
jobs, and rings the API's doorbell (_bells.py). Worker threads (worker/_batcher.py) take a whole
batch from a shard in one script and build its request from the records.

Guarantees, and how:
- **Durable and reliable.** Taking a batch and recording it as in flight (owner, lease, ids) is
  one script, so no pop-before-record gap exists. A sender that dies leaves its lease to expire;
  the next taker of that shard first puts the batch back at the front, counting an attempt.
- **Order per person.** A person's jobs always land in the same shard; a shard has at most one
  batch in flight; a batch that fails goes back to the front and the shard is held for the
  backoff, so no later job of that person can overtake it (head-of-line blocking of one shard,
  1/SHARDS of the traffic, is the price).
- **Acknowledged only when accepted.** Jobs are deleted only after Customer.io accepted their
  batch (2xx); a 207 dead-letters just the listed items.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis

from cio_worker import jsonutil, keys
from cio_worker.ids import ulid_time_ms
from cio_worker.job import Job
from cio_worker.queue import _shard_scripts as scripts
from cio_worker.queue._bells import batch_bell, ring
from cio_worker.queue._ledger import LedgerEntry

#: Shards per API. More shards: finer head-of-line blocking and more parallel senders; each
#: idle sweep of a worker thread reads them all in one script.
SHARDS = 16
#: A batch's lease: longer than one send (limiter wait + HTTP timeout); a dead sender's batch
#: returns after it.
DEFAULT_LEASE_S = 30.0
#: Most ids a take looks at (a full 450 KB batch of small events is about 2,500).
MAX_SCAN = 5000
#: Most layout 1 ids one adoption script moves: a few milliseconds of Redis time.
ADOPT_CHUNK = 5000
#: How long a shard is held while its layout 1 jobs are being adopted (renewed per chunk).
ADOPT_HOLD_MS = 2000


def person_key(payload: Mapping[str, Any]) -> str:
    """What keeps one person's jobs in order: their id (an anonymous visitor's id), or the
    primary of a merge."""
    if "user_id" in payload:
        return str(payload["user_id"])
    if "anonymous_id" in payload:
        return f"anonymous:{payload['anonymous_id']}"
    return str(sorted(payload["primary"].items()))


def shard_of(job: Job) -> int:
    return shard_for(job.payload)


def shard_for(payload: Mapping[str, Any]) -> int:
    """The shard of a job with this payload (the bulk producer has no `Job`)."""
    return zlib.crc32(person_key(payload).encode()) % SHARDS


class ShardRecords:
    """Batched jobs gathered for one write: per shard, ids and records side by side (HSET's
    arguments), in enqueue order. The bulk producer adds job by job, from its records, without
    making a `Job`; `queue_enqueue` adds jobs. Only strings are kept, which the garbage
    collector need not follow."""

    __slots__ = ("fields", "count")

    def __init__(self) -> None:
        self.fields: list[list[str | bytes]] = [[] for _ in range(SHARDS)]
        self.count = 0

    def add(self, shard: int, job_id: str, record: bytes) -> None:
        self.fields[shard] += (job_id, record)
        self.count += 1

    def queue_writes(self, pipe: Any, api: str, *, replace: bool = False) -> None:
        """Queue the writes that store these jobs on `pipe` (a MULTI pipeline, sync or asyncio).

        Per shard: one variadic HSET of records, one LPUSH of ids, in enqueue order; then one
        ring of the doorbell. Plain commands in a MULTI rather than a script: as atomic, and
        Redis spends about a microsecond per job on them against five for the same work in Lua,
        which caps bulk writes.
        """
        for shard, fields in enumerate(self.fields):
            if not fields:
                continue
            ids = fields[::2]
            if replace:
                meta = keys.batch_meta(api, shard)
                pipe.hdel(
                    meta,
                    *(f"{i!s}:{f}" for i in ids for f in ("attempts", "first_error", "last_error")),
                )
                # A replay starts the retry budget (CIO_WORKER_RETRY_FOR_S) again from now.
                now = f"{time.time():.3f}"
                pipe.hset(meta, mapping={f"{i!s}:since": now for i in ids})
            pipe.execute_command("HSET", keys.batch_jobs(api, shard), *fields)
            pipe.execute_command("LPUSH", keys.batch_queue(api, shard), *ids)
        pipe.hincrby(keys.stats(), "track:requeued" if replace else "track:enqueued", self.count)
        ring(pipe, batch_bell(api))


def queue_enqueue(pipe: Any, api: str, jobs: Sequence[Job], *, replace: bool = False) -> None:
    """Queue the writes that store `jobs` on `pipe` (see `ShardRecords.queue_writes`)."""
    records = ShardRecords()
    for job in jobs:
        records.add(shard_of(job), job.id, job.record_json())
    records.queue_writes(pipe, api, replace=replace)


class BatchItem(NamedTuple):
    """One job of a taken batch: its id, its stored record (empty if it left meanwhile), and
    the attempts it spent before. A tuple: a take makes thousands."""

    job_id: str
    record: bytes
    attempts: int

    def job(self) -> Job:
        return Job.from_record(self.job_id, jsonutil.loads(self.record))


@dataclass(frozen=True, slots=True)
class TakenBatch:
    """A batch this owner now sends; `items` are in enqueue order."""

    api: str
    shard: int
    items: list[BatchItem]


class BatchQueue:
    """The Redis side of batched delivery for one API (`track` or `pipelines`)."""

    def __init__(self, redis_client: redis.Redis, api: str) -> None:
        self.redis = redis_client
        self.api = api
        self._pop = redis_client.register_script(scripts.POP)
        self._complete = redis_client.register_script(scripts.COMPLETE)
        self._restore = redis_client.register_script(scripts.RESTORE)
        self._adopt = redis_client.register_script(scripts.ADOPT)

    def shard_keys(self, shard: int) -> list[str]:
        """queue, inflight, hold, jobs, meta, suspects: the keys the scripts read per shard."""
        return [
            keys.batch_queue(self.api, shard),
            keys.batch_inflight(self.api, shard),
            keys.batch_hold(self.api, shard),
            keys.batch_jobs(self.api, shard),
            keys.batch_meta(self.api, shard),
            keys.batch_suspects(self.api, shard),
        ]

    # -- producing -------------------------------------------------------------------------------
    def enqueue(
        self,
        jobs: Sequence[Job],
        *,
        replace: bool = False,
        pipe: redis.client.Pipeline | None = None,
    ) -> None:
        """Store `jobs` and queue them: on `pipe`, or in one MULTI of our own."""
        if not jobs:
            return
        target = pipe if pipe is not None else self.redis.pipeline(transaction=True)
        queue_enqueue(target, self.api, jobs, replace=replace)
        if pipe is None:
            target.execute()

    # -- a worker's side -------------------------------------------------------------------------
    def take(
        self,
        owner: str,
        *,
        max_bytes: int,
        linger_ms: float,
        start: int = 0,
        lease_s: float = DEFAULT_LEASE_S,
        item_slack: int = 0,
        eager_bytes: int | None = None,
    ) -> TakenBatch | float | None:
        """A batch to send, or how long (s) until one may be ready, or None if all are empty.

        The batch's records add up to at most `max_bytes`, counting `item_slack` more for each
        (how much longer than its record an item may be). A partial batch waits until its oldest
        job is `linger_ms` old, unless it already counts `eager_bytes` (never, if None).
        """
        order = [(start + i) % SHARDS for i in range(SHARDS)]
        script_keys = [key for shard in order for key in self.shard_keys(shard)]
        raw = self._pop(
            keys=script_keys,
            args=[
                owner,
                int(lease_s * 1000),
                max_bytes,
                int(linger_ms),
                MAX_SCAN,
                item_slack,
                max_bytes + 1 if eager_bytes is None else eager_bytes,
            ],
        )
        if raw[0] == b"none":
            wait_ms = int(raw[1])
            return None if wait_ms < 0 else wait_ms / 1000
        _, position, ids_json, joined, attempts = raw
        ids: list[str] = jsonutil.loads(ids_json)
        records = joined.split(b"\0")
        if len(records) != len(ids):  # a record is not JSON text: never written by a producer
            raise ValueError(f"shard {order[int(position)]}: a stored record holds a NUL byte")
        counts = map(int, attempts) if attempts else [0] * len(ids)  # {}: none ever failed
        items = list(map(BatchItem, ids, records, counts))
        return TakenBatch(self.api, order[int(position)], items)

    def complete(self, batch: TakenBatch, owner: str) -> int:
        """Forget the batch's jobs (accepted); -1 if this owner lost the shard meanwhile."""
        shard = batch.shard
        return int(
            self._complete(
                keys=[
                    keys.batch_inflight(self.api, shard),
                    keys.stats(),
                    keys.batch_jobs(self.api, shard),
                    keys.batch_meta(self.api, shard),
                    keys.batch_suspects(self.api, shard),
                ],
                args=[owner, "track:delivered"],
            )
        )

    def restore(
        self,
        batch: TakenBatch,
        owner: str,
        *,
        hold_s: float,
        attempt: bool,
        error_json: str = "",
        split: bool = False,
        keep: int = 0,
    ) -> int:
        """Put the batch back at the front of its shard and hold the shard for `hold_s`.

        `split`: its jobs are next sent one per request; `keep`: the first `keep` jobs stay
        in flight with this owner, only the rest go back, with no hold (see
        `_shard_scripts.RESTORE`).
        """
        if keep < 0 or (keep and hold_s > 0):
            raise ValueError(f"keep={keep}, hold_s={hold_s}: keep is >= 0, and holds nothing")
        return int(
            self._restore(
                keys=self.shard_keys(batch.shard),
                args=[
                    owner,
                    int(hold_s * 1000),
                    "1" if attempt else "0",
                    error_json,
                    "1" if split else "0",
                    keep,
                ],
            )
        )

    def enqueued_at_s(self, shard: int, job_ids: Sequence[str]) -> list[float]:
        """When each job's retry budget started: its replay (`<id>:since`), else its enqueue."""
        if not job_ids:
            return []
        since = self.redis.hmget(keys.batch_meta(self.api, shard), [f"{i}:since" for i in job_ids])
        return [
            float(raw) if raw else ulid_time_ms(job_id) / 1000
            for job_id, raw in zip(job_ids, since, strict=True)
        ]

    def load(self, shard: int, job_id: str) -> LedgerEntry | None:
        """A batched job as the ledger describes jobs (for dead letters); None if it is gone."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(keys.batch_jobs(self.api, shard), job_id)
        pipe.hmget(
            keys.batch_meta(self.api, shard),
            [f"{job_id}:attempts", f"{job_id}:first_error", f"{job_id}:last_error"],
        )
        record, (attempts, first, last) = pipe.execute()
        if record is None:
            return None
        return LedgerEntry(
            job=Job.from_record(job_id, jsonutil.loads(record)),
            attempts=int(attempts or 0),
            first_error=json.loads(first) if first else None,
            last_error=json.loads(last) if last else None,
        )

    def forget(self, shard: int, job_id: str, *, pipe: redis.client.Pipeline) -> None:
        """Queue the removal of one job's records (it was dead-lettered) on `pipe`."""
        pipe.hdel(keys.batch_jobs(self.api, shard), job_id)
        pipe.hdel(
            keys.batch_meta(self.api, shard),
            f"{job_id}:attempts",
            f"{job_id}:first_error",
            f"{job_id}:last_error",
            f"{job_id}:since",
        )
        pipe.srem(keys.batch_suspects(self.api, shard), job_id)

    def depth(self) -> int:
        """Jobs waiting in every shard (not counting batches in flight)."""
        return self.backlog()[0]

    def backlog(self, now_s: float | None = None) -> tuple[int, float]:
        """(jobs waiting in every shard, age in seconds of the oldest of them, 0 if none)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(SHARDS):
            pipe.llen(keys.batch_queue(self.api, shard))
            pipe.lindex(keys.batch_queue(self.api, shard), -1)  # the oldest waits at the right
        replies = pipe.execute()
        now_ms = (time.time() if now_s is None else now_s) * 1000
        waiting = sum(int(n) for n in replies[0::2])
        ages = [now_ms - ulid_time_ms(tail.decode()) for tail in replies[1::2] if tail]
        return waiting, max([0.0, *ages]) / 1000

    # -- the layout before issue 18 ----------------------------------------------------------------
    def adopt_legacy(self) -> int:
        """Move every job queued in layout 1 (`keys.legacy_batch_shard`) into this layout, in
        order; return how many moved. One EXISTS when there is none (the usual case)."""
        shards = [keys.legacy_batch_keys(self.api, shard) for shard in range(SHARDS)]
        # Something is queued or in flight there: its list or its `inflight` hash exists.
        if not self.redis.exists(*(key for legacy in shards for key in legacy[:2])):
            return 0
        moved = 0
        for shard, legacy in enumerate(shards):
            current = [
                keys.batch_queue(self.api, shard),
                keys.batch_hold(self.api, shard),
                keys.batch_jobs(self.api, shard),
                keys.batch_meta(self.api, shard),
                keys.batch_suspects(self.api, shard),
                batch_bell(self.api),
            ]
            while True:
                count = int(self._adopt(keys=legacy + current, args=[ADOPT_CHUNK, ADOPT_HOLD_MS]))
                moved += max(0, count)
                if count <= 0:
                    break
        return moved
