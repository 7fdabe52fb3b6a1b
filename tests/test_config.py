"""Tests for cio_worker.config: every variable read, defaults, validation and secret hygiene."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import structlog

from cio_worker import logs
from cio_worker.config import (
    SANDBOX_APP_API_KEY,
    SANDBOX_PIPELINES_API_KEY,
    SANDBOX_SITE_ID,
    SANDBOX_TRACK_API_KEY,
    Settings,
    redact_url,
)
from cio_worker.errors import CioWorkerError, ConfigError
from cio_worker.logs import configure_logging

# Hosts from docs/customerio-api.md §1 (the client adds Pipelines' /v1 path itself).
US_HOSTS = {
    "track_url": "https://track.customer.io",
    "app_url": "https://api.customer.io",
    "pipelines_url": "https://cdp.customer.io",
}
EU_HOSTS = {
    "track_url": "https://track-eu.customer.io",
    "app_url": "https://api-eu.customer.io",
    "pipelines_url": "https://cdp-eu.customer.io",
}
ALL_FAMILIES = {"track", "transactional", "broadcast", "app"}


def hosts(settings: Settings) -> dict[str, str]:
    return {
        "track_url": settings.track_url,
        "app_url": settings.app_url,
        "pipelines_url": settings.pipelines_url,
    }


class TestDefaults:
    def test_empty_environment_gives_design_defaults(self) -> None:
        """With no variables set, every setting takes the default from docs/design.md's table."""
        settings = Settings.from_env({})
        assert settings.redis_url == "redis://localhost:6379/0"
        assert settings.region == "us"
        assert settings.data_api == "track"
        assert settings.track_rps == 100
        assert settings.app_rps == 10
        assert settings.transactional_rps == 100
        assert settings.broadcast_interval_s == 10
        assert settings.max_attempts == 10
        assert settings.backoff_base_s == 1
        assert settings.backoff_max_s == 300
        assert settings.http_timeout_s == 10
        assert hosts(settings) == US_HOSTS
        assert settings.sandbox_url is None
        assert settings.allow_eviction is False

    def test_no_credentials_by_default(self) -> None:
        """Without credential variables (and no sandbox) every credential is None."""
        settings = Settings.from_env({})
        assert settings.site_id is None
        assert settings.track_api_key is None
        assert settings.app_api_key is None
        assert settings.pipelines_api_key is None
        assert settings.webhook_signing_key is None

    def test_dataclass_defaults_match_from_env(self) -> None:
        """`Settings()` built in code equals settings read from an empty environment."""
        assert Settings() == Settings.from_env({})

    def test_max_attempts_is_an_int(self) -> None:
        """The attempt count is a whole number, not a float."""
        assert isinstance(Settings.from_env({"CIO_WORKER_MAX_ATTEMPTS": "7"}).max_attempts, int)

    def test_none_reads_the_process_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """`from_env()` without a mapping reads `os.environ`."""
        monkeypatch.setenv("CIO_WORKER_TRACK_RPS", "42")
        monkeypatch.setenv("CUSTOMERIO_REGION", "eu")
        settings = Settings.from_env()
        assert settings.track_rps == 42
        assert settings.region == "eu"


