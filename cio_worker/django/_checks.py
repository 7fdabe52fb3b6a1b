"""`django-admin check --deploy`: the credentials the workers need, and a Redis that answers.

E001 names the missing variables (for the families in `CIO_WORKER_CHECK_FAMILIES`); E002 says
Redis did not answer a PING within `CIO_WORKER_REDIS_TIMEOUT_S`, in one line, password masked.
"""

from __future__ import annotations

from typing import Any

import redis
from django.core import checks  # type: ignore[import-untyped]

from cio_worker.config import Settings, redact_url
from cio_worker.connection import create_redis
from cio_worker.django._settings import DjangoOptions

#: The tag `django-admin check --deploy --tag cio_worker` selects.
TAG = "cio_worker"


def credential_errors(settings: Settings, options: DjangoOptions) -> list[checks.CheckMessage]:
    missing = settings.missing_credentials(set(options.check_families))
    if not missing:
        return []
    return [
        checks.Error(
            f"{', '.join(missing)}: not set, so workers cannot deliver "
            f"{', '.join(sorted(options.check_families))} jobs.",
            hint="Set them in CIO_WORKER or the environment (the workers read the environment), "
            "or narrow CIO_WORKER['CIO_WORKER_CHECK_FAMILIES'] to the families this project "
            "enqueues.",
            id="cio_worker.E001",
        )
    ]


def redis_errors(settings: Settings) -> list[checks.CheckMessage]:
    client = create_redis(settings.redis_url, timeout_s=settings.redis_timeout_s, retries=0)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return [
            checks.Error(
                redact_url(
                    f"Redis at {settings.redis_url} did not answer PING within "
                    f"{settings.redis_timeout_s:g}s: {type(exc).__name__}: {exc}"
                ),
                hint="Start Redis or fix CIO_WORKER_REDIS_URL: enqueues would fail.",
                id="cio_worker.E002",
            )
        ]
    finally:
        client.close()
    return []


def deploy_check(settings: Settings, options: DjangoOptions) -> Any:
    """The check function registered for `settings` (Django calls it with `app_configs`)."""

    def check_cio_worker(app_configs: object = None, **kwargs: object) -> list[Any]:
        return [*credential_errors(settings, options), *redis_errors(settings)]

    return check_cio_worker
