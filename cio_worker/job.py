"""The job: the frozen record the producer stores, the queue keeps and the worker delivers.

Every stage handles jobs, so the record lives here, below all of them; what each kind's payload
holds is decided by its builder (produce) and sent by its operation (customerio).

A queued job is mostly its stored JSON, so the JSON carries nothing twice: the creation time is
the millisecond inside the job's ULID and is written (`"t"`) only for a job whose id does not
carry it (issue 18: bytes per queued job).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cio_worker import jsonutil
from cio_worker.ids import ulid_time_ms
from cio_worker.kinds import KINDS, Family, Kind


@dataclass(frozen=True, slots=True)
class Job:
    """One unit of delivery. `id` is a ULID, also sent as the event dedup id where one exists."""

    id: str
    kind: Kind
    payload: dict[str, Any]
    created_at: float

    @property
    def family(self) -> Family:
        return self.kind.family

    def to_json(self) -> str:
        # The record with the id first: {"id":..,"kind":..,"payload":..}.
        return f'{{"id":{jsonutil.dumps(self.id)},{self.record_json()[1:].decode()}'

    def record_json(self) -> bytes:
        """The JSON to store under the job's id (which it therefore leaves out)."""
        return encode_record(
            self.kind, jsonutil.dumps_bytes(self.payload), self.created_at, self.id
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Job:
        data = jsonutil.loads(raw)
        return cls.from_record(data["id"], data)

    @classmethod
    def from_record(cls, job_id: str, data: dict[str, Any]) -> Job:
        """The job from its decoded JSON (`kind`, `payload`, maybe `t`; an `id` in it is
        ignored), named `job_id`."""
        created = data.get("t")
        if created is None:
            created = id_time_s(job_id) or 0.0
        # Batch senders read thousands of records a request: a dict lookup, not Kind(...).
        return cls(job_id, KINDS[data["kind"]], data["payload"], created)


#: Each kind's record up to its payload, encoded once.
_RECORD_HEADS = {kind: b'{"kind":"%s","payload":' % kind.value.encode() for kind in Kind}


def encode_record(
    kind: Kind, payload_json: bytes, created_at: float | None = None, job_id: str = ""
) -> bytes:
    """The stored record (`{"kind":..,"payload":..}`) from the payload's JSON, which the bulk
    producer has from validation. With `created_at`, `"t"` is added unless it is the
    millisecond inside `job_id`, as it is for every job a producer makes."""
    record = _RECORD_HEADS[kind] + payload_json
    if created_at is not None and id_time_s(job_id) != _millis(created_at):
        record += b',"t":' + jsonutil.dumps_bytes(created_at)
    return record + b"}"


def id_time_s(job_id: str) -> float | None:
    """The creation time (s, to the millisecond) inside a ULID job id; None for another id."""
    try:
        return ulid_time_ms(job_id) / 1000 if len(job_id) == 26 else None
    except ValueError:
        return None


def _millis(seconds: float) -> float:
    return int(seconds * 1000) / 1000
