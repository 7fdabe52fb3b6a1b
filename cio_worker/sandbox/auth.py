"""Credentials per API: Basic for Track and Pipelines, Bearer for App."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Literal

from cio_worker.sandbox.config import SandboxConfig
from cio_worker.sandbox.endpoints import Api

AuthResult = Literal["ok", "bad", "missing"]


def authenticate(api: Api, authorization: str | None, config: SandboxConfig) -> AuthResult:
    """Check the Authorization header for `api`: ok, bad (present but wrong) or missing."""
    if not authorization:
        return "missing"
    if api == "app":
        return check_bearer(authorization, config.app_api_key)
    if api == "pipelines":
        # The write key is the user name; the password is empty (docs/customerio-api.md §1).
        return check_basic(authorization, config.pipelines_api_key, "")
    return check_basic(authorization, config.site_id, config.track_api_key)


def check_basic(authorization: str, username: str, password: str) -> AuthResult:
    """HTTP Basic with exactly `username:password`."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return "bad"
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return "bad"
    expected = f"{username}:{password}".encode()
    return "ok" if hmac.compare_digest(decoded, expected) else "bad"


def check_bearer(authorization: str, token: str) -> AuthResult:
    """`Bearer <token>`."""
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return "bad"
    return "ok" if hmac.compare_digest(given.strip().encode(), token.encode()) else "bad"
