"""The Django app `cio_worker.django` (in INSTALLED_APPS): at start-up it reads the settings and
installs the on-commit producer the module-level `cio_worker.enqueue_*` functions use, and
registers the deploy checks. (A public module name, as Django looks for `apps`.)
"""

from __future__ import annotations

from django.apps import AppConfig  # type: ignore[import-untyped]
from django.conf import settings as django_settings  # type: ignore[import-untyped]
from django.core import checks  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]

from cio_worker.django import _checks
from cio_worker.django._producer import OnCommitProducer
from cio_worker.django._settings import read_settings
from cio_worker.produce import configure


class CioWorkerConfig(AppConfig):  # type: ignore[misc]
    name = "cio_worker.django"
    label = "cio_worker"
    verbose_name = "cio_worker"

    def ready(self) -> None:
        settings, options = read_settings()
        if options.database not in django_settings.DATABASES:
            raise ImproperlyConfigured(
                f"CIO_WORKER['CIO_WORKER_DATABASE']: {options.database!r} is not in DATABASES"
            )
        configure(
            producer=OnCommitProducer(
                settings, database=options.database, on_commit=options.on_commit
            )
        )
        checks.register(_checks.deploy_check(settings, options), _checks.TAG, deploy=True)
