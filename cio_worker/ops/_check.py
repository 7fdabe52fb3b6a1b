"""`cio-worker check`: is this deployment able to deliver? For probes and for people.

Checks, in order: Redis answers; Redis will not evict jobs and keeps an AOF (ops/_preflight.py);
then each configured credential with one cheap authenticated call through the same httpx client
and shared limiter a worker uses (every call to Customer.io takes a limiter slot, even a probe's).
A credential that is not configured is reported as such, not as a failure. Nothing printed ever
contains a key: details name variables, never their values.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import redis

from cio_worker.config import Settings
from cio_worker.connection import create_redis
from cio_worker.customerio import Api, CustomerIoClient, HttpOperation
from cio_worker.errors import AuthError, CioWorkerError, ConfigError
from cio_worker.limiter import Limiter
from cio_worker.ops._preflight import check_redis

Status = Literal["ok", "warn", "fail", "not_configured", "skipped"]

#: A probe waits this long for its limiter slot before giving up (a worker waits 1 s, then
#: re-queues; a probe has no queue to go back to).
CHECK_LIMITER_WAIT_S = 5.0

#: The cheap authenticated call per credential: read-only, no data written.
PROBES: dict[Api, tuple[str, str]] = {
    "track": ("GET", "/api/v1/accounts/region"),
    "app": ("GET", "/v1/segments"),
}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of the report: `name` is redis, redis_config, track, app or pipelines."""

    name: str
    status: Status
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class CheckReport:
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        """True when nothing failed; warnings and unconfigured credentials do not fail."""
        return all(result.status != "fail" for result in self.results)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        """The `check --json` document; its keys are stable for scripts."""
        return {"ok": self.ok, "checks": [result.to_dict() for result in self.results]}

    def render(self) -> str:
        """Human output: one line per check, then a verdict."""
        width = max(len(result.name) for result in self.results)
        lines = [
            f"{result.status.replace('_', ' '):<14} {result.name:<{width}}  {result.detail}"
            for result in self.results
        ]
        failed = [result.name for result in self.results if result.status == "fail"]
        lines.append(f"FAILED: {', '.join(failed)}" if failed else "all checks passed")
        return "\n".join(lines)


def run_checks(
    settings: Settings,
    *,
    redis_client: redis.Redis | None = None,
    transport: httpx.BaseTransport | None = None,
) -> CheckReport:
    """Run every check; never raises for a failed check (it becomes a `fail` result)."""
    with _redis(settings, redis_client) as client:
        results = [_check_reachable(client, settings)]
        redis_up = results[0].status == "ok"
        results.append(
            _check_config(client, settings)
            if redis_up
            else CheckResult("redis_config", "skipped", "Redis is unreachable")
        )
        http = CustomerIoClient(settings, transport=transport)
        try:
            limiter = Limiter(settings, client, max_wait_s=CHECK_LIMITER_WAIT_S)
            for api in ("track", "app", "pipelines"):
                results.append(_check_credential(api, settings, limiter, http, redis_up))
        finally:
            http.close()
    return CheckReport(tuple(results))


@contextmanager
def _redis(settings: Settings, given: redis.Redis | None) -> Iterator[redis.Redis]:
    if given is not None:
        yield given
        return
    client = create_redis(settings.redis_url, timeout_s=settings.redis_timeout_s)
    try:
        yield client
    finally:
        client.close()


def redacted_url(url: str) -> str:
    """A Redis URL fit to print: passwords and query strings (which may hold one) removed."""
    parts = []
    for part in url.split(";"):
        part = re.sub(r"^([a-z]+://)[^@/]*@", r"\1", part.strip())
        parts.append(part.split("?", 1)[0])
    return ";".join(parts)


def _check_reachable(client: redis.Redis, settings: Settings) -> CheckResult:
    where = redacted_url(settings.redis_url)
    started = time.monotonic()
    try:
        client.ping()
    except redis.RedisError as exc:
        return CheckResult("redis", "fail", f"unreachable at {where}: {type(exc).__name__}: {exc}")
    elapsed_ms = (time.monotonic() - started) * 1000
    return CheckResult("redis", "ok", f"reachable at {where} (PING {elapsed_ms:.1f} ms)")


def _check_config(client: redis.Redis, settings: Settings) -> CheckResult:
    try:
        warnings = check_redis(client, allow_eviction=settings.allow_eviction)
    except ConfigError as exc:
        return CheckResult("redis_config", "fail", str(exc))
    except redis.RedisError as exc:
        return CheckResult("redis_config", "fail", f"{type(exc).__name__}: {exc}")
    if warnings:
        return CheckResult("redis_config", "warn", "; ".join(warnings))
    return CheckResult("redis_config", "ok", "maxmemory-policy does not evict; appendonly yes")


def _missing(api: Api, settings: Settings) -> list[str]:
    """The variables `api` needs that are not set."""
    needed = {
        "track": {
            "CUSTOMERIO_SITE_ID": settings.site_id,
            "CUSTOMERIO_TRACK_API_KEY": settings.track_api_key,
        },
        "app": {"CUSTOMERIO_APP_API_KEY": settings.app_api_key},
        "pipelines": {"CUSTOMERIO_PIPELINES_API_KEY": settings.pipelines_api_key},
    }[api]
    return [name for name, value in needed.items() if not value]


def _check_credential(
    api: Api, settings: Settings, limiter: Limiter, http: CustomerIoClient, redis_up: bool
) -> CheckResult:
    missing = _missing(api, settings)
    if api == "track" and len(missing) == 1:
        # Half a Track credential is a mistake, not an unused API.
        return CheckResult(api, "fail", f"{missing[0]} is not set (the other half is)")
    if missing:
        return CheckResult(api, "not_configured", f"{', '.join(missing)} not set")
    if api not in PROBES:
        # Every Pipelines call writes data; there is no read-only call to try the key with.
        return CheckResult(
            api, "skipped", "configured; the Pipelines API has no read-only call to try it with"
        )
    if not redis_up:
        return CheckResult(api, "skipped", "every call takes a limiter slot and Redis is down")
    method, path = PROBES[api]
    op = HttpOperation(api=api, bucket=api, method=method, path=path)
    try:
        waited_s = limiter.acquire(op.bucket)
        started = time.monotonic()
        delivered = http.send(op)
    except AuthError as exc:
        return CheckResult(api, "fail", f"credential refused: {exc}")
    except CioWorkerError as exc:  # limiter busy or down, transport, 4xx/5xx
        return CheckResult(api, "fail", f"{method} {path}: {type(exc).__name__}: {exc}")
    elapsed_ms = (time.monotonic() - started) * 1000
    detail = (
        f"{method} {path} answered {delivered.status_code} in {elapsed_ms:.0f} ms "
        f"(limiter wait {waited_s * 1000:.0f} ms)"
    )
    if api == "track":
        region = delivered.body.get("region") if isinstance(delivered.body, dict) else None
        if region and region != settings.region:
            return CheckResult(
                api,
                "warn",
                f"{detail}; the workspace is in region {region!r} but CUSTOMERIO_REGION is "
                f"{settings.region!r}",
            )
    return CheckResult(api, "ok", detail)