class TestParsing:
    def test_every_variable_is_read(self) -> None:
        """Each documented variable (and each extra knob) sets its field."""
        settings = Settings.from_env(
            {
                "CIO_WORKER_REDIS_URL": "rediss://:pw@redis.example.com:6380/3",
                "CIO_WORKER_REDIS_TIMEOUT_S": "1.5",
                "CUSTOMERIO_SITE_ID": "site-1",
                "CUSTOMERIO_TRACK_API_KEY": "track-key-1",
                "CUSTOMERIO_APP_API_KEY": "app-key-1",
                "CUSTOMERIO_PIPELINES_API_KEY": "pipe-key-1",
                "CUSTOMERIO_REGION": "eu",
                "CUSTOMERIO_TRACK_URL": "http://track.local:8001",
                "CUSTOMERIO_APP_URL": "http://app.local:8002",
                "CUSTOMERIO_PIPELINES_URL": "https://pipes.local",
                "CIO_WORKER_DATA_API": "pipelines",
                "CIO_WORKER_TRACK_RPS": "250",
                "CIO_WORKER_APP_RPS": "3.5",
                "CIO_WORKER_TRANSACTIONAL_RPS": "55",
                "CIO_WORKER_BROADCAST_INTERVAL_S": "12.5",
                "CIO_WORKER_RATE_MARGIN": "0.8",
                "CIO_WORKER_MAX_ATTEMPTS": "4",
                "CIO_WORKER_BACKOFF_BASE_S": "0.25",
                "CIO_WORKER_BACKOFF_MAX_S": "60",
                "CIO_WORKER_HTTP_TIMEOUT_S": "2.5",
                "CIO_WORKER_AMBIGUOUS_MESSAGES": "retry",
                "CIO_WORKER_DLQ_RETENTION_DAYS": "7",
                "CUSTOMERIO_WEBHOOK_SIGNING_KEY": "hook-key-1",
                "CIO_WORKER_ALLOW_EVICTION": "yes",
                "CIO_WORKER_LOG_LEVEL": "debug",
                "CIO_WORKER_LOG_FORMAT": "console",
                "CIO_WORKER_METRICS_BASIC_AUTH": "prom:scrape-pw",
            }
        )
        assert settings.redis_url == "rediss://:pw@redis.example.com:6380/3"
        assert settings.redis_timeout_s == 1.5
        assert settings.site_id == "site-1"
        assert settings.track_api_key == "track-key-1"
        assert settings.app_api_key == "app-key-1"
        assert settings.pipelines_api_key == "pipe-key-1"
        assert settings.region == "eu"
        assert settings.track_url == "http://track.local:8001"
        assert settings.app_url == "http://app.local:8002"
        assert settings.pipelines_url == "https://pipes.local"
        assert settings.data_api == "pipelines"
        assert settings.track_rps == 250
        assert settings.app_rps == 3.5
        assert settings.transactional_rps == 55
        assert settings.broadcast_interval_s == 12.5
        assert settings.rate_margin == 0.8
        assert settings.max_attempts == 4
        assert settings.backoff_base_s == 0.25
        assert settings.backoff_max_s == 60
        assert settings.http_timeout_s == 2.5
        assert settings.ambiguous_messages == "retry"
        assert settings.dlq_retention_days == 7
        assert settings.webhook_signing_key == "hook-key-1"
        assert settings.allow_eviction is True
        assert settings.log_level == "DEBUG"
        assert settings.log_format == "console"
        assert settings.metrics_basic_auth == "prom:scrape-pw"

    def test_blank_values_count_as_unset(self) -> None:
        """An empty or whitespace-only variable falls back to the default."""
        settings = Settings.from_env(
            {"CIO_WORKER_TRACK_RPS": "  ", "CUSTOMERIO_REGION": "", "CUSTOMERIO_SITE_ID": " "}
        )
        assert settings.track_rps == 100
        assert settings.region == "us"
        assert settings.site_id is None

    def test_values_are_stripped(self) -> None:
        """Surrounding whitespace (a common .env mistake) is ignored."""
        settings = Settings.from_env(
            {"CIO_WORKER_APP_RPS": " 7 ", "CUSTOMERIO_APP_API_KEY": " key-x\n"}
        )
        assert settings.app_rps == 7
        assert settings.app_api_key == "key-x"

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("1", True),
            ("true", True),
            ("TRUE", True),
            ("yes", True),
            ("0", False),
            ("false", False),
            ("No", False),
            ("", False),
        ],
    )
    def test_flag_values(self, raw: str, expected: bool) -> None:
        """Flags accept 1/0, true/false and yes/no in any case."""
        assert Settings.from_env({"CIO_WORKER_ALLOW_EVICTION": raw}).allow_eviction is expected

    @pytest.mark.parametrize("raw", ["EU", "Eu", "eu"])
    def test_region_is_case_insensitive(self, raw: str) -> None:
        """The region is matched case-insensitively."""
        assert Settings.from_env({"CUSTOMERIO_REGION": raw}).region == "eu"

    @pytest.mark.parametrize(
        "url",
        [
            "redis://localhost:6379/0",
            "rediss://secure.example.com:6380/1",
            "unix:///var/run/redis.sock",
            "sentinel://s1:26379;sentinel://s2:26379/0?master_name=main",
        ],
    )
    def test_redis_url_schemes_accepted(self, url: str) -> None:
        """redis, rediss, unix and Sentinel URLs are all accepted as given."""
        assert Settings.from_env({"CIO_WORKER_REDIS_URL": url}).redis_url == url

    @pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("1000", 1000)])
    def test_max_attempts_range_edges_accepted(self, raw: str, expected: int) -> None:
        """The smallest and largest allowed attempt counts are accepted."""
        assert Settings.from_env({"CIO_WORKER_MAX_ATTEMPTS": raw}).max_attempts == expected

    def test_backoff_max_equal_to_base_accepted(self) -> None:
        """A backoff cap equal to the base is allowed (constant backoff)."""
        settings = Settings.from_env(
            {"CIO_WORKER_BACKOFF_BASE_S": "5", "CIO_WORKER_BACKOFF_MAX_S": "5"}
        )
        assert settings.backoff_base_s == settings.backoff_max_s == 5

    def test_replace_returns_changed_copy(self) -> None:
        """`replace` returns a new Settings with the change and leaves the original alone."""
        original = Settings.from_env({})
        changed = original.replace(track_rps=7.0)
        assert changed.track_rps == 7.0
        assert original.track_rps == 100


