"""Batched delivery's queue: Track-family jobs in per-person shards, taken many at a time.

One Celery message per event tops out near 350 tasks/s per worker on two cores, far below what
a 100 requests/s limit allows when each request carries a 500 KB batch. So batchable jobs
(batch_ops.BATCHABLE) skip Celery: the producer stores each job with its ready-made batch item
and pushes its id onto one of `SHARDS` lists, chosen by the person, in one script for any number
of jobs. Worker threads (batcher.py) take a whole batch from a shard in one script.

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

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from cio_worker import batch_scripts as scripts
from cio_worker import keys
from cio_worker.payloads import Job

#: Shards per API. More shards: finer head-of-line blocking and more parallel senders; each
#: idle sweep of a worker thread reads them all in one script.
SHARDS = 16
#: A batch's lease: longer than one send (limiter wait + HTTP timeout); a dead sender's batch
#: returns after it.
DEFAULT_LEASE_S = 30.0
#: Most ids a take looks at (a full 450 KB batch of small events is about 2,500).
MAX_SCAN = 5000
JOB_PREFIX = keys.job("")


def person_key(job: Job) -> str:
    """What keeps one person's jobs in order: their id, or the primary of a merge."""
    payload = job.payload
    if "user_id" in payload:
        return str(payload["user_id"])
    return str(sorted(payload["primary"].items()))


def shard_of(job: Job) -> int:
    return zlib.crc32(person_key(job).encode()) % SHARDS


@dataclass(frozen=True, slots=True)
class BatchItem:
    job_id: str
    item: bytes
    attempts: int


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
        self._enqueue = redis_client.register_script(scripts.ENQUEUE)
        self._pop = redis_client.register_script(scripts.POP)
        self._complete = redis_client.register_script(scripts.COMPLETE)
        self._restore = redis_client.register_script(scripts.RESTORE)

    def shard_keys(self, shard: int) -> list[str]:
        return [
            keys.batch_queue(self.api, shard),
            keys.batch_inflight(self.api, shard),
            keys.batch_hold(self.api, shard),
        ]

    # -- producing -------------------------------------------------------------------------------
    def enqueue(
        self,
        jobs: Sequence[tuple[Job, str]],
        *,
        replace: bool = False,
        pipe: redis.client.Pipeline | None = None,
    ) -> None:
        """Store (job, item JSON) pairs and queue them, in one script call."""
        if not jobs:
            return
        script_keys = [keys.stats()]
        args: list[str | int] = [len(jobs), "track:enqueued" if not replace else "track:requeued"]
        for job, item in jobs:
            script_keys += [keys.batch_queue(self.api, shard_of(job)), keys.job(job.id)]
            args += [job.id, job.to_json(), item, job.kind.value, "1" if replace else "0"]
        self._enqueue(keys=script_keys, args=args, client=pipe)

    # -- a worker's side -------------------------------------------------------------------------
    def take(
        self,
        owner: str,
        *,
        max_bytes: int,
        linger_ms: float,
        start: int = 0,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> TakenBatch | float | None:
        """A batch to send, or how long (s) until one may be ready, or None if all are empty."""
        order = [(start + i) % SHARDS for i in range(SHARDS)]
        script_keys = [key for shard in order for key in self.shard_keys(shard)]
        raw = self._pop(
            keys=script_keys,
            args=[owner, int(lease_s * 1000), max_bytes, int(linger_ms), JOB_PREFIX, MAX_SCAN],
        )
        if raw[0] == b"none":
            wait_ms = int(raw[1])
            return None if wait_ms < 0 else wait_ms / 1000
        items = [
            BatchItem(raw[i].decode(), raw[i + 1], int(raw[i + 2])) for i in range(2, len(raw), 3)
        ]
        return TakenBatch(self.api, order[int(raw[1])], items)

    def complete(self, batch: TakenBatch, owner: str) -> int:
        """Forget the batch's jobs (accepted); -1 if this owner lost the shard meanwhile."""
        inflight = keys.batch_inflight(self.api, batch.shard)
        return int(
            self._complete(
                keys=[inflight, keys.stats()], args=[owner, JOB_PREFIX, "track:delivered"]
            )
        )

    def restore(
        self, batch: TakenBatch, owner: str, *, hold_s: float, attempt: bool, error_json: str = ""
    ) -> int:
        """Put the batch back at the front of its shard and hold the shard for `hold_s`."""
        return int(
            self._restore(
                keys=self.shard_keys(batch.shard),
                args=[owner, JOB_PREFIX, int(hold_s * 1000), "1" if attempt else "0", error_json],
            )
        )

    def depth(self) -> int:
        """Jobs waiting in every shard (not counting batches in flight)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(SHARDS):
            pipe.llen(keys.batch_queue(self.api, shard))
        return sum(int(n) for n in pipe.execute())
