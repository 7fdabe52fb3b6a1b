"""Reporting webhooks as Customer.io sends them: build events, sign them, POST them to a URL.

Signature (reporting-webhooks spec, "Securely verifying requests"): `X-CIO-Timestamp` is the Unix
time of sending, `X-CIO-Signature` the hex HMAC-SHA256 of `v0:<timestamp>:<raw body>` keyed with
the workspace's webhook signing key. Signing is written out here on purpose, not imported from
cio_worker.webhooks._store, so the receiver is checked against an independent implementation.

`POST /_sandbox/webhooks/send` takes a `SendSpec` as JSON; tests can also call `send_webhooks`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from cio_worker.errors import CioWorkerError
from cio_worker.ids import new_ulid

#: Channels (object_type) a reporting webhook can be about.
OBJECT_TYPES = ("customer", "email", "sms", "push", "in_app", "slack", "webhook", "whatsapp")
#: Most events or repeats one request may ask for.
MAX_EVENTS = 1000
MAX_REPEAT = 10
#: Customer.io gives a webhook endpoint 4 seconds to answer.
DEFAULT_TIMEOUT_S = 4.0

_SPEC_KEYS = frozenset(
    {"url", "metric", "object_type", "count", "events", "signature", "timestamp_offset_s", "repeat"}
)


class WebhookSpecError(CioWorkerError, ValueError):
    """A request to /_sandbox/webhooks/send is invalid; the message names the field."""


@dataclass(frozen=True)
class SendSpec:
    """What to send.

    Attributes:
        url: where to POST (http or https).
        events: the events to send, one request each (built from metric/object_type if not given).
        signature: "valid", "bad" (signed with another key) or "missing" (no signature headers).
        timestamp_offset_s: added to the current time in X-CIO-Timestamp (-600: ten minutes old).
        repeat: how many times each identical signed request is sent (Customer.io retries).
    """

    url: str
    events: list[dict[str, Any]] = field(default_factory=list)
    signature: str = "valid"
    timestamp_offset_s: int = 0
    repeat: int = 1


def sign(key: str, timestamp: int | str, body: bytes) -> str:
    """The X-CIO-Signature of `body` sent at `timestamp`."""
    message = b"v0:" + str(timestamp).encode() + b":" + body
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def build_event(
    metric: str = "delivered", object_type: str = "email", *, index: int = 1
) -> dict[str, Any]:
    """One reporting-webhook event in the spec's shape, with a fresh ULID `event_id`."""
    now = int(time.time())
    identifiers = {
        "id": f"user-{index}",
        "email": f"person{index}@example.com",
        "cio_id": f"{0xA3000000 + index:x}",
    }
    event: dict[str, Any] = {
        "event_id": new_ulid(),
        "object_type": object_type,
        "metric": metric,
        "timestamp": now,
    }
    if object_type == "customer":
        event["data"] = {
            "customer_id": identifiers["id"],
            "email_address": identifiers["email"],
            "identifiers": identifiers,
        }
        return event
    data: dict[str, Any] = {
        "action_id": 42,
        "campaign_id": 7,
        "customer_id": identifiers["id"],
        "delivery_id": f"sandbox-delivery-{index}",
        "identifiers": identifiers,
    }
    if object_type == "push":
        data["recipients"] = [{"device_id": f"device-{index}", "device_platform": "ios"}]
    else:
        phone = object_type in ("sms", "whatsapp")
        data["recipient"] = "+15551234567" if phone else identifiers["email"]
    if object_type == "email":
        data["subject"] = "Welcome aboard"
    if metric in ("bounced", "failed", "dropped", "undeliverable"):
        data["failure_message"] = "550 5.1.1 mailbox does not exist"
    event["data"] = data
    return event


def parse_send_spec(spec: object) -> SendSpec:
    """A SendSpec from JSON; WebhookSpecError names the field at fault."""
    if not isinstance(spec, dict):
        raise WebhookSpecError("body must be a JSON object")
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise WebhookSpecError(f"unknown keys: {', '.join(unknown)}")
    url = spec.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookSpecError("url must be an http(s) URL")
    signature = spec.get("signature", "valid")
    if signature not in ("valid", "bad", "missing"):
        raise WebhookSpecError("signature must be valid, bad or missing")
    return SendSpec(
        url=str(url),
        events=_events(spec),
        signature=signature,
        timestamp_offset_s=_int(spec, "timestamp_offset_s", -86_400, 86_400, 0),
        repeat=_int(spec, "repeat", 1, MAX_REPEAT, 1),
    )


def _events(spec: dict[str, Any]) -> list[dict[str, Any]]:
    if "events" in spec:
        events = spec["events"]
        if not isinstance(events, list) or not events or len(events) > MAX_EVENTS:
            raise WebhookSpecError(f"events must be a list of 1 to {MAX_EVENTS} objects")
        if not all(isinstance(event, dict) for event in events):
            raise WebhookSpecError("events must be a list of objects")
        return events
    metric = spec.get("metric", "delivered")
    if not isinstance(metric, str) or not 0 < len(metric) <= 64:
        raise WebhookSpecError("metric must be a non-empty string")
    object_type = spec.get("object_type", "email")
    if object_type not in OBJECT_TYPES:
        raise WebhookSpecError(f"object_type must be one of {', '.join(OBJECT_TYPES)}")
    count = _int(spec, "count", 1, MAX_EVENTS, 1)
    return [build_event(metric, object_type, index=index) for index in range(1, count + 1)]


def _int(spec: dict[str, Any], key: str, low: int, high: int, default: int) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise WebhookSpecError(f"{key} must be an integer from {low} to {high}")
    return value


async def send_webhooks(
    spec: SendSpec, key: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[dict[str, Any]]:
    """POST each event (`repeat` times), signed as the spec says; one result per request."""
    results: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
        for event in spec.events:
            body = json.dumps(event, separators=(",", ":")).encode()
            headers = _headers(spec, key, body)
            for _ in range(spec.repeat):
                results.append(await _post(client, spec.url, body, headers, event))
    return results


def _headers(spec: SendSpec, key: str, body: bytes) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "Customer.io Sandbox Webhooks"}
    if spec.signature == "missing":
        return headers
    timestamp = int(time.time()) + spec.timestamp_offset_s
    signing_key = key if spec.signature == "valid" else key + "-forged"
    headers["X-CIO-Timestamp"] = str(timestamp)
    headers["X-CIO-Signature"] = sign(signing_key, timestamp, body)
    return headers


async def _post(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str], event: dict[str, Any]
) -> dict[str, Any]:
    result: dict[str, Any] = {"event_id": event.get("event_id"), "status": None, "error": None}
    try:
        response = await client.post(url, content=body, headers=headers)
        result["status"] = response.status_code
    except httpx.HTTPError as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result