class TestInvalid:
    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("CIO_WORKER_TRACK_RPS", "fast"),
            ("CIO_WORKER_TRACK_RPS", "0"),
            ("CIO_WORKER_TRACK_RPS", "-5"),
            ("CIO_WORKER_TRACK_RPS", "nan"),
            ("CIO_WORKER_TRACK_RPS", "inf"),
            ("CIO_WORKER_TRACK_RPS", "100001"),
            ("CIO_WORKER_APP_RPS", "0"),
            ("CIO_WORKER_APP_RPS", "ten"),
            ("CIO_WORKER_TRANSACTIONAL_RPS", "x"),
            ("CIO_WORKER_TRANSACTIONAL_RPS", "-1"),
            ("CIO_WORKER_BROADCAST_INTERVAL_S", "0"),
            ("CIO_WORKER_BROADCAST_INTERVAL_S", "soon"),
            ("CIO_WORKER_MAX_ATTEMPTS", "0"),
            ("CIO_WORKER_MAX_ATTEMPTS", "2.5"),
            ("CIO_WORKER_MAX_ATTEMPTS", "ten"),
            ("CIO_WORKER_MAX_ATTEMPTS", "1001"),
            ("CIO_WORKER_BACKOFF_BASE_S", "-1"),
            ("CIO_WORKER_BACKOFF_BASE_S", "abc"),
            ("CIO_WORKER_BACKOFF_MAX_S", "0"),
            ("CIO_WORKER_HTTP_TIMEOUT_S", "0"),
            ("CIO_WORKER_HTTP_TIMEOUT_S", "abc"),
            ("CIO_WORKER_HTTP_TIMEOUT_S", "601"),
            ("CIO_WORKER_REDIS_TIMEOUT_S", "0"),
            ("CIO_WORKER_RATE_MARGIN", "1.5"),
            ("CIO_WORKER_DLQ_RETENTION_DAYS", "0"),
        ],
    )
    def test_bad_number_names_variable(self, name: str, value: str) -> None:
        """A non-number or out-of-range number raises ConfigError naming the variable."""
        with pytest.raises(ConfigError) as info:
            Settings.from_env({name: value})
        assert name in str(info.value)

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("CUSTOMERIO_REGION", "ap"),
            ("CUSTOMERIO_REGION", "us-east-1"),
            ("CIO_WORKER_DATA_API", "v2"),
            ("CIO_WORKER_DATA_API", "cdp"),
            ("CIO_WORKER_AMBIGUOUS_MESSAGES", "drop"),
            ("CIO_WORKER_LOG_LEVEL", "verbose"),
            ("CIO_WORKER_LOG_FORMAT", "xml"),
        ],
    )
    def test_bad_choice_names_variable(self, name: str, value: str) -> None:
        """A value outside the allowed set raises ConfigError naming the variable and value."""
        with pytest.raises(ConfigError) as info:
            Settings.from_env({name: value})
        assert name in str(info.value)
        assert value in str(info.value)

    @pytest.mark.parametrize(
        "name",
        [
            "CUSTOMERIO_TRACK_URL",
            "CUSTOMERIO_APP_URL",
            "CUSTOMERIO_PIPELINES_URL",
            "CIO_WORKER_SANDBOX_URL",
        ],
    )
    @pytest.mark.parametrize(
        "value",
        [
            "https://track.example.com/api",
            "https://track.example.com/v1/",
            "https://track.example.com?debug=1",
            "https://track.example.com/#top",
            "track.example.com",
            "//track.example.com",
            "ftp://track.example.com",
            "https://",
            "https://track.example.com:99999",
            "https://track.example.com:port",
        ],
    )
    def test_bad_base_url_names_variable(self, name: str, value: str) -> None:
        """A base URL with a path, query, fragment, bad scheme, no host or bad port is refused."""
        with pytest.raises(ConfigError) as info:
            Settings.from_env({name: value})
        assert name in str(info.value)

    @pytest.mark.parametrize(
        ("name", "value"),
        [("CUSTOMERIO_TRACK_URL", "http://[::1"), ("CIO_WORKER_REDIS_URL", "redis://[::1")],
    )
    def test_malformed_ipv6_url_is_config_error(self, name: str, value: str) -> None:
        """A URL urlsplit cannot parse at all still raises ConfigError naming the variable."""
        with pytest.raises(ConfigError) as info:
            Settings.from_env({name: value})
        assert name in str(info.value)

    @pytest.mark.parametrize(
        "value", ["http://localhost:6379/0", "localhost:6379", "mysql://db/0", "6379"]
    )
    def test_bad_redis_scheme_names_variable(self, value: str) -> None:
        """A Redis URL with a scheme other than redis/rediss/unix/sentinel is refused."""
        with pytest.raises(ConfigError) as info:
            Settings.from_env({"CIO_WORKER_REDIS_URL": value})
        assert "CIO_WORKER_REDIS_URL" in str(info.value)

    @pytest.mark.parametrize("value", ["prom", "prom:", ":pw", "prompw"])
    def test_bad_metrics_basic_auth_is_refused_without_echoing_it(self, value: str) -> None:
        """CIO_WORKER_METRICS_BASIC_AUTH must be user:password; the error never shows the value."""
        with pytest.raises(ConfigError) as info:
            Settings.from_env({"CIO_WORKER_METRICS_BASIC_AUTH": value})
        assert "CIO_WORKER_METRICS_BASIC_AUTH" in str(info.value)
        assert value not in str(info.value)

    def test_sentinel_over_tls_is_refused(self) -> None:
        """sentinels:// would reach Redis in plain text (redis-py) or not at all (kombu has no such
        transport): refused, rather than run without the TLS the URL asks for."""
        with pytest.raises(ConfigError, match="sentinels:// .* not supported"):
            Settings.from_env(
                {"CIO_WORKER_REDIS_URL": "sentinels://s1:26379;sentinels://s2:26379/0"}
            )

    def test_tls_options_need_rediss_and_a_readable_ca(self, tmp_path: Path) -> None:
        """?ssl_ca_certs= (read by redis-py and kombu) needs rediss:// and a file that exists."""
        ca = tmp_path / "ca.crt"
        ca.write_text("-----BEGIN CERTIFICATE-----\n")
        good = f"rediss://:pw@r.internal:6380/0?ssl_ca_certs={ca}"
        assert Settings.from_env({"CIO_WORKER_REDIS_URL": good}).redis_url == good
        with pytest.raises(ConfigError, match="needs a rediss:// URL"):
            Settings.from_env({"CIO_WORKER_REDIS_URL": good.replace("rediss:", "redis:")})
        with pytest.raises(ConfigError, match="not a readable file") as info:
            Settings.from_env({"CIO_WORKER_REDIS_URL": f"{good}.missing"})
        assert ":pw@" not in str(info.value)

    def test_backoff_max_below_base(self) -> None:
        """A backoff cap below the base raises ConfigError naming the cap variable."""
        with pytest.raises(ConfigError) as info:
            Settings.from_env({"CIO_WORKER_BACKOFF_BASE_S": "10", "CIO_WORKER_BACKOFF_MAX_S": "5"})
        assert "CIO_WORKER_BACKOFF_MAX_S" in str(info.value)

    @pytest.mark.parametrize("value", ["maybe", "2", "on"])
    def test_bad_flag_names_variable(self, value: str) -> None:
        """A flag that is not 1/0, true/false or yes/no raises ConfigError naming it."""
        with pytest.raises(ConfigError) as info:
            Settings.from_env({"CIO_WORKER_ALLOW_EVICTION": value})
        assert "CIO_WORKER_ALLOW_EVICTION" in str(info.value)

    def test_config_error_is_a_cio_worker_error(self) -> None:
        """ConfigError can be caught as the package's base error."""
        with pytest.raises(CioWorkerError):
            Settings.from_env({"CUSTOMERIO_REGION": "mars"})


