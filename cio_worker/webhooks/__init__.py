"""Receiving Customer.io's reporting webhooks: signature checks, the receiver, the store."""

from __future__ import annotations

from cio_worker.webhooks._server import serve_webhooks
from cio_worker.webhooks._store import WebhookStore, signing_key

__all__ = [
    "WebhookStore",
    "serve_webhooks",
    "signing_key",
]
