"""Jobs waiting for a time: scheduled retries (`keys.delayed`) and parked jobs (`keys.parked`),
listed for an operator, and made due now on request ("retry now").

A scheduled retry (or rate-limit deferral) waits in `keys.delayed`, scored by its due time; a
parked job waits in its bucket's `keys.parked` set, scored by when it was parked, until the
circuit closes (limiter/_circuit.py). The sweeper (_sweeper.py) pushes whatever is due in
`keys.delayed` back to its queue, with a script that removes the id from the set first, so a job
is pushed once however many sweepers run.

"Retry now" therefore only moves a due time, never pushes a message itself:

- a scheduled retry gets the score "now" (Redis TIME, the clock the sweeper reads) with
  `ZADD XX LT`: one atomic command that changes nothing once the sweeper has taken the id (XX),
  so it never adds a job back, and never delays one that was due sooner (LT);
- a parked job moves from its parked set to `keys.delayed`, due now, as the sweeper's own
  release does (limiter/_circuit.py `release_parked`): in one MULTI under WATCH of the parked
  set, so an id the sweeper released meanwhile is not added twice (the MULTI is refused and the
  ids are looked up again). While its circuit is still open the worker that takes it parks it
  again without spending an attempt; it waits for the circuit like the others.

Either way the sweeper pushes the job within its due interval (0.2 s) and the claim
(_ledger.py) still drops any duplicate message, so a job is delivered once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from cio_worker import keys
from cio_worker.connection import reply_text
from cio_worker.kinds import Kind
from cio_worker.limiter import BUCKETS
from cio_worker.queue._bells import due_bell, ring

#: Ids looked up or moved per round trip.
CHUNK = 500


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    """A job waiting for its time, as an operator sees it (no payload: no personal data).

    `at` is Unix seconds: when a scheduled retry is due, or when a parked job was parked.
    `bucket` is set for a parked job (the circuit it waits for). `kind` and `family` are None
    when the job's record is gone (it ended while being listed).
    """

    id: str
    kind: str | None
    family: str | None
    at: float
    attempts: int
    reason: str | None
    status: int | None
    bucket: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "family": self.family,
            "at": self.at,
            "attempts": self.attempts,
            "reason": self.reason,
            "status": self.status,
            "bucket": self.bucket,
        }


class ScheduledJobs:
    """Scheduled retries and parked jobs: listing, counting, and "retry now"."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self.redis = redis_client

    # -- reading ---------------------------------------------------------------------------------
    def count_retries(self) -> int:
        return int(self.redis.zcard(keys.delayed()))

    def count_parked(self) -> dict[str, int]:
        """Parked jobs per circuit bucket."""
        pipe = self.redis.pipeline(transaction=False)
        for bucket in BUCKETS:
            pipe.zcard(keys.parked(bucket))
        return {bucket: int(count) for bucket, count in zip(BUCKETS, pipe.execute(), strict=True)}

    def retries(self, *, limit: int = 50, offset: int = 0) -> list[ScheduledJob]:
        """Scheduled retries and deferrals, soonest due first."""
        if limit <= 0:
            return []
        scored = self.redis.zrange(keys.delayed(), offset, offset + limit - 1, withscores=True)
        return self._describe(_pairs(scored), None)

    def parked(self, *, limit: int = 50, offset: int = 0) -> list[ScheduledJob]:
        """Parked jobs, bucket by bucket (BUCKETS' order), longest parked first in each."""
        found: list[ScheduledJob] = []
        for bucket, count in self.count_parked().items():
            if limit - len(found) <= 0:
                break
            if offset >= count:
                offset -= count
                continue
            stop = offset + (limit - len(found)) - 1
            scored = self.redis.zrange(keys.parked(bucket), offset, stop, withscores=True)
            found += self._describe(_pairs(scored), bucket)
            offset = 0
        return found

    def _describe(self, scored: list[tuple[str, float]], bucket: str | None) -> list[ScheduledJob]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id, _ in scored:
            pipe.hmget(keys.job(job_id), "kind", "attempts", "last_error")
        jobs = []
        for (job_id, score), (kind, attempts, last_error) in zip(
            scored, pipe.execute(), strict=True
        ):
            error = _error(last_error)
            kind_name = reply_text(kind) if kind else None
            jobs.append(
                ScheduledJob(
                    id=job_id,
                    kind=kind_name,
                    family=_family(kind_name),
                    at=score / 1000,
                    attempts=int(attempts or 0),
                    reason=error.get("reason"),
                    status=error.get("status"),
                    bucket=bucket,
                )
            )
        return jobs

    # -- retry now -------------------------------------------------------------------------------
    def retry_now(self, job_ids: Iterable[str]) -> int:
        """Make these scheduled retries and parked jobs due now; return how many were found
        waiting (ids that are neither, e.g. already pushed, are left alone)."""
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return 0
        now_ms = self._now_ms()
        done = 0
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            done += self._retries_due(chunk, now_ms)
            for bucket in BUCKETS:
                done += self._unpark(bucket, chunk, now_ms)
        return done

    def _now_ms(self) -> int:
        seconds, micros = self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def _retries_due(self, job_ids: list[str], now_ms: int) -> int:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zmscore(keys.delayed(), job_ids)
        # XX: only ids still waiting (the sweeper may have taken one); LT: never later than due.
        pipe.zadd(keys.delayed(), dict.fromkeys(job_ids, now_ms), xx=True, lt=True)
        ring(pipe, due_bell())  # a sweeper asleep until a later due time looks now
        scores, *_ = pipe.execute()
        return sum(score is not None for score in scores)

    def _unpark(self, bucket: str, job_ids: list[str], now_ms: int) -> int:
        """Move those of `job_ids` parked under `bucket` to the due set, in one transaction."""
        parked = keys.parked(bucket)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(parked)  # type: ignore[no-untyped-call]
                    scores = pipe.zmscore(parked, job_ids)
                    present = [i for i, s in zip(job_ids, scores, strict=True) if s is not None]
                    if not present:
                        pipe.unwatch()
                        return 0
                    pipe.multi()
                    pipe.zrem(parked, *present)
                    pipe.zadd(keys.delayed(), dict.fromkeys(present, now_ms))
                    ring(pipe, due_bell())
                    pipe.execute()
                    return len(present)
                except redis.WatchError:
                    continue  # the sweeper released or a worker parked meanwhile: look again


def _pairs(scored: Any) -> list[tuple[str, float]]:
    """ZRANGE ... WITHSCORES as (id, score) pairs."""
    return [(reply_text(item), float(score)) for item, score in scored]


def _error(raw: object) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        error = json.loads(reply_text(raw))
    except ValueError:
        return {}
    return error if isinstance(error, dict) else {}


def _family(kind: str | None) -> str | None:
    try:
        return Kind(kind).family.value if kind else None
    except ValueError:
        return None