class TestRegionAndUrls:
    def test_eu_region_picks_eu_hosts(self) -> None:
        """Region `eu` points Track, App and Pipelines at the EU hosts."""
        settings = Settings.from_env({"CUSTOMERIO_REGION": "eu"})
        assert hosts(settings) == EU_HOSTS

    def test_us_region_picks_us_hosts(self) -> None:
        """Region `us`, given explicitly, points every API at the US hosts."""
        assert hosts(Settings.from_env({"CUSTOMERIO_REGION": "us"})) == US_HOSTS

    @pytest.mark.parametrize(
        ("variable", "field"),
        [
            ("CUSTOMERIO_TRACK_URL", "track_url"),
            ("CUSTOMERIO_APP_URL", "app_url"),
            ("CUSTOMERIO_PIPELINES_URL", "pipelines_url"),
        ],
    )
    def test_override_wins_over_region(self, variable: str, field: str) -> None:
        """A per-API URL override replaces that API's regional host and no other."""
        settings = Settings.from_env({"CUSTOMERIO_REGION": "eu", variable: "http://proxy.local:81"})
        expected = dict(EU_HOSTS, **{field: "http://proxy.local:81"})
        assert hosts(settings) == expected

    def test_trailing_slash_is_dropped(self) -> None:
        """A bare trailing slash is allowed and normalised away."""
        settings = Settings.from_env({"CUSTOMERIO_APP_URL": "http://localhost:9000/"})
        assert settings.app_url == "http://localhost:9000"


