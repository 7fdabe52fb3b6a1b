"""cio_worker's settings in a Django project: `settings.CIO_WORKER`, falling back to the
environment.

`CIO_WORKER` is a dict keyed by the environment variables' own names (README, "Settings"), so one
table documents both: `{"CIO_WORKER_REDIS_URL": "redis://...", "CUSTOMERIO_SITE_ID": "..."}`. A
key set there wins over the environment; a key left out is read from the environment; a key set
to None is unset, whatever the environment says. Values are written as in the environment
(strings; numbers are accepted as they are). A key cio_worker does not read is an error, so a
misspelt name is caught at startup instead of silently falling back to a default.

Three keys are the integration's own (the worker processes never read them):
`CIO_WORKER_ON_COMMIT` (bool, default True), `CIO_WORKER_DATABASE` (the database alias whose
transactions enqueues wait for, default "default") and `CIO_WORKER_CHECK_FAMILIES` (the families
whose credentials `django-admin check --deploy` requires, default all four).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]

from cio_worker.config import Settings
from cio_worker.errors import ConfigError
from cio_worker.kinds import Family

#: The Django setting read.
SETTING = "CIO_WORKER"
FAMILIES = frozenset(family.value for family in Family)


@dataclass(frozen=True, slots=True)
class DjangoOptions:
    """What the integration itself reads from `CIO_WORKER` (see the module)."""

    on_commit: bool = True
    database: str = "default"
    check_families: frozenset[str] = FAMILIES


class _Recording(Mapping[str, str]):
    """The environment `Settings.from_env` reads, remembering every name it looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values
        self.looked_up: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.looked_up.add(name)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def read_settings(
    configured: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Settings, DjangoOptions]:
    """The Settings and options `configured` (default: `settings.CIO_WORKER`) and `environ`
    (default: `os.environ`) give; raise `ImproperlyConfigured` naming the bad key."""
    if configured is None:
        configured = getattr(django_settings, SETTING, None) or {}
    if not isinstance(configured, Mapping):
        raise ImproperlyConfigured(f"{SETTING}: must be a dict, got {type(configured).__name__}")
    own = dict(configured)
    options = DjangoOptions(
        on_commit=_flag(own.pop("CIO_WORKER_ON_COMMIT", True)),
        database=_text(own.pop("CIO_WORKER_DATABASE", "default"), "CIO_WORKER_DATABASE"),
        check_families=_families(own.pop("CIO_WORKER_CHECK_FAMILIES", sorted(FAMILIES))),
    )
    values = dict(os.environ if environ is None else environ)
    for name, value in own.items():
        values[name] = _as_env_value(name, value)
    env = _Recording(values)
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        raise ImproperlyConfigured(f"{SETTING}: {exc}") from None
    unknown = sorted(name for name in own if name not in env.looked_up)
    if unknown:
        raise ImproperlyConfigured(
            f"{SETTING}: {', '.join(repr(name) for name in unknown)}: not a setting cio_worker "
            "reads (keys are the environment variables' names, e.g. 'CIO_WORKER_REDIS_URL')"
        )
    return settings, options


def _as_env_value(name: str, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ImproperlyConfigured(
            f"{SETTING}[{name!r}]: write the value as in the environment (a string such as "
            f"'on' or '0.5'), got {type(value).__name__}"
        )
    return str(value)


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ImproperlyConfigured(
            f"{SETTING}['CIO_WORKER_ON_COMMIT']: must be True or False, got {value!r}"
        )
    return value


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ImproperlyConfigured(f"{SETTING}[{name!r}]: must be a non-empty string")
    return value


def _families(value: object) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise ImproperlyConfigured(
            f"{SETTING}['CIO_WORKER_CHECK_FAMILIES']: must be a list of families "
            f"({', '.join(sorted(FAMILIES))})"
        )
    chosen = frozenset(str(item) for item in value)
    if not chosen <= FAMILIES:
        raise ImproperlyConfigured(
            f"{SETTING}['CIO_WORKER_CHECK_FAMILIES']: unknown families "
            f"{', '.join(sorted(chosen - FAMILIES))} (known: {', '.join(sorted(FAMILIES))})"
        )
    return chosen
