"""structlog set-up: JSON lines in production, readable console output in development.

The last processors drop any key that could carry a secret, whatever a caller passes by mistake,
and mask the password of any URL written in a value (a Redis URL in an exception message, say).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from cio_worker.config import Settings, redact_url

#: Keys never written to a log line, whatever their value.
SECRET_KEYS = frozenset(
    {
        "authorization",
        "api_key",
        "track_api_key",
        "app_api_key",
        "pipelines_api_key",
        "password",
        "webhook_signing_key",
        "metrics_basic_auth",
        "console_basic_auth",
        "console_token",
        "basic_auth",
        "headers",
        "payload",
        "traits",
        "properties",
        "message_data",
        "body",
    }
)


def get_logger(module: str) -> Any:
    """The logger of `module` (pass `__name__`): the one way loggers are made in this package.

    Every line it writes carries `stage`, where in the flow it came from (`cio_worker.worker`,
    `cio_worker.queue`, `cio_worker.connection`): private module names are left out, so a log
    query keeps working when a stage's modules are rearranged. (Not `logger`: structlog's
    `get_logger` takes that name for its own argument.)
    """
    public = [part for part in module.split(".") if not part.startswith("_")]
    return structlog.get_logger(stage=".".join(public[:2]))


def drop_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in [key for key in event if key.lower() in SECRET_KEYS]:
        event[key] = "[redacted]"
    return event


def redact_urls(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask `scheme://user:password@` (and `?password=`) in every text value of the event."""
    for key, value in event.items():
        if isinstance(value, str) and ("://" in value or "password=" in value):
            event[key] = redact_url(value)
    return event


def configure_logging(settings: Settings) -> None:
    """Configure structlog (and route stdlib logging at the same level) for this process."""
    level = getattr(logging, settings.log_level)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            drop_secrets,
            redact_urls,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # WriteLogger writes each line with its newline in one call under a lock; print() makes
        # two writes, and another thread's log record could land between them.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # httpx logs every request URL at INFO, and our URLs carry people's ids: keep it quiet.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
