"""The job: the frozen record the producer stores, the queue keeps and the worker delivers.

Every stage handles jobs, so the record lives here, below all of them; what each kind's payload
holds is decided by its builder (produce) and sent by its operation (customerio).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cio_worker import jsonutil
from cio_worker.kinds import Family, Kind


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
        return jsonutil.dumps(
            {"id": self.id, "kind": self.kind.value, "payload": self.payload, "t": self.created_at}
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Job:
        data = json.loads(raw)
        return cls(
            id=data["id"], kind=Kind(data["kind"]), payload=data["payload"], created_at=data["t"]
        )
