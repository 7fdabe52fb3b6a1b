"""The sandbox's workspace: people, segments, campaigns, broadcasts and deliveries for the App API's
read endpoints, generated deterministically in Customer.io's shapes.

Profile attribute values are strings, as Customer.io returns them. Transactional sends accepted by
the sandbox become deliveries (found by `GET /v1/messages/{id}` and listed per transactional message
and per person) and broadcast triggers become triggers (listed per broadcast); each shows in those
reads only once the listing lag has passed since it was accepted, as Customer.io's reads are not
instantly consistent.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
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
#: Broadcast triggers remembered; the oldest are forgotten first.
MAX_TRIGGERS = 10_000
#: The identifiers a delivery reports for its person (`customer_identifiers`).
IDENTIFIER_KEYS = ("id", "email", "cio_id")

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
    """One workspace's read-only data plus the deliveries and triggers the sandbox has accepted.

    `messages` and `triggers` hold Customer.io's shapes, oldest first. `accepted_at` says when
    (on the sandbox clock, `SandboxConfig.clock`) each accepted one arrived, for the listing lag;
    the generated deliveries have no entry and are always visible.
    """

    people: list[dict[str, Any]]
    segments: list[dict[str, Any]]
    campaigns: list[dict[str, Any]]
    broadcasts: list[dict[str, Any]]
    messages: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    triggers: OrderedDict[int, dict[str, Any]] = field(default_factory=OrderedDict)
    accepted_at: dict[str | int, float] = field(default_factory=dict)

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
            **_message_base(
                delivery_id, "email", person["email"], {k: person[k] for k in IDENTIFIER_KEYS}, sent
            ),
            "subject": "Welcome aboard",
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

    def record_delivery(
        self,
        endpoint: str,
        body: object,
        delivery_id: str,
        now: int,
        *,
        accepted_at: float | None = None,
    ) -> None:
        """Remember an accepted transactional send (`now`: Unix seconds; `accepted_at`: the sandbox
        clock, None for visible at once) so its status can be looked up and listed."""
        request = body if isinstance(body, dict) else {}
        identifiers = self._identifiers(request.get("identifiers"))
        kind = _DELIVERY_TYPES.get(endpoint, "email")
        message = _message_base(delivery_id, kind, request.get("to"), identifiers, now)
        message["message_template_id"] = _template_id(request.get("transactional_message_id"))
        subject = request.get("subject")
        message["subject"] = subject if kind == "email" and isinstance(subject, str) else None
        message["metrics"] = {"sent": now}
        self.messages[delivery_id] = message
        self._accepted(delivery_id, accepted_at)
        while len(self.messages) > MAX_DELIVERIES:
            forgotten, _ = self.messages.popitem(last=False)
            self.accepted_at.pop(forgotten, None)

    def record_trigger(
        self, broadcast_id: int, trigger_id: int, now: int, *, accepted_at: float | None = None
    ) -> None:
        """Remember an accepted broadcast trigger (processed at once, as far as reads can tell)."""
        self.triggers[trigger_id] = {
            "id": trigger_id,
            "broadcast_id": broadcast_id,
            "created_at": now,
            "processed_at": now,
        }
        self._accepted(trigger_id, accepted_at)
        while len(self.triggers) > MAX_TRIGGERS:
            forgotten, _ = self.triggers.popitem(last=False)
            self.accepted_at.pop(forgotten, None)

    def visible(self, key: str | int, clock_now: float, lag_s: float) -> bool:
        """Whether delivery or trigger `key` shows in reads at `clock_now` with `lag_s` of lag."""
        accepted_at = self.accepted_at.get(key)
        return accepted_at is None or clock_now >= accepted_at + lag_s

    def visible_messages(self, clock_now: float, lag_s: float) -> list[dict[str, Any]]:
        """Deliveries the reads show now, newest first (by `created`, then latest accepted)."""
        shown = [
            (message["created"], index, message)
            for index, (key, message) in enumerate(self.messages.items())
            if self.visible(key, clock_now, lag_s)
        ]
        shown.sort(key=lambda item: (item[0], item[1]), reverse=True)
        return [message for _, _, message in shown]

    def visible_triggers(
        self, broadcast_id: int, clock_now: float, lag_s: float
    ) -> list[dict[str, Any]]:
        """Triggers of `broadcast_id` the reads show now, newest first."""
        return [
            trigger
            for key, trigger in reversed(self.triggers.items())
            if trigger["broadcast_id"] == broadcast_id and self.visible(key, clock_now, lag_s)
        ]

    def _accepted(self, key: str | int, accepted_at: float | None) -> None:
        if accepted_at is None:
            self.accepted_at.pop(key, None)
        else:
            self.accepted_at[key] = accepted_at

    def _identifiers(self, given: object) -> dict[str, Any]:
        """`customer_identifiers` for a send's `identifiers`: the workspace person's id, email and
        cio_id when the sandbox knows them, else what the send named (the rest null)."""
        if not isinstance(given, Mapping):
            given = {}
        named = {
            k: v for k, v in given.items() if k in IDENTIFIER_KEYS and isinstance(v, str | int)
        }
        for key, value in named.items():
            person = self.find_person(str(value), key)
            if person is not None:
                return {k: person[k] for k in IDENTIFIER_KEYS}
        return {k: None if k not in named else str(named[k]) for k in IDENTIFIER_KEYS}


def _template_id(value: object) -> int | None:
    """The numeric transactional message id of a send; None for a send by trigger name."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _message_base(
    delivery_id: str, kind: str, recipient: object, identifiers: dict[str, Any], now: int
) -> dict[str, Any]:
    """A MessageObject as Customer.io's reads answer it; parents other than the delivery's are
    null."""
    return {
        "id": delivery_id,
        "deduplicate_id": f"{delivery_id}:{now}",
        "message_template_id": None,
        "type": kind,
        "created": now,
        "recipient": recipient,
        "subject": None,
        "customer_id": identifiers.get("id"),
        "customer_identifiers": identifiers,
        "metrics": {},
        "campaign_id": None,
        "broadcast_id": None,
        "action_id": None,
        "newsletter_id": None,
        "content_id": None,
        "failure_message": None,
        "forgotten": False,
    }
