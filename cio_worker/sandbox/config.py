"""SandboxConfig: the credentials, limits and clock one sandbox app runs with."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cio_worker.config import (
    SANDBOX_APP_API_KEY,
    SANDBOX_PIPELINES_API_KEY,
    SANDBOX_SITE_ID,
    SANDBOX_TRACK_API_KEY,
)
from cio_worker.config import SANDBOX_WEBHOOK_SIGNING_KEY as SANDBOX_WEBHOOK_SIGNING_KEY
from cio_worker.errors import ConfigError

# The sandbox signs its reporting webhooks with SANDBOX_WEBHOOK_SIGNING_KEY (X-CIO-Signature);
# with CIO_WORKER_SANDBOX_URL set, `cio-worker webhooks serve` uses it unless a real key is set.

_RPS_FIELDS = ("track_rps", "pipelines_rps", "app_rps", "transactional_rps")
#: Longest listing lag, seconds: an hour is far past any reconcile window a test needs.
MAX_LISTING_LAG_S = 3600.0


@dataclass(frozen=True)
class SandboxConfig:
    """What the sandbox accepts: credentials, per-family limits and the clock the limits use.

    Limits are strict rolling windows over accepted requests: at most `floor(rps)` in any 1 s,
    and one broadcast trigger per `broadcast_interval_s` seconds. Keys never appear in `repr`.
    """

    site_id: str = SANDBOX_SITE_ID
    track_api_key: str = field(default=SANDBOX_TRACK_API_KEY, repr=False)
    app_api_key: str = field(default=SANDBOX_APP_API_KEY, repr=False)
    pipelines_api_key: str = field(default=SANDBOX_PIPELINES_API_KEY, repr=False)
    #: Signs the reporting webhooks POST /_sandbox/webhooks/send delivers.
    webhook_signing_key: str = field(default=SANDBOX_WEBHOOK_SIGNING_KEY, repr=False)
    #: Track v1 and v2 together (region lookup included), requests per rolling second.
    track_rps: float = 100
    #: Data Pipelines, requests per rolling second.
    pipelines_rps: float = 100
    #: App API endpoints other than send/* and broadcast triggers, requests per rolling second.
    app_rps: float = 10
    #: POST /v1/send/*, requests per rolling second.
    transactional_rps: float = 100
    #: One accepted broadcast trigger (all broadcasts together) per this many seconds.
    broadcast_interval_s: float = 10
    #: Send `Retry-After` (whole seconds, rounded up) with every 429.
    retry_after: bool = True
    #: Broadcast ids that answer 404, as an unknown broadcast does.
    missing_broadcast_ids: frozenset[int] = frozenset()
    #: Seconds before an accepted send or broadcast trigger shows in the App API's reads (the
    #: delivery and trigger listings, `GET /v1/messages/{id}`): Customer.io's reads are not
    #: instantly consistent. Changeable at runtime with `POST /_sandbox/config`.
    listing_lag_s: float = 0
    #: Seconds from an arbitrary origin; only differences matter. Tests pass a fake one.
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in _RPS_FIELDS:
            value = getattr(self, name)
            # Below 1 a one-second rolling window could never admit anything.
            if not value >= 1:
                raise ConfigError(f"SandboxConfig.{name} must be at least 1, got {value!r}")
        if not self.broadcast_interval_s > 0:
            raise ConfigError(
                "SandboxConfig.broadcast_interval_s must be positive, "
                f"got {self.broadcast_interval_s!r}"
            )
        check_listing_lag(self.listing_lag_s, "SandboxConfig.listing_lag_s")


def check_listing_lag(value: object, name: str = "listing_lag_s") -> float:
    """`value` as a lag in seconds (0 to MAX_LISTING_LAG_S); ConfigError naming `name` if not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}")
    if not 0 <= value <= MAX_LISTING_LAG_S:
        raise ConfigError(f"{name} must be between 0 and {MAX_LISTING_LAG_S:g}, got {value!r}")
    return float(value)
