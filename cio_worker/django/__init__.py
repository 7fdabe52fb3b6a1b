"""Django integration (`pip install cio-worker[django]`; docs/django.md).

Add `"cio_worker.django"` to INSTALLED_APPS: `settings.CIO_WORKER` (a dict keyed by the
environment variables' names, falling back to the environment) configures the producer, and
`cio_worker.enqueue_*` called inside `transaction.atomic()` are stored only when the outermost
transaction commits (`immediately()` or `CIO_WORKER_ON_COMMIT = False` to opt out).
`django-admin check --deploy` reports a missing credential (cio_worker.E001) or a Redis that does
not answer (cio_worker.E002).
"""

from __future__ import annotations

from cio_worker.django._producer import OnCommitProducer, enqueue_failed, immediately
from cio_worker.django._settings import DjangoOptions, read_settings

__all__ = ["DjangoOptions", "OnCommitProducer", "enqueue_failed", "immediately", "read_settings"]
