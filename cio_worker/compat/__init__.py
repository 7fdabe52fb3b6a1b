"""Drop-in replacements for Customer.io's own Python clients: each call enqueues, nothing is sent.

- `cio_worker.compat.customerio`: the official `customerio` package's `CustomerIO` (Track API),
  `APIClient` (transactional messages) and its request classes, same names and signatures.
- `cio_worker.compat.analytics`: the Pipelines SDK's module (`customerio-cdp-analytics`,
  `from customerio import analytics`): `write_key`, `identify`, `track`, `page`, `alias`...

Switching is one import line. Every call validates at once, stores one job durably (the default
producer, `cio_worker.configure`, or a `producer=` you pass), and returns without sending; the
workers deliver the request the official client would have sent (docs/migrating.md lists each
call, its proof in tests/test_compat_*.py, and the few calls with no equivalent).
"""

from __future__ import annotations

__all__: list[str] = []
