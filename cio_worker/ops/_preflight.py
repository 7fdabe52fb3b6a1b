"""Checks a worker makes before it takes a job: credentials present, Redis safe to trust."""

from __future__ import annotations

import redis

from cio_worker.config import Settings
from cio_worker.errors import ConfigError

#: Policies under which Redis may delete keys, jobs among them, when memory runs out.
EVICTING_POLICIES = ("allkeys-", "volatile-")


def check_credentials(settings: Settings, families: set[str]) -> None:
    """A missing credential is a clear startup error, not a stream of 401s."""
    missing = settings.missing_credentials(families)
    if missing:
        raise ConfigError(
            f"{', '.join(missing)}: not set, but this worker consumes "
            f"{', '.join(sorted(families))}. "
            "Set them, or choose queues with -Q (e.g. -Q cio.track), or set "
            "CIO_WORKER_SANDBOX_URL to deliver to a local sandbox."
        )


def check_redis(client: redis.Redis, *, allow_eviction: bool = False) -> list[str]:
    """Refuse an evicting Redis (unless allowed); return warnings (AOF off)."""
    warnings: list[str] = []
    try:
        policy = str(client.config_get("maxmemory-policy").get("maxmemory-policy", ""))
        appendonly = str(client.config_get("appendonly").get("appendonly", ""))
    except redis.ResponseError:
        # Managed Redis often forbids CONFIG; we cannot check, so say so.
        return ["could not read Redis config (CONFIG GET refused); check maxmemory-policy yourself"]
    if policy.startswith(EVICTING_POLICIES):
        message = (
            f"Redis maxmemory-policy is {policy}: Redis may evict queued jobs. Set it to "
            "noeviction (or pass --allow-eviction / CIO_WORKER_ALLOW_EVICTION=1 to accept "
            "the risk)."
        )
        if not allow_eviction:
            raise ConfigError(message)
        warnings.append(message)
    if appendonly != "yes":
        warnings.append("Redis appendonly is off: a Redis crash can lose acknowledged jobs")
    return warnings
