"""The dead-letter queue: jobs that cannot be delivered, kept in Redis for an operator.

Each entry keeps the job (id, kind, payload), its attempts and its first and last error. Entries
older than CIO_WORKER_DLQ_RETENTION_DAYS are trimmed whenever a new one arrives. Replay puts a
job back in its queue with attempts reset and the same id, so event dedup still holds.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import redis

from cio_worker import keys
from cio_worker.config import Settings
from cio_worker.connection import reply_text
from cio_worker.job import Job
from cio_worker.kinds import Family, Kind
from cio_worker.queue._ledger import ErrorRecord

# `DeadLetterStore.list` shadows the builtin inside the class body.
_List = list


@dataclass(frozen=True, slots=True)
class DeadLetter:
    job: Job
    attempts: int
    reason: str
    status: int | None
    first_error: dict[str, Any]
    last_error: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """The `dlq list --json` object: no payload, so a listing shows no personal data."""
        return {
            "id": self.job.id,
            "kind": self.job.kind.value,
            "family": self.job.family.value,
            "attempts": self.attempts,
            "status": self.status,
            "reason": self.reason,
            "first_failed_at": self.first_error.get("at"),
            "last_failed_at": self.last_error.get("at"),
        }

    def detail(self) -> dict[str, Any]:
        """The `dlq show --json` object: the summary plus payload and error history."""
        return {
            **self.summary(),
            "payload": self.job.payload,
            "errors": [self.first_error, self.last_error],
        }


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which dead letters an operator means: the one filter of `dlq list/replay/purge` and of
    the console. Every field left None matches everything.

    `status`: the HTTP status of the last failure (0 matches letters that never got an answer:
    timeouts, connection errors, bugs). `reason`: text the reason contains, case-insensitive.
    `older_than_s` / `newer_than_s`: age since the job was dead-lettered.
    """

    kind: Kind | None = None
    family: Family | None = None
    status: int | None = None
    reason: str | None = None
    older_than_s: float | None = None
    newer_than_s: float | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.kind is not None and letter.job.kind != self.kind:
            return False
        if self.family is not None and letter.job.family != self.family:
            return False
        if self.status is not None and (letter.status or 0) != self.status:
            return False
        return self.reason is None or self.reason.casefold() in letter.reason.casefold()

    def age_bounds(self, now: float) -> tuple[float | str, float | str]:
        """The dead-letter index's score range (dead-lettered at) this filter allows."""
        low: float | str = "-inf" if self.newer_than_s is None else now - self.newer_than_s
        high: float | str = "+inf" if self.older_than_s is None else now - self.older_than_s
        return low, high


EVERY_LETTER = LetterFilter()

#: Seconds per unit of a dead letter's age (`90s`, `30m`, `2h`, `7d`, `1w`): one grammar for the
#: CLI's `--older-than` and the console's "dead for over".
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
AGE_RULE = "a number and a unit s, m, h, d or w (90s, 30m, 2h, 7d)"
STATUS_RULE = "an HTTP status 100-599, or 0 for no answer (timeouts, refusals)"
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_age(text: str) -> float:
    """`30m` -> 1800.0 seconds; ValueError stating `AGE_RULE` otherwise."""
    match = _AGE.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not {AGE_RULE}")
    return float(match.group(1)) * AGE_UNITS[match.group(2)]


def parse_status(text: str) -> int:
    """The `status` a filter takes: 100-599, or 0; ValueError stating `STATUS_RULE` otherwise."""
    raw = text.strip()
    if not (raw.isascii() and raw.isdigit()) or not (int(raw) == 0 or 100 <= int(raw) <= 599):
        raise ValueError(f"{text!r} is not {STATUS_RULE}")
    return int(raw)


