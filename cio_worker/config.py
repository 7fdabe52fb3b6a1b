"""Settings: every environment variable cio_worker reads, read and validated in this one place.

Nothing else in the package looks at `os.environ`. `Settings.from_env(mapping)` takes any mapping,
so tests and embedding applications pass a dict. Each field names its variable, default and
bounds once (the readers are in `_env.py`), so `Settings()` is what an empty environment reads.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cio_worker._env import (
    EnvReader,
    basic_auth,
    choice,
    flag,
    number,
    on_off,
    optional_base_url,
    read_setting,
    redis_url_field,
    setting,
    whole,
)
from cio_worker.errors import ConfigError

Region = Literal["us", "eu"]
DataApi = Literal["track", "pipelines"]
AmbiguousPolicy = Literal["reconcile", "retry", "dead"]

#: Hosts per region (docs/customerio-api.md §1). Pipelines paths start with /v1, added by the
#: client.
REGION_HOSTS: dict[str, dict[str, str]] = {
    "us": {
        "track": "https://track.customer.io",
        "app": "https://api.customer.io",
        "pipelines": "https://cdp.customer.io",
    },
    "eu": {
        "track": "https://track-eu.customer.io",
        "app": "https://api-eu.customer.io",
        "pipelines": "https://cdp-eu.customer.io",
    },
}

#: Credentials the sandbox accepts by default; used when CIO_WORKER_SANDBOX_URL is set and no
#: real credentials are. They open nothing but a local stand-in.
SANDBOX_SITE_ID = "sandbox-site"
SANDBOX_TRACK_API_KEY = "sandbox-track-key"
SANDBOX_APP_API_KEY = "sandbox-app-key"
SANDBOX_PIPELINES_API_KEY = "sandbox-pipelines-key"
SANDBOX_WEBHOOK_SIGNING_KEY = "sandbox-webhook-signing-key"

#: Default Redis URL: a local server, database 0.
DEFAULT_REDIS_URL = "redis://localhost:6379/0"

#: Read before the other settings, in this order: base URLs and credentials fall back on them.
_READ_FIRST = ("region", "sandbox_url")

#: `scheme://user:password@` or `scheme://secret@` anywhere in a text, up to the last `@` before
#: the host (a password may hold an unescaped `@`); each `;`-separated Sentinel alternate alone.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)(?:([^\s:@/?#;]*):)?[^\s/?#;]+@")
#: A `password=` query parameter (redis-py reads one from a URL's query).
_URL_PASSWORD_PARAM = re.compile(r"(?i)([?&;](?:password|pass|pwd)=)[^\s&#;]*")


def redact_url(text: str) -> str:
    """`text` with every URL's password (userinfo or `?password=`) replaced by `***`.

    For printing and logging a Redis URL, Sentinel URLs included: the user name, hosts, ports,
    database and other query parameters (`ssl_ca_certs`, `master_name`) stay readable.
    """

    def userinfo(match: re.Match[str]) -> str:
        scheme, user = match.group(1), match.group(2)
        return f"{scheme}{user}:***@" if user is not None else f"{scheme}***@"

    return _URL_PASSWORD_PARAM.sub(r"\1***", _URL_USERINFO.sub(userinfo, text))


def _api_url(variable: str, family: str) -> str:
    """An API's base URL: the variable, else the sandbox's URL when one is set, else the
    region's host for `family`."""

    def read(env: EnvReader, read_so_far: Mapping[str, Any]) -> str:
        hosts = REGION_HOSTS[read_so_far["region"]]
        return env.base_url(variable) or read_so_far["sandbox_url"] or hosts[family]

    return setting(REGION_HOSTS["us"][family], read)


def _credential(variable: str, sandbox_value: str, *, secret: bool = True) -> str | None:
    """A credential: the variable, else the sandbox's well-known one when a sandbox URL is set."""

    def read(env: EnvReader, read_so_far: Mapping[str, Any]) -> str | None:
        return env.text(variable) or (sandbox_value if read_so_far["sandbox_url"] else None)

    return setting(None, read, secret=secret)


