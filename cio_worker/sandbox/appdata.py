"""The sandbox's workspace: people, segments, campaigns, broadcasts and deliveries for the App API's
read endpoints, generated deterministically in Customer.io's shapes.

Profile attribute values are strings, as Customer.io returns them. Transactional sends accepted by
the sandbox become deliveries that `GET /v1/messages/{id}` finds.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

#: Default workspace size: enough people for a search to span several pages of 50.
DEFAULT_PEOPLE = 120
DEFAULT_CAMPAIGNS = 4
DEFAULT_BROADCASTS = 3
#: Most people, segments, campaigns or broadcasts one seed may ask for.
MAX_SEED = 100_000
#: Deliveries remembered; the oldest are forgotten first (a long demo sends many).
MAX_DELIVERIES = 100_000

_FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Dennis")
_PLANS = ("free", "pro", "team")
#: Built-in segments 1-5: (name, type); `_person` decides who belongs. Later ones are empty.
_SEGMENTS = (
    ("All people", "dynamic"),
    ("Pro plan", "dynamic"),
    ("Team plan", "dynamic"),
    ("Unsubscribed", "dynamic"),
    ("Beta testers", "manual"),
)
_CAMPAIGN_STATES = ("running", "running", "draft", "stopped")
#: Metrics a campaign reports, each as a fraction of `sent` (rough, but plausible).
_METRIC_SHARES = {
    "attempted": 1.0,
    "sent": 1.0,
    "delivered": 0.97,
    "opened": 0.45,
    "clicked": 0.12,
    "converted": 0.03,
    "bounced": 0.02,
    "spammed": 0.002,
    "unsubscribed": 0.005,
    "failed": 0.01,
    "undeliverable": 0.004,
}
#: Transactional channels as Customer.io names the delivery type.
_DELIVERY_TYPES = {"send_email": "email", "send_push": "push", "send_sms": "twilio"}


def _person(number: int, now: int) -> dict[str, Any]:
    plan = _PLANS[number % len(_PLANS)]
    created = now - number * 3600
    person_id = f"user-{number}"
    email = f"person{number}@example.com"
    cio_id = f"{0xA3000000 + number:x}"
    unsubscribed = number % 17 == 0
    attributes = {
        "id": person_id,
        "email": email,
        "cio_id": cio_id,
        "first_name": _FIRST_NAMES[number % len(_FIRST_NAMES)],
        "plan": plan,
        "created_at": str(created),
        "unsubscribed": "true" if unsubscribed else "false",
    }
    segments = [1]
    segments += [2] if plan == "pro" else [3] if plan == "team" else []
    segments += [4] if unsubscribed else []
    segments += [5] if number % 5 == 0 else []
    devices = []
    if number % 4 == 0:
        platform = "ios" if number % 8 == 0 else "android"
        devices.append({"id": f"device-{number}", "platform": platform, "last_used": now - 60})
    return {
        "id": person_id,
        "email": email,
        "cio_id": cio_id,
        "attributes": attributes,
        "timestamps": {name: created for name in attributes},
        "unsubscribed": unsubscribed,
        "devices": devices,
        "segments": segments,
    }


def _segment(number: int, now: int) -> dict[str, Any]:
    name, kind = (
        _SEGMENTS[number - 1] if number <= len(_SEGMENTS) else (f"Segment {number}", "manual")
    )
    updated = now - number * 86_400
    return {
        "id": number,
        "deduplicate_id": f"{number}:{updated}",
        "name": name,
        "description": f"{name} (sandbox)",
        "state": "finished",
        "progress": None,
        "type": kind,
        "tags": ["sandbox"] if number % 2 else None,
        "created_at": updated - 86_400,
        "updated_at": updated,
    }


def _campaign(number: int, now: int) -> dict[str, Any]:
    state = _CAMPAIGN_STATES[(number - 1) % len(_CAMPAIGN_STATES)]
    updated = now - number * 7200
    return {
        "id": number,
        "deduplicate_id": f"{number}:{updated}",
        "name": f"Onboarding {number}" if number % 2 else f"Win-back {number}",
        "description": "",
        "type": "segment" if number % 2 else "event",
        "created": updated - 30 * 86_400,
        "updated": updated,
        "active": state == "running",
        "state": state,
        "actions": [{"type": "email", "id": number * 100 + step} for step in (1, 2)],
        "first_started": None if state == "draft" else updated - 29 * 86_400,
        "tags": ["sandbox", "lifecycle"],
        "trigger_segment_ids": [1],
        "filter_segment_ids": [],
    }


def _broadcast(number: int, now: int) -> dict[str, Any]:
    updated = now - number * 3600
    return {
        "id": number,
        "deduplicate_id": f"{number}:{updated}",
        "name": f"Announcement {number}",
        "type": "triggered_broadcast",
        "created": updated - 86_400,
        "updated": updated,
        "active": True,
        "state": "running",
        "actions": [{"type": "email", "id": 1000 + number}],
        "tags": ["sandbox"],
    }


def campaign_series(campaign_id: int, periods: int) -> dict[str, list[int]]:
    """Per-metric counts for `periods` periods, oldest first, the same on every call."""
    sent = [40 + (campaign_id * 37 + index * 11) % 60 for index in range(periods)]
    return {
        metric: [round(count * share) for count in sent] for metric, share in _METRIC_SHARES.items()
    }


@dataclass
class AppData:
    """One workspace's read-only data plus the deliveries the sandbox has accepted."""

    people: list[dict[str, Any]]
    segments: list[dict[str, Any]]
    campaigns: list[dict[str, Any]]
    broadcasts: list[dict[str, Any]]
    messages: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)

    @classmethod
    def generate(
        cls,
        *,
        people: int = DEFAULT_PEOPLE,
        segments: int = len(_SEGMENTS),
        campaigns: int = DEFAULT_CAMPAIGNS,
        broadcasts: int = DEFAULT_BROADCASTS,
        now: int | None = None,
    ) -> AppData:
        """A workspace of the given size; `now` (Unix seconds) anchors every timestamp."""
        at = int(time.time()) if now is None else now
        data = cls(
            people=[_person(number, at) for number in range(1, people + 1)],
            segments=[_segment(number, at) for number in range(1, segments + 1)],
            campaigns=[_campaign(number, at) for number in range(1, campaigns + 1)],
            broadcasts=[_broadcast(number, at) for number in range(1, broadcasts + 1)],
        )
        for person in data.people[:10]:
            data._seed_delivery(person, at)
        return data

    def _seed_delivery(self, person: dict[str, Any], now: int) -> None:
        number = int(person["id"].split("-")[1])
        sent = now - number * 600
        metrics = {"sent": sent, "delivered": sent + 5}
        failure = None
        if number == 3:
            metrics = {"sent": sent, "bounced": sent + 5}
            failure = "550 5.1.1 mailbox does not exist"
        elif number % 2 == 0:
            metrics["opened"] = sent + 300
        delivery_id = f"sandbox-delivery-{number}"
        self.messages[delivery_id] = {
            **_message_base(delivery_id, "email", person["email"], {"id": person["id"]}, sent),
            "campaign_id": 1,
            "action_id": 101,
            "metrics": metrics,
            "failure_message": failure,
        }

    def find_person(self, value: str, id_type: str) -> dict[str, Any] | None:
        """The person whose `id_type` (id, email, cio_id) is `value`; emails ignore case."""
        if id_type == "email":
            wanted = value.lower()
            return next((p for p in self.people if p["email"].lower() == wanted), None)
        return next((p for p in self.people if p[id_type] == value), None)

    def record_delivery(self, endpoint: str, body: object, delivery_id: str, now: int) -> None:
        """Remember an accepted transactional send so its status can be looked up."""
        request = body if isinstance(body, dict) else {}
        identifiers = request.get("identifiers")
        identifiers = identifiers if isinstance(identifiers, dict) else {}
        message = _message_base(
            delivery_id, _DELIVERY_TYPES.get(endpoint, "email"), request.get("to"), identifiers, now
        )
        message_id = request.get("transactional_message_id")
        message["transactional_message_id"] = message_id
        message["metrics"] = {"sent": now}
        self.messages[delivery_id] = message
        while len(self.messages) > MAX_DELIVERIES:
            self.messages.popitem(last=False)


def _message_base(
    delivery_id: str, kind: str, recipient: object, identifiers: dict[str, Any], now: int
) -> dict[str, Any]:
    return {
        "id": delivery_id,
        "deduplicate_id": f"{delivery_id}:{now}",
        "type": kind,
        "created": now,
        "recipient": recipient,
        "customer_id": identifiers.get("id"),
        "customer_identifiers": identifiers,
        "campaign_id": None,
        "broadcast_id": None,
        "action_id": None,
        "newsletter_id": None,
        "failure_message": None,
        "forgotten": False,
    }
