"""Receipts: what Customer.io returned for each message it accepted (delivery id, trigger id).

Transactional sends and broadcast triggers carry no dedup key, so after an ambiguous failure the
worker asks Customer.io what it sent (worker/_reconcile.py) and must tell *this* job's delivery
from the deliveries of other jobs. Every accepted message therefore leaves a receipt, written with
the job's end in one script (`JobLedger.complete`):

- `keys.receipts()`: job id -> JSON {job, kind, family, remote_id, at, via};
- `keys.receipt_owners()`: `<family>:<remote id>` -> job id, the reverse look-up;
- `keys.receipt_index()`: job ids by time, so receipts older than
  `CIO_WORKER_RECEIPT_RETENTION_DAYS` are trimmed (by the sweeper).

`via` is `send` (Customer.io answered the send) or `reconciled` (the answer was lost and the
delivery was found by asking).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from cio_worker import keys


@dataclass(frozen=True, slots=True)
class Receipt:
    job_id: str
    kind: str
    family: str
    #: Customer.io's id: a transactional `delivery_id`, or a broadcast trigger's `id`.
    remote_id: str
    #: Unix seconds it was recorded.
    at: float
    via: str = "send"

    def to_json(self) -> str:
        return json.dumps(
            {
                "job": self.job_id,
                "kind": self.kind,
                "family": self.family,
                "remote_id": self.remote_id,
                "at": self.at,
                "via": self.via,
            }
        )

    def owner_field(self) -> str:
        return owner_field(self.family, self.remote_id)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Receipt:
        data = json.loads(raw)
        return cls(
            job_id=data["job"],
            kind=data["kind"],
            family=data["family"],
            remote_id=data["remote_id"],
            at=float(data["at"]),
            via=data.get("via", "send"),
        )


def owner_field(family: str, remote_id: str) -> str:
    return f"{family}:{remote_id}"


def remote_id_of(family: str, body: Any) -> str | None:
    """The id Customer.io returned in a 2xx answer: `delivery_id` of a send, `id` of a trigger."""
    if not isinstance(body, dict):
        return None
    value = body.get("delivery_id") if family == "transactional" else body.get("id")
    return None if value is None else str(value)


class ReceiptBook:
    """Reads and trims the receipts (they are written by `JobLedger.complete`)."""

    def __init__(self, redis_client: redis.Redis, *, retention_days: float = 7.0) -> None:
        self.redis = redis_client
        self.retention_s = retention_days * 86_400

    def get(self, job_id: str) -> Receipt | None:
        raw = self.redis.hget(keys.receipts(), job_id)
        return Receipt.from_json(raw) if raw else None

    def owners(self, family: str, remote_ids: Iterable[str]) -> dict[str, str]:
        """Remote id -> the job it was recorded for, for those recorded at all."""
        ids = list(remote_ids)
        if not ids:
            return {}
        found = self.redis.hmget(keys.receipt_owners(), [owner_field(family, i) for i in ids])
        return {
            remote: raw.decode() if isinstance(raw, bytes) else str(raw)
            for remote, raw in zip(ids, found, strict=True)
            if raw is not None
        }

    def trim(self, now_s: float | None = None, *, limit: int = 1000) -> int:
        """Drop receipts older than the retention; return how many went."""
        cutoff = (time.time() if now_s is None else now_s) - self.retention_s
        old = self.redis.zrangebyscore(keys.receipt_index(), "-inf", cutoff, start=0, num=limit)
        if not old:
            return 0
        job_ids = [item.decode() if isinstance(item, bytes) else str(item) for item in old]
        raw = self.redis.hmget(keys.receipts(), job_ids)
        owners = [Receipt.from_json(r).owner_field() for r in raw if r]
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(keys.receipts(), *job_ids)
        pipe.zrem(keys.receipt_index(), *job_ids)
        if owners:
            pipe.hdel(keys.receipt_owners(), *owners)
        pipe.execute()
        return len(job_ids)
