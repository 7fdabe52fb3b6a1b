"""What a verified body must be to be stored, and the stored event as readers get it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cio_worker.errors import ValidationError

#: Longest accepted event_id, object_type and metric, characters (event ids are 26-char ULIDs).
MAX_EVENT_ID_CHARS = 200


def parse_event(raw: bytes) -> dict[str, Any]:
    """The event in a verified body: a UTF-8 JSON object with event_id, object_type and metric.

    Anything else is a ValidationError (the receiver's 400), never another exception: a body that
    is not UTF-8 (json.loads would guess UTF-16/32, which the stream cannot hold as sent), nested
    deeper than the parser's recursion limit, or whose ids hold lone surrogates (`"\\ud800"` is
    valid JSON but no UTF-8 string, so Redis could not store it).
    """
    try:
        event = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValidationError("body", "must be UTF-8") from None
    except RecursionError:
        raise ValidationError("body", "is nested too deeply") from None
    except ValueError:
        raise ValidationError("body", "must be JSON") from None
    if not isinstance(event, dict):
        raise ValidationError("body", "must be a JSON object")
    for field in ("event_id", "object_type", "metric"):
        value = event.get(field)
        if not isinstance(value, str) or not 0 < len(value) <= MAX_EVENT_ID_CHARS:
            raise ValidationError(field, f"must be a string of 1 to {MAX_EVENT_ID_CHARS} chars")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(field, "must be valid Unicode (no lone surrogates)") from None
    return event


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One stored event. `body` is the event exactly as Customer.io sent it (personal data:
    handle it as such); `received_at` is when it was stored, Unix seconds."""

    stream_id: str
    event_id: str
    object_type: str
    metric: str
    timestamp: int | None
    received_at: float
    body: dict[str, Any]

    @property
    def data(self) -> dict[str, Any]:
        """The event's `data` object (identifiers, delivery_id, recipient...)."""
        data = self.body.get("data")
        return data if isinstance(data, dict) else {}

    def summary(self) -> dict[str, Any]:
        """Listing fields without personal data: ids, channel, metric, times."""
        return {
            "stream_id": self.stream_id,
            "event_id": self.event_id,
            "object_type": self.object_type,
            "metric": self.metric,
            "timestamp": self.timestamp,
            "received_at": self.received_at,
            "delivery_id": self.data.get("delivery_id"),
        }
