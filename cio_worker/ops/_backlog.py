"""How many jobs wait for a worker, per family: one rule for `cio-worker status`, the console
(which shows the status report) and the Prometheus metrics.

A family's jobs wait in three places before a worker takes them: its Celery queue
(`cio.<family>`), beyond the queue's window in its waiting list (queue/_window.py), and, for the
track family under batching, in the batch shards (queue/_shards.py). Jobs parked while a circuit
is open are not counted here: they wait for Customer.io, not for a worker, and each surface
shows them on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from cio_worker import keys
from cio_worker.config import Settings
from cio_worker.kinds import Family, queue_name
from cio_worker.queue import BatchQueue, batch_api


@dataclass(frozen=True, slots=True)
class Backlog:
    """`waiting`: family -> jobs waiting for a worker; `batched`: how many of track's wait in the
    batch shards, the oldest of them `batched_age_s` old (0 when none)."""

    waiting: dict[str, int]
    batched: int
    batched_age_s: float


def read_backlog(client: redis.Redis, settings: Settings, *, now_s: float | None = None) -> Backlog:
    """Read every family's backlog; raises `redis.RedisError` if Redis cannot be read."""
    families = [family.value for family in Family]
    pipe = client.pipeline(transaction=True)
    for family in families:
        pipe.llen(queue_name(family))
        pipe.llen(keys.waiting(family))
    replies = pipe.execute()
    waiting = {
        family: int(replies[2 * index]) + int(replies[2 * index + 1])
        for index, family in enumerate(families)
    }
    batched, batched_age_s = BatchQueue(client, batch_api(settings)).backlog(now_s)
    waiting[Family.TRACK.value] += batched
    return Backlog(waiting, batched, batched_age_s)
