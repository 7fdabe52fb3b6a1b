"""Settings: every environment variable cio_worker reads, read and validated in this one place.

Nothing else in the package looks at `os.environ`. `Settings.from_env(mapping)` takes any mapping,
so tests and embedding applications pass a dict.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, urlsplit

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


@dataclass(frozen=True, slots=True)
class Settings:
    """All of cio_worker's configuration. Keys never appear in `repr`."""

    redis_url: str = DEFAULT_REDIS_URL
    #: Connect and socket timeout for Redis, seconds: bounds how long enqueue can hang.
    redis_timeout_s: float = 0.4
    site_id: str | None = None
    track_api_key: str | None = field(default=None, repr=False)
    app_api_key: str | None = field(default=None, repr=False)
    pipelines_api_key: str | None = field(default=None, repr=False)
    region: Region = "us"
    track_url: str = REGION_HOSTS["us"]["track"]
    app_url: str = REGION_HOSTS["us"]["app"]
    pipelines_url: str = REGION_HOSTS["us"]["pipelines"]
    sandbox_url: str | None = None
    data_api: DataApi = "track"
    track_rps: float = 100.0
    app_rps: float = 10.0
    transactional_rps: float = 100.0
    broadcast_interval_s: float = 10.0
    #: Fraction of each limit the fleet aims for, leaving room for network jitter (limiter.py).
    rate_margin: float = 0.97
    max_attempts: int = 10
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    http_timeout_s: float = 10.0
    ambiguous_messages: AmbiguousPolicy = "reconcile"
    #: After an ambiguous send, how long to wait before asking Customer.io whether it happened
    #: (its listings are not instantly consistent), seconds.
    reconcile_settle_s: float = 60.0
    #: How long a sent message's receipt (delivery or trigger id) is kept, days.
    receipt_retention_days: float = 7.0
    #: A job not delivered this long after its enqueue (or replay) is dead-lettered, seconds.
    retry_for_s: float = 259_200.0
    #: Transient failures in a row, fleet-wide, that open a family's circuit (circuit.py).
    circuit_threshold: int = 5
    #: A failure older than this no longer counts towards the threshold, seconds.
    circuit_window_s: float = 30.0
    #: First probe interval of an open circuit, seconds; it doubles after each failed probe...
    circuit_probe_min_s: float = 1.0
    #: ...up to this cap, seconds.
    circuit_probe_max_s: float = 30.0
    #: How long an enqueue waits for one replica to confirm it (Redis WAIT), ms; 0 = never wait.
    #: Only used while the master reports attached replicas.
    replica_wait_ms: float = 1000.0
    #: Track-family jobs go out in batch requests (batcher.py); off = one request per job.
    batch: bool = True
    #: How long a batch that is not full yet waits for more jobs, milliseconds.
    batch_linger_ms: float = 200.0
    dlq_retention_days: float = 30.0
    webhook_signing_key: str | None = field(default=None, repr=False)
    #: Largest reporting-webhook body the receiver reads, bytes (webhook_server.py says why 1 MiB).
    webhook_max_body_bytes: int = 1024 * 1024
    #: How long a webhook body may take to arrive once its headers have, seconds.
    webhook_body_timeout_s: float = 5.0
    #: Webhook bodies read at once; a quarter of them (at least one) may be over 64 KiB.
    webhook_max_concurrent_bodies: int = 32
    #: Stored webhook events older than this are trimmed from the stream, days.
    webhook_retention_days: float = 7.0
    #: Start even on a Redis whose maxmemory-policy may evict jobs (not recommended).
    allow_eviction: bool = False
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    #: `user:password` the exporter (`cio-worker metrics`) requires; None = no auth.
    metrics_basic_auth: str | None = field(default=None, repr=False)

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
        env = _Env(os.environ if environ is None else environ)
        region = env.choice("CUSTOMERIO_REGION", ("us", "eu"), "us")
        sandbox_url = env.base_url("CIO_WORKER_SANDBOX_URL")
        hosts = REGION_HOSTS[region]

        def base(name: str, family: str) -> str:
            return env.base_url(name) or sandbox_url or hosts[family]

        def credential(name: str, sandbox_value: str) -> str | None:
            return env.text(name) or (sandbox_value if sandbox_url else None)

        settings = cls(
            redis_url=env.redis_url("CIO_WORKER_REDIS_URL", DEFAULT_REDIS_URL),
            redis_timeout_s=env.number("CIO_WORKER_REDIS_TIMEOUT_S", 0.4, low=0.01, high=60),
            site_id=credential("CUSTOMERIO_SITE_ID", SANDBOX_SITE_ID),
            track_api_key=credential("CUSTOMERIO_TRACK_API_KEY", SANDBOX_TRACK_API_KEY),
            app_api_key=credential("CUSTOMERIO_APP_API_KEY", SANDBOX_APP_API_KEY),
            pipelines_api_key=credential("CUSTOMERIO_PIPELINES_API_KEY", SANDBOX_PIPELINES_API_KEY),
            region=region,  # type: ignore[arg-type]
            track_url=base("CUSTOMERIO_TRACK_URL", "track"),
            app_url=base("CUSTOMERIO_APP_URL", "app"),
            pipelines_url=base("CUSTOMERIO_PIPELINES_URL", "pipelines"),
            sandbox_url=sandbox_url,
            data_api=env.choice("CIO_WORKER_DATA_API", ("track", "pipelines"), "track"),  # type: ignore[arg-type]
            track_rps=env.number("CIO_WORKER_TRACK_RPS", 100, low=0.001, high=100_000),
            app_rps=env.number("CIO_WORKER_APP_RPS", 10, low=0.001, high=100_000),
            transactional_rps=env.number(
                "CIO_WORKER_TRANSACTIONAL_RPS", 100, low=0.001, high=100_000
            ),
            broadcast_interval_s=env.number(
                "CIO_WORKER_BROADCAST_INTERVAL_S", 10, low=0.001, high=86_400
            ),
            rate_margin=env.number("CIO_WORKER_RATE_MARGIN", 0.97, low=0.1, high=1.0),
            max_attempts=int(
                env.number("CIO_WORKER_MAX_ATTEMPTS", 10, low=1, high=1000, whole=True)
            ),
            backoff_base_s=env.number("CIO_WORKER_BACKOFF_BASE_S", 1, low=0.001, high=3600),
            backoff_max_s=env.number("CIO_WORKER_BACKOFF_MAX_S", 300, low=0.001, high=86_400),
            http_timeout_s=env.number("CIO_WORKER_HTTP_TIMEOUT_S", 10, low=0.1, high=600),
            ambiguous_messages=env.choice(  # type: ignore[arg-type]
                "CIO_WORKER_AMBIGUOUS_MESSAGES", ("reconcile", "retry", "dead"), "reconcile"
            ),
            reconcile_settle_s=env.number("CIO_WORKER_RECONCILE_SETTLE_S", 60, low=0, high=86_400),
            receipt_retention_days=env.number(
                "CIO_WORKER_RECEIPT_RETENTION_DAYS", 7, low=0.001, high=3650
            ),
            retry_for_s=env.number("CIO_WORKER_RETRY_FOR_S", 259_200, low=1, high=31_536_000),
            circuit_threshold=int(
                env.number("CIO_WORKER_CIRCUIT_THRESHOLD", 5, low=1, high=10_000, whole=True)
            ),
            circuit_window_s=env.number("CIO_WORKER_CIRCUIT_WINDOW_S", 30, low=0.01, high=86_400),
            circuit_probe_min_s=env.number(
                "CIO_WORKER_CIRCUIT_PROBE_MIN_S", 1, low=0.01, high=3600
            ),
            circuit_probe_max_s=env.number(
                "CIO_WORKER_CIRCUIT_PROBE_MAX_S", 30, low=0.01, high=3600
            ),
            replica_wait_ms=env.number("CIO_WORKER_REPLICA_WAIT_MS", 1000, low=0, high=60_000),
            batch=env.choice("CIO_WORKER_BATCH", ("on", "off"), "on") == "on",
            batch_linger_ms=env.number("CIO_WORKER_BATCH_LINGER_MS", 200, low=0, high=60_000),
            dlq_retention_days=env.number(
                "CIO_WORKER_DLQ_RETENTION_DAYS", 30, low=0.001, high=3650
            ),
            webhook_signing_key=credential(
                "CUSTOMERIO_WEBHOOK_SIGNING_KEY", SANDBOX_WEBHOOK_SIGNING_KEY
            ),
            webhook_max_body_bytes=int(
                env.number(
                    "CIO_WORKER_WEBHOOK_MAX_BODY_BYTES",
                    1024 * 1024,
                    low=1024,
                    high=64 * 1024 * 1024,
                    whole=True,
                )
            ),
            webhook_body_timeout_s=env.number(
                "CIO_WORKER_WEBHOOK_BODY_TIMEOUT_S", 5, low=0.1, high=300
            ),
            webhook_max_concurrent_bodies=int(
                env.number(
                    "CIO_WORKER_WEBHOOK_MAX_CONCURRENT_BODIES", 32, low=1, high=10_000, whole=True
                )
            ),
            webhook_retention_days=env.number(
                "CIO_WORKER_WEBHOOK_RETENTION_DAYS", 7, low=0.001, high=3650
            ),
            allow_eviction=env.flag("CIO_WORKER_ALLOW_EVICTION"),
            log_level=env.choice(
                "CIO_WORKER_LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", upper=True
            ),
            log_format=env.choice("CIO_WORKER_LOG_FORMAT", ("json", "console"), "json"),  # type: ignore[arg-type]
            metrics_basic_auth=env.basic_auth("CIO_WORKER_METRICS_BASIC_AUTH"),
        )
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


