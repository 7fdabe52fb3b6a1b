"""Customer.io's reporting webhooks: verify the signature, store each event once, read them back.

`cio-worker webhooks serve` runs the receiver (`_app`, served by `_server`): it checks each
request's signature (`_signature`) within bounds a client that cannot sign cannot exceed
(`_limits`), and stores the event once per event_id in a Redis stream (`_store`). Application code
reads the events with consumer groups, at least once: an event not acknowledged within
`claim_idle_s` goes to the next consumer that reads.

```python
from cio_worker import webhooks
for event in webhooks.read("crm-sync", "worker-1", block_s=5):
    update_crm(event.metric, event.data)          # event.body is the event as Customer.io sent it
    webhooks.ack("crm-sync", event)
```
"""

from __future__ import annotations

from cio_worker.webhooks._event import WebhookEvent
from cio_worker.webhooks._reading import ack, list_events, read
from cio_worker.webhooks._server import serve_webhooks
from cio_worker.webhooks._signature import sign, signing_key, verify_signature
from cio_worker.webhooks._store import WebhookStore

__all__ = [
    "WebhookEvent",
    "WebhookStore",
    "ack",
    "list_events",
    "read",
    "serve_webhooks",
    "sign",
    "signing_key",
    "verify_signature",
]