class TestSandbox:
    def test_sandbox_url_sets_all_base_urls(self) -> None:
        """CIO_WORKER_SANDBOX_URL points Track, App and Pipelines at the sandbox."""
        sandbox = "http://127.0.0.1:8765"
        settings = Settings.from_env({"CIO_WORKER_SANDBOX_URL": sandbox, "CUSTOMERIO_REGION": "eu"})
        assert settings.sandbox_url == sandbox
        assert hosts(settings) == dict.fromkeys(US_HOSTS, sandbox)

    def test_sandbox_supplies_credentials(self) -> None:
        """With the sandbox and no real credentials, the sandbox's credentials are used."""
        settings = Settings.from_env({"CIO_WORKER_SANDBOX_URL": "http://127.0.0.1:8765"})
        assert settings.site_id == SANDBOX_SITE_ID
        assert settings.track_api_key == SANDBOX_TRACK_API_KEY
        assert settings.app_api_key == SANDBOX_APP_API_KEY
        assert settings.pipelines_api_key == SANDBOX_PIPELINES_API_KEY
        assert settings.missing_credentials(ALL_FAMILIES) == []
        assert settings.replace(data_api="pipelines").missing_credentials(ALL_FAMILIES) == []

    def test_real_credentials_win_over_sandbox(self) -> None:
        """Credentials given explicitly are kept even when the sandbox is on."""
        settings = Settings.from_env(
            {
                "CIO_WORKER_SANDBOX_URL": "http://127.0.0.1:8765",
                "CUSTOMERIO_SITE_ID": "real-site",
                "CUSTOMERIO_TRACK_API_KEY": "real-track",
                "CUSTOMERIO_APP_API_KEY": "real-app",
            }
        )
        assert settings.site_id == "real-site"
        assert settings.track_api_key == "real-track"
        assert settings.app_api_key == "real-app"
        assert settings.pipelines_api_key == SANDBOX_PIPELINES_API_KEY

    def test_explicit_url_wins_over_sandbox(self) -> None:
        """A per-API URL override beats the sandbox URL for that API only."""
        settings = Settings.from_env(
            {
                "CIO_WORKER_SANDBOX_URL": "http://127.0.0.1:8765",
                "CUSTOMERIO_TRACK_URL": "http://track.local:81",
            }
        )
        assert settings.track_url == "http://track.local:81"
        assert settings.app_url == settings.pipelines_url == "http://127.0.0.1:8765"


