"""How a setting is read from the environment: typed, validating reads of one mapping
(`EnvReader`), and the dataclass fields that name the variable, default and bounds of a setting
in one place (`number`, `whole`, `choice`, ...), so `Settings` is its own table of variables.

Every read raises `ConfigError` naming the variable; a secret's value is never echoed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from cio_worker.errors import ConfigError

T = TypeVar("T")
S = TypeVar("S", bound=str)

#: Reads one setting, given the values read before it (some settings fall back on others).
Read = Callable[["EnvReader", Mapping[str, Any]], object]

_READ = "cio_worker.read"


class EnvReader:
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


# -- Fields: a setting's default and how it is read, declared once --------------------------------
def setting(default: T, read: Read, *, secret: bool = False) -> T:
    """A dataclass field defaulting to `default`, read from the environment by `read`; a secret
    is left out of `repr`."""
    return dataclasses.field(default=default, repr=not secret, metadata={_READ: read})


def read_setting(
    field: dataclasses.Field[Any], env: EnvReader, read_so_far: Mapping[str, Any]
) -> object:
    """The value of the setting `field` declares, read from `env`."""
    read: Read = field.metadata[_READ]
    return read(env, read_so_far)


def number(variable: str, default: float, *, low: float, high: float) -> float:
    """A number within [low, high]."""
    return setting(default, lambda env, _: env.number(variable, default, low=low, high=high))


def whole(variable: str, default: int, *, low: int, high: int) -> int:
    """A whole number within [low, high]."""
    return setting(
        default, lambda env, _: int(env.number(variable, default, low=low, high=high, whole=True))
    )


def choice(variable: str, allowed: tuple[S, ...], default: S, *, upper: bool = False) -> S:
    """One of `allowed`, read case-insensitively (upper- or lower-cased as `upper` says)."""
    return setting(default, lambda env, _: env.choice(variable, allowed, default, upper=upper))


def flag(variable: str) -> bool:
    """1/0, true/false or yes/no; off when unset."""
    return setting(False, lambda env, _: env.flag(variable))


def on_off(variable: str, default: bool) -> bool:
    """`on` or `off`."""
    fallback = "on" if default else "off"
    return setting(default, lambda env, _: env.choice(variable, ("on", "off"), fallback) == "on")


def redis_url_field(variable: str, default: str) -> str:
    """A Redis URL: redis://, rediss://, unix:// or sentinel://."""
    return setting(default, lambda env, _: env.redis_url(variable, default))


def optional_base_url(variable: str) -> str | None:
    """`scheme://host[:port]` over http or https, or None when unset."""
    return setting(None, lambda env, _: env.base_url(variable))


def basic_auth(variable: str) -> str | None:
    """`user:password`, or None when unset; a secret."""
    return setting(None, lambda env, _: env.basic_auth(variable), secret=True)
