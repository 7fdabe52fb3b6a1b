"""The App API's answers as typed results: what `AppClient`'s reads return.

Plain frozen dataclasses, built by _parsers.py from Customer.io's JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PersonRef:
    """One person a search matched, by Customer.io's identifiers (any may be unset but cio_id)."""

    cio_id: str | None
    id: str | None
    email: str | None


@dataclass(frozen=True, slots=True)
class Device:
    """A person's mobile device; `last_used` in Unix seconds."""

    id: str
    platform: str | None
    last_used: int | None


@dataclass(frozen=True, slots=True)
class Person:
    """A profile: identifiers, attributes (Customer.io keeps their values as strings), the Unix
    time each attribute was last set, subscription state and devices."""

    cio_id: str | None
    id: str | None
    email: str | None
    attributes: dict[str, Any]
    timestamps: dict[str, int]
    unsubscribed: bool
    devices: tuple[Device, ...]


@dataclass(frozen=True, slots=True)
class Segment:
    """A segment; `state` is its build state (`finished` when done), `progress` a percentage."""

    id: int
    name: str
    description: str | None
    type: str | None
    state: str | None
    progress: int | None
    tags: tuple[str, ...]
    created_at: int | None
    updated_at: int | None


@dataclass(frozen=True, slots=True)
class Campaign:
    """A campaign; `state` is running, draft or stopped; times in Unix seconds."""

    id: int
    name: str
    state: str | None
    active: bool | None
    type: str | None
    created: int | None
    updated: int | None
    first_started: int | None
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Broadcast:
    """An API-triggered broadcast; times in Unix seconds."""

    id: int
    name: str
    state: str | None
    active: bool | None
    created: int | None
    updated: int | None
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CampaignMetrics:
    """Counts per metric (sent, delivered, opened, bounced...), one per period of `res`,
    oldest first."""

    campaign_id: int
    res: str
    series: dict[str, tuple[int, ...]]

    @property
    def totals(self) -> dict[str, int]:
        """Each metric summed over all periods."""
        return {metric: sum(counts) for metric, counts in self.series.items()}


#: A delivery's metrics from first to last reached; `status` is the latest (ties go later).
DELIVERY_METRICS = (
    "created", "drafted", "attempted", "sent", "delivered", "opened", "clicked", "converted",
    "unsubscribed", "dropped", "suppressed", "deferred", "undeliverable", "failed", "bounced",
    "spammed",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message sent to one person; `metrics` maps each metric reached to its Unix time."""

    id: str
    status: str | None
    type: str | None
    recipient: str | None
    customer_id: str | None
    campaign_id: int | None
    broadcast_id: int | None
    action_id: int | None
    created: int | None
    metrics: dict[str, int]
    failure_message: str | None
    forgotten: bool
    #: The transactional message (template) it was sent from, if any.
    template_id: int | None = None
    #: The person's identifiers as Customer.io recorded them (`id`, `email`, `cio_id`).
    identifiers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Trigger:
    """One trigger of an API broadcast; times in Unix seconds."""

    id: str
    broadcast_id: int | None
    created_at: int | None
    processed_at: int | None


def delivery_status(metrics: Mapping[str, int]) -> str | None:
    """The metric reached last; on equal times the one later in a delivery's life."""
    rank = {name: index for index, name in enumerate(DELIVERY_METRICS)}
    if not metrics:
        return None
    return max(metrics, key=lambda name: (metrics[name], rank.get(name, -1)))