class _Env:
    """Typed, validating reads of one environment mapping."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def choice(
        self, name: str, allowed: tuple[str, ...], default: str, *, upper: bool = False
    ) -> str:
        raw = self.text(name)
        if raw is None:
            return default
        value = raw.upper() if upper else raw.lower()
        if value not in allowed:
            raise ConfigError(f"{name}: must be one of {', '.join(allowed)}, got {raw!r}")
        return value

    def flag(self, name: str) -> bool:
        raw = (self.text(name) or "0").lower()
        if raw not in ("0", "1", "true", "false", "yes", "no"):
            raise ConfigError(f"{name}: must be 1/0, true/false or yes/no, got {raw!r}")
        return raw in ("1", "true", "yes")

    def number(
        self, name: str, default: float, *, low: float, high: float, whole: bool = False
    ) -> float:
        raw = self.text(name)
        if raw is None:
            return float(default)
        try:
            value = float(int(raw)) if whole else float(raw)
        except ValueError:
            kind = "a whole number" if whole else "a number"
            raise ConfigError(f"{name}: must be {kind}, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name}: must be between {low:g} and {high:g}, got {raw!r}")
        return value

    def basic_auth(self, name: str) -> str | None:
        """`user:password`, both parts non-empty; the value is never echoed in an error."""
        raw = self.text(name)
        if raw is None:
            return None
        user, sep, password = raw.partition(":")
        if not (user and sep and password):
            raise ConfigError(f"{name}: must be user:password (both non-empty)")
        return raw

    def base_url(self, name: str) -> str | None:
        raw = self.text(name)
        if raw is None:
            return None
        try:
            parts = urlsplit(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}: not a valid URL ({exc}): {raw!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{name}: must be scheme://host[:port] with http or https, got {raw!r}"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(f"{name}: must have no path, query or fragment, got {raw!r}")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ConfigError(f"{name}: invalid port in {raw!r}") from None
        return f"{parts.scheme}://{parts.netloc}"

    def redis_url(self, name: str, default: str) -> str:
        raw = self.text(name) or default
        try:
            # Sentinel URLs list several hosts separated by ";": check each.
            for part in raw.split(";"):
                urlsplit(part.strip()).port  # noqa: B018 - raises ValueError on a bad host/port
            scheme = urlsplit(raw).scheme
        except ValueError as exc:
            raise ConfigError(f"{name}: not a valid URL ({exc})") from None
        if scheme not in ("redis", "rediss", "unix", "sentinel", "sentinels"):
            raise ConfigError(
                f"{name}: must start with redis://, rediss://, unix:// or sentinel://, got scheme "
                f"{scheme!r}"
            )
        if scheme == "sentinels":
            # redis-py would talk to the sentinels and the master in plain text, and kombu has
            # no `sentinels` transport: refuse rather than run without the TLS asked for.
            raise ConfigError(
                f"{name}: sentinels:// (Sentinel over TLS) is not supported; use sentinel:// on a "
                "private network, or rediss:// to a TLS endpoint"
            )
        _check_tls_query(name, raw, scheme)
        return raw


def _check_tls_query(name: str, raw: str, scheme: str) -> None:
    """TLS options in the URL's query (`?ssl_ca_certs=/path`, read by redis-py and kombu alike)
    are only meaningful with rediss://, and a CA file must be readable now, not at first use."""
    query = parse_qs(urlsplit(raw.split(";")[-1].strip()).query)
    tls_options = sorted(key for key in query if key.startswith("ssl_"))
    if tls_options and scheme != "rediss":
        raise ConfigError(f"{name}: {', '.join(tls_options)} needs a rediss:// URL (TLS)")
    for path in query.get("ssl_ca_certs", []):
        if not os.access(path, os.R_OK) or not os.path.isfile(path):
            raise ConfigError(f"{name}: ssl_ca_certs file {path!r} is not a readable file")