@dataclass(frozen=True, slots=True)
class Settings:
    """All of cio_worker's configuration. Keys never appear in `repr`."""

    redis_url: str = redis_url_field("CIO_WORKER_REDIS_URL", DEFAULT_REDIS_URL)
    #: Connect and socket timeout for Redis, seconds: bounds how long enqueue can hang.
    redis_timeout_s: float = number("CIO_WORKER_REDIS_TIMEOUT_S", 0.4, low=0.01, high=60)
    site_id: str | None = _credential("CUSTOMERIO_SITE_ID", SANDBOX_SITE_ID, secret=False)
    track_api_key: str | None = _credential("CUSTOMERIO_TRACK_API_KEY", SANDBOX_TRACK_API_KEY)
    app_api_key: str | None = _credential("CUSTOMERIO_APP_API_KEY", SANDBOX_APP_API_KEY)
    pipelines_api_key: str | None = _credential(
        "CUSTOMERIO_PIPELINES_API_KEY", SANDBOX_PIPELINES_API_KEY
    )
    region: Region = choice("CUSTOMERIO_REGION", ("us", "eu"), "us")
    track_url: str = _api_url("CUSTOMERIO_TRACK_URL", "track")
    app_url: str = _api_url("CUSTOMERIO_APP_URL", "app")
    pipelines_url: str = _api_url("CUSTOMERIO_PIPELINES_URL", "pipelines")
    sandbox_url: str | None = optional_base_url("CIO_WORKER_SANDBOX_URL")
    data_api: DataApi = choice("CIO_WORKER_DATA_API", ("track", "pipelines"), "track")
    track_rps: float = number("CIO_WORKER_TRACK_RPS", 100.0, low=0.001, high=100_000)
    app_rps: float = number("CIO_WORKER_APP_RPS", 10.0, low=0.001, high=100_000)
    transactional_rps: float = number(
        "CIO_WORKER_TRANSACTIONAL_RPS", 100.0, low=0.001, high=100_000
    )
    broadcast_interval_s: float = number(
        "CIO_WORKER_BROADCAST_INTERVAL_S", 10.0, low=0.001, high=86_400
    )
    #: Fraction of each limit the fleet aims for, leaving room for network jitter
    #: (limiter/_limiter.py).
    rate_margin: float = number("CIO_WORKER_RATE_MARGIN", 0.97, low=0.1, high=1.0)
    max_attempts: int = whole("CIO_WORKER_MAX_ATTEMPTS", 10, low=1, high=1000)
    backoff_base_s: float = number("CIO_WORKER_BACKOFF_BASE_S", 1.0, low=0.001, high=3600)
    backoff_max_s: float = number("CIO_WORKER_BACKOFF_MAX_S", 300.0, low=0.001, high=86_400)
    http_timeout_s: float = number("CIO_WORKER_HTTP_TIMEOUT_S", 10.0, low=0.1, high=600)
    ambiguous_messages: AmbiguousPolicy = choice(
        "CIO_WORKER_AMBIGUOUS_MESSAGES", ("reconcile", "retry", "dead"), "reconcile"
    )
    #: After an ambiguous send, how long to wait before asking Customer.io whether it happened
    #: (its listings are not instantly consistent), seconds.
    reconcile_settle_s: float = number("CIO_WORKER_RECONCILE_SETTLE_S", 60.0, low=0, high=86_400)
    #: How long a sent message's receipt (delivery or trigger id) is kept, days.
    receipt_retention_days: float = number(
        "CIO_WORKER_RECEIPT_RETENTION_DAYS", 7.0, low=0.001, high=3650
    )
    #: How long a worker's claim on a job lasts unless renewed (every third of it), seconds: a
    #: SIGKILLed worker's jobs are back within this plus one sweep (queue/_leases.py).
    lease_s: float = number("CIO_WORKER_LEASE_S", 20.0, low=3, high=3600)
    #: A job not delivered this long after its enqueue (or replay) is dead-lettered, seconds.
    retry_for_s: float = number("CIO_WORKER_RETRY_FOR_S", 259_200.0, low=1, high=31_536_000)
    #: Transient failures in a row, fleet-wide, that open a family's circuit (limiter/_circuit.py).
    circuit_threshold: int = whole("CIO_WORKER_CIRCUIT_THRESHOLD", 5, low=1, high=10_000)
    #: A failure older than this no longer counts towards the threshold, seconds.
    circuit_window_s: float = number("CIO_WORKER_CIRCUIT_WINDOW_S", 30.0, low=0.01, high=86_400)
    #: First probe interval of an open circuit, seconds; it doubles after each failed probe...
    circuit_probe_min_s: float = number("CIO_WORKER_CIRCUIT_PROBE_MIN_S", 1.0, low=0.01, high=3600)
    #: ...up to this cap, seconds.
    circuit_probe_max_s: float = number("CIO_WORKER_CIRCUIT_PROBE_MAX_S", 30.0, low=0.01, high=3600)
    #: How long an enqueue waits for one replica to confirm it (Redis WAIT), ms; 0 = never wait.
    #: Only used while the master reports attached replicas.
    replica_wait_ms: float = number("CIO_WORKER_REPLICA_WAIT_MS", 1000.0, low=0, high=60_000)
    #: Track-family jobs go out in batch requests (worker/_batcher.py); off = one request per job.
    batch: bool = on_off("CIO_WORKER_BATCH", True)
    #: How long a batch that is not full yet waits for more jobs, milliseconds.
    batch_linger_ms: float = number("CIO_WORKER_BATCH_LINGER_MS", 200.0, low=0, high=60_000)
    dlq_retention_days: float = number("CIO_WORKER_DLQ_RETENTION_DAYS", 30.0, low=0.001, high=3650)
    webhook_signing_key: str | None = _credential(
        "CUSTOMERIO_WEBHOOK_SIGNING_KEY", SANDBOX_WEBHOOK_SIGNING_KEY
    )
    #: Largest reporting-webhook body the receiver reads, bytes (webhooks/_limits.py: why 1 MiB).
    webhook_max_body_bytes: int = whole(
        "CIO_WORKER_WEBHOOK_MAX_BODY_BYTES", 1024 * 1024, low=1024, high=64 * 1024 * 1024
    )
    #: How long a webhook body may take to arrive once its headers have, seconds.
    webhook_body_timeout_s: float = number(
        "CIO_WORKER_WEBHOOK_BODY_TIMEOUT_S", 5.0, low=0.1, high=300
    )
    #: Webhook bodies read at once; a quarter of them (at least one) may be over 64 KiB.
    webhook_max_concurrent_bodies: int = whole(
        "CIO_WORKER_WEBHOOK_MAX_CONCURRENT_BODIES", 32, low=1, high=10_000
    )
    #: Stored webhook events older than this are trimmed from the stream, days.
    webhook_retention_days: float = number(
        "CIO_WORKER_WEBHOOK_RETENTION_DAYS", 7.0, low=0.001, high=3650
    )
    #: Start even on a Redis whose maxmemory-policy may evict jobs (not recommended).
    allow_eviction: bool = flag("CIO_WORKER_ALLOW_EVICTION")
    log_level: str = choice(
        "CIO_WORKER_LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", upper=True
    )
    log_format: Literal["json", "console"] = choice(
        "CIO_WORKER_LOG_FORMAT", ("json", "console"), "json"
    )
    #: `user:password` the exporter (`cio-worker metrics`) requires; None = no auth.
    metrics_basic_auth: str | None = basic_auth("CIO_WORKER_METRICS_BASIC_AUTH")
    #: `user:password` the operator console (`cio-worker console`) accepts (HTTP basic auth or
    #: its login form).
    console_basic_auth: str | None = basic_auth("CIO_WORKER_CONSOLE_BASIC_AUTH")
    #: A token the console accepts (`Authorization: Bearer`, or its login form).
    console_token: str | None = setting(
        None, lambda env, _: env.text("CIO_WORKER_CONSOLE_TOKEN"), secret=True
    )

    def __repr__(self) -> str:
        """The dataclass's repr, keys left out and the Redis URL's password masked."""
        shown = []
        for f in dataclasses.fields(self):
            if f.repr:
                value = getattr(self, f.name)
                shown.append(f"{f.name}={redact_url(value) if f.name == 'redis_url' else value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every variable; raise `ConfigError` naming the first bad one."""
        env = EnvReader(os.environ if environ is None else environ)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        order = [*_READ_FIRST, *(name for name in fields if name not in _READ_FIRST)]
        values: dict[str, Any] = {}
        for name in order:
            values[name] = read_setting(fields[name], env, values)
        settings = cls(**values)
        if settings.backoff_max_s < settings.backoff_base_s:
            raise ConfigError(
                "CIO_WORKER_BACKOFF_MAX_S: must be at least CIO_WORKER_BACKOFF_BASE_S "
                f"({settings.backoff_base_s:g})"
            )
        if settings.circuit_probe_max_s < settings.circuit_probe_min_s:
            raise ConfigError(
                "CIO_WORKER_CIRCUIT_PROBE_MAX_S: must be at least CIO_WORKER_CIRCUIT_PROBE_MIN_S "
                f"({settings.circuit_probe_min_s:g})"
            )
        return settings

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed (for tests and embedding)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def missing_credentials(self, families: set[str]) -> list[str]:
        """Names of the variables a worker consuming `families` still needs."""
        missing: list[str] = []
        if "track" in families:
            if self.data_api == "pipelines":
                if not self.pipelines_api_key:
                    missing.append("CUSTOMERIO_PIPELINES_API_KEY")
            else:
                if not self.site_id:
                    missing.append("CUSTOMERIO_SITE_ID")
                if not self.track_api_key:
                    missing.append("CUSTOMERIO_TRACK_API_KEY")
        if families & {"transactional", "broadcast", "app"} and not self.app_api_key:
            missing.append("CUSTOMERIO_APP_API_KEY")
        return missing