class TestSecrets:
    SECRETS = {
        "CUSTOMERIO_TRACK_API_KEY": "trk-SECRET-1111",
        "CUSTOMERIO_APP_API_KEY": "app-SECRET-2222",
        "CUSTOMERIO_PIPELINES_API_KEY": "pipe-SECRET-3333",
        "CUSTOMERIO_WEBHOOK_SIGNING_KEY": "hook-SECRET-4444",
    }

    def test_keys_never_in_repr_or_str(self) -> None:
        """No API key or the webhook signing key appears in repr() or str() of Settings."""
        settings = Settings.from_env({"CUSTOMERIO_SITE_ID": "site-9", **self.SECRETS})
        for text in (repr(settings), str(settings), f"{settings}", repr(settings.replace())):
            for secret in self.SECRETS.values():
                assert secret not in text
        assert "site-9" in repr(settings)

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("redis://:hunter2-pw@redis.internal:6379/0", "redis://:***@redis.internal:6379/0"),
            ("rediss://default:hunter2-pw@r:6380/1", "rediss://default:***@r:6380/1"),
            ("redis://r:6379/0?password=hunter2-pw&db=2", "redis://r:6379/0?password=***&db=2"),
            ("unix://:hunter2-pw@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
            ("redis://:p@ss-hunter2-pw@r:6379/0", "redis://:***@r:6379/0"),
            (
                "sentinel://:hunter2-pw@s1:26379;sentinel://:hunter2-pw@s2:26379/0?master_name=m",
                "sentinel://:***@s1:26379;sentinel://:***@s2:26379/0?master_name=m",
            ),
        ],
    )
    def test_redis_password_never_in_repr(self, url: str, shown: str) -> None:
        """repr(Settings) shows the Redis URL with its password masked (every Sentinel host's,
        and a ?password= parameter too), keeping host, port, database and other parameters."""
        settings = Settings.from_env({"CIO_WORKER_REDIS_URL": url})
        assert settings.redis_url == url  # the real URL is still what connections use
        for text in (repr(settings), str(settings), repr(settings.replace())):
            assert "hunter2-pw" not in text
            assert f"redis_url={shown!r}" in text
        assert redact_url(url) == shown

    def test_repr_keeps_the_dataclass_shape(self) -> None:
        """Every non-secret field appears, in order, as the generated repr would show it."""
        text = repr(Settings(site_id="site-9", metrics_basic_auth="prom:hunter2-pw"))
        assert text.startswith("Settings(redis_url='redis://localhost:6379/0', redis_timeout_s=")
        assert "site_id='site-9'" in text and "log_format='json')" in text
        assert "hunter2-pw" not in text and "metrics_basic_auth" not in text

    def test_urls_in_log_lines_lose_their_password(self) -> None:
        """Whatever a log call carries (an error message naming the URL, say), a Redis URL's
        password and the exporter's credentials never reach the log line."""
        out = io.StringIO()
        configure_logging(Settings())
        structlog.configure(logger_factory=structlog.WriteLoggerFactory(file=out))
        log = structlog.get_logger("test")
        log.error(
            "redis_down",
            error="Error connecting to sentinel://:hunter2-pw@s1:26379;sentinel://:hunter2-pw@s2",
            url="rediss://u:hunter2-pw@r:6380/0?ssl_ca_certs=/etc/ca.crt",
            metrics_basic_auth="prom:hunter2-pw",
        )
        line = json.loads(out.getvalue())
        assert "hunter2-pw" not in out.getvalue()
        assert line["url"] == "rediss://u:***@r:6380/0?ssl_ca_certs=/etc/ca.crt"
        assert line["error"].endswith("sentinel://:***@s1:26379;sentinel://:***@s2")
        logging.getLogger("httpx").setLevel(logging.NOTSET)

    def test_every_line_names_its_stage_not_its_private_module(self) -> None:
        """One logger convention: `logs.get_logger(__name__)` in every module; a line says which
        stage wrote it, so log queries survive moving code between a stage's private modules."""
        out = io.StringIO()
        configure_logging(Settings())
        structlog.configure(logger_factory=structlog.WriteLoggerFactory(file=out))
        logs.get_logger("cio_worker.worker._batcher").warning("batch_failed")
        logs.get_logger("cio_worker.connection").warning("redis_down")
        logs.get_logger("cio_worker.sandbox.faults").warning("fault")
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [line["stage"] for line in lines] == [
            "cio_worker.worker",
            "cio_worker.connection",
            "cio_worker.sandbox",
        ]
        sources = Path(__file__).resolve().parent.parent / "cio_worker"
        made_elsewhere = [
            str(path)
            for path in sources.rglob("*.py")
            if "structlog.get_logger(" in path.read_text() and path.name != "logs.py"
        ]
        assert made_elsewhere == []
        logging.getLogger("httpx").setLevel(logging.NOTSET)

    def test_keys_still_readable_as_attributes(self) -> None:
        """Hiding keys from repr does not hide them from code that needs them."""
        settings = Settings.from_env(self.SECRETS)
        assert settings.track_api_key == self.SECRETS["CUSTOMERIO_TRACK_API_KEY"]
        assert settings.app_api_key == self.SECRETS["CUSTOMERIO_APP_API_KEY"]
        assert settings.pipelines_api_key == self.SECRETS["CUSTOMERIO_PIPELINES_API_KEY"]
        assert settings.webhook_signing_key == self.SECRETS["CUSTOMERIO_WEBHOOK_SIGNING_KEY"]