class DeadLetterStore:
    def __init__(self, redis_client: redis.Redis, *, retention_days: float = 30.0) -> None:
        self.redis = redis_client
        self.retention_s = retention_days * 86_400

    def add(
        self,
        job: Job,
        attempts: int,
        error: ErrorRecord,
        first_error: dict[str, Any] | None,
        *,
        pipe: redis.client.Pipeline | None = None,
    ) -> None:
        """Move a job from the ledger to the dead-letter queue in one transaction.

        With `pipe`, the commands are only queued there (the caller adds its own and executes).
        """
        entry = {
            "job": json.loads(job.to_json()),
            "attempts": attempts,
            "reason": error.reason,
            "status": error.status,
            "first_error": first_error or error.to_dict(),
            "last_error": error.to_dict(),
        }
        own = pipe is None
        pipe = pipe if pipe is not None else self.redis.pipeline(transaction=True)
        pipe.hset(keys.dead_letters(), job.id, json.dumps(entry))
        pipe.zadd(keys.dead_letter_index(), {job.id: error.at})
        pipe.delete(keys.job(job.id))
        # Out of every ledger index too, or the reaper would look for it.
        pipe.zrem(keys.leases(), job.id)
        pipe.zrem(keys.delayed(), job.id)
        pipe.zrem(keys.unclaimed(job.family.value), job.id)
        pipe.hincrby(keys.stats(), f"{job.family.value}:dead", 1)
        if own:
            pipe.execute()
            self.trim(error.at)

    def trim(self, now: float) -> None:
        """Drop entries older than the retention."""
        expired = self.redis.zrangebyscore(keys.dead_letter_index(), "-inf", now - self.retention_s)
        if expired:
            self._remove([reply_text(item) for item in expired])

    def get(self, job_id: str) -> DeadLetter | None:
        raw = self.redis.hget(keys.dead_letters(), job_id)
        return _decode(raw) if raw else None

    def list(self, *, kind: str | None = None, limit: int | None = None) -> _List[DeadLetter]:
        """Oldest first, optionally only one kind."""
        letters = LetterFilter(kind=Kind(kind) if kind is not None else None)
        return self.select(letters, limit=limit)

    def select(
        self, letters: LetterFilter = EVERY_LETTER, *, limit: int | None = None, offset: int = 0
    ) -> _List[DeadLetter]:
        """The dead letters `letters` matches, oldest first: `limit` of them after skipping
        `offset` matches (a page of a listing)."""
        result: _List[DeadLetter] = []
        skipped = 0
        for letter in self._scan(letters):
            if skipped < offset:
                skipped += 1
                continue
            if limit is not None and len(result) >= limit:
                break
            result.append(letter)
        return result

    def count_matching(self, letters: LetterFilter = EVERY_LETTER) -> int:
        if letters == EVERY_LETTER:
            return self.count()
        return sum(1 for _ in self._scan(letters))

    def matching_ids(self, letters: LetterFilter = EVERY_LETTER) -> _List[str]:
        return [letter.job.id for letter in self._scan(letters)]

    def _scan(self, letters: LetterFilter) -> Iterator[DeadLetter]:
        """Matching letters, oldest first, read 500 at a time (age narrows the index first)."""
        low, high = letters.age_bounds(time.time())
        ids = [
            reply_text(item)
            for item in self.redis.zrangebyscore(keys.dead_letter_index(), low, high)
        ]
        for start in range(0, len(ids), 500):
            chunk: _List[bytes | None] = self.redis.hmget(
                keys.dead_letters(), ids[start : start + 500]
            )  # type: ignore[assignment]
            for raw in chunk:
                if raw and letters.matches(letter := _decode(raw)):
                    yield letter

    def count(self) -> int:
        return int(self.redis.zcard(keys.dead_letter_index()))

    def all_ids(self) -> _List[str]:
        return [reply_text(item) for item in self.redis.zrange(keys.dead_letter_index(), 0, -1)]

    def replay(
        self,
        job_ids: Iterable[str],
        *,
        settings: Settings | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> _List[str]:
        """Re-enqueue dead letters (attempts reset, same id); return the ids replayed.

        A job goes where a new one of its kind would (a batch shard or its Celery queue), as
        `settings` (default: from the environment) decide. `progress` is called with 1 after
        each id (replayed or gone), for a progress bar.
        """
        from cio_worker.queue._routing import (
            Router,  # routing imports the ledger, as this module does
        )

        router = Router(settings or Settings.from_env(), self.redis)
        done: _List[str] = []
        for job_id in job_ids:
            if self._replay_one(router, job_id):
                done.append(job_id)
            if progress is not None:
                progress(1)
        return done

    def _replay_one(self, router: Any, job_id: str) -> bool:
        """Move one dead letter back to its queue, exactly once however many replay at once.

        An optimistic transaction: WATCH the entries, read the letter, then queue the job and
        delete the letter in one MULTI. If anything changed the entries meanwhile (another
        replay of it, a purge, a new dead letter) the MULTI is refused and we look again, so
        two concurrent replays never both queue it (which would send a message twice).
        """
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(keys.dead_letters())  # type: ignore[no-untyped-call]
                    raw = pipe.hget(keys.dead_letters(), job_id)
                    if raw is None:
                        pipe.unwatch()
                        return False
                    letter = _decode(raw)
                    pipe.multi()
                    router.store([letter.job], replace=True, pipe=pipe)
                    pipe.hdel(keys.dead_letters(), job_id)
                    pipe.zrem(keys.dead_letter_index(), job_id)
                    pipe.hincrby(keys.stats(), f"{letter.job.family.value}:replayed", 1)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def purge(self, job_ids: Iterable[str]) -> int:
        """Delete dead letters for good; return how many existed."""
        return self._remove(list(job_ids))

    def _remove(self, job_ids: _List[str]) -> int:
        if not job_ids:
            return 0
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(keys.dead_letters(), *job_ids)
        pipe.zrem(keys.dead_letter_index(), *job_ids)
        return int(pipe.execute()[0])


def _decode(raw: bytes | str) -> DeadLetter:
    data = json.loads(raw)
    job = data["job"]
    return DeadLetter(
        job=Job.from_json(json.dumps(job)),
        attempts=data["attempts"],
        reason=data["reason"],
        status=data["status"],
        first_error=data["first_error"],
        last_error=data["last_error"],
    )