class TestMissingCredentials:
    def test_track_needs_site_id_and_track_key(self) -> None:
        """The track family needs both Track credentials when data_api is track."""
        assert Settings.from_env({}).missing_credentials({"track"}) == [
            "CUSTOMERIO_SITE_ID",
            "CUSTOMERIO_TRACK_API_KEY",
        ]

    def test_track_with_only_site_id(self) -> None:
        """Only the missing Track credential is listed."""
        settings = Settings.from_env({"CUSTOMERIO_SITE_ID": "s"})
        assert settings.missing_credentials({"track"}) == ["CUSTOMERIO_TRACK_API_KEY"]

    def test_track_complete(self) -> None:
        """Nothing is missing when both Track credentials are set."""
        settings = Settings.from_env({"CUSTOMERIO_SITE_ID": "s", "CUSTOMERIO_TRACK_API_KEY": "k"})
        assert settings.missing_credentials({"track"}) == []

    @pytest.mark.parametrize("family", ["transactional", "broadcast", "app"])
    def test_app_families_need_app_key(self, family: str) -> None:
        """Each App API family needs the App API key."""
        assert Settings.from_env({}).missing_credentials({family}) == ["CUSTOMERIO_APP_API_KEY"]

    def test_app_key_listed_once(self) -> None:
        """The App API key is listed once however many App families are consumed."""
        missing = Settings.from_env({}).missing_credentials({"transactional", "broadcast", "app"})
        assert missing == ["CUSTOMERIO_APP_API_KEY"]

    def test_app_key_present(self) -> None:
        """App families need nothing more once the App API key is set."""
        settings = Settings.from_env({"CUSTOMERIO_APP_API_KEY": "a"})
        assert settings.missing_credentials({"transactional", "broadcast", "app"}) == []

    def test_pipelines_needs_only_pipelines_key(self) -> None:
        """With data_api=pipelines the track family needs the Pipelines key, not Track's."""
        settings = Settings.from_env({"CIO_WORKER_DATA_API": "pipelines"})
        assert settings.missing_credentials({"track"}) == ["CUSTOMERIO_PIPELINES_API_KEY"]

    def test_pipelines_complete_without_track_credentials(self) -> None:
        """With data_api=pipelines and its key set, missing Track credentials do not matter."""
        settings = Settings.from_env(
            {"CIO_WORKER_DATA_API": "pipelines", "CUSTOMERIO_PIPELINES_API_KEY": "p"}
        )
        assert settings.missing_credentials({"track"}) == []

    def test_all_families_missing_everything(self) -> None:
        """Consuming every family with no credentials lists Track and App variables."""
        assert Settings.from_env({}).missing_credentials(ALL_FAMILIES) == [
            "CUSTOMERIO_SITE_ID",
            "CUSTOMERIO_TRACK_API_KEY",
            "CUSTOMERIO_APP_API_KEY",
        ]

    def test_no_families_need_nothing(self) -> None:
        """A worker consuming no family needs no credential."""
        assert Settings.from_env({}).missing_credentials(set()) == []
