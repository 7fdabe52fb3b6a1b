"""Who is asking: HTTP basic auth, a bearer token, or the session cookie the login form sets.

Credentials come from the environment (`CIO_WORKER_CONSOLE_BASIC_AUTH=user:password`,
`CIO_WORKER_CONSOLE_TOKEN`); every comparison is constant-time (`hmac.compare_digest`). The
cookie and the forms' CSRF tokens are signed with a key derived from those credentials, so every
replica of the console accepts the same cookie, and changing the credentials ends every session.
Without credentials (`--local-only`) everyone on the loopback host is `local`, and the key is
random per process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.requests import Request

#: The session cookie's name and lifetime.
SESSION_COOKIE = "cio_console"
SESSION_TTL_S = 12 * 3600
#: The realm browsers show in their sign-in dialog.
REALM = "cio-worker console"
#: PBKDF2 rounds deriving the signing key from the credentials.
KEY_ROUNDS = 200_000
#: Shortest token accepted: a console that can replay and delete must not open to a guess.
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True, slots=True)
class Identity:
    """An operator: `user` (the basic-auth user, `token`, or `local`) and how they signed in
    (`basic`, `bearer`, `cookie`, `none`)."""

    user: str
    via: str


class Auth:
    """Checks requests against the configured credentials; signs sessions and CSRF tokens."""

    def __init__(
        self,
        basic_auth: str | None,
        token: str | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.basic_auth = basic_auth
        self.token = token
        self._clock = clock
        material = f"{basic_auth or ''}\0{token or ''}".encode()
        # A slow derivation: whoever holds one signed cookie must not be able to test password
        # guesses against it at hash speed. Once per process, about 0.1 s.
        self._key = (
            hashlib.pbkdf2_hmac("sha256", material, b"cio-worker console session", KEY_ROUNDS)
            if self.required
            else secrets.token_bytes(32)
        )

    @property
    def required(self) -> bool:
        return bool(self.basic_auth or self.token)

    @property
    def kinds(self) -> str:
        """How one may sign in, for the startup line: `basic auth`, `token`, or both."""
        if not self.required:
            return "no sign-in: local only"
        return " or ".join(
            name for name, on in (("basic auth", self.basic_auth), ("token", self.token)) if on
        )

    def identify(self, request: Request) -> Identity | None:
        """Who sent `request`, or None when it carries no valid credentials."""
        if not self.required:
            return Identity("local", "none")
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and self.basic_auth:
            user = self._basic_user(value.strip())
            if user is not None:
                return Identity(user, "basic")
        elif scheme == "bearer" and self.token and _same(value.strip(), self.token):
            return Identity("token", "bearer")
        user = self._session_user(request.cookies.get(SESSION_COOKIE, ""))
        return Identity(user, "cookie") if user is not None else None

    def login(self, form: Mapping[str, str]) -> str | None:
        """The user the login form's fields sign in (token, or user and password), or None."""
        token = form.get("token", "")
        if self.token and token and _same(token, self.token):
            return "token"
        user, password = form.get("user", ""), form.get("password", "")
        if self.basic_auth and user and password and _same(f"{user}:{password}", self.basic_auth):
            return user
        return None

    def challenge(self) -> dict[str, str]:
        """The `WWW-Authenticate` header of a 401: basic auth makes a browser ask for it."""
        scheme = "Basic" if self.basic_auth else "Bearer"
        charset = ', charset="UTF-8"' if self.basic_auth else ""
        return {"www-authenticate": f'{scheme} realm="{REALM}"{charset}'}

    # -- the session cookie ----------------------------------------------------------------------
    def session_cookie(self, user: str) -> str:
        """`<user, base64url>.<expiry>.<signature>`."""
        name = base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")
        unsigned = f"{name}.{int(self._clock() + SESSION_TTL_S)}"
        return f"{unsigned}.{self._sign('session', unsigned)}"

    def _session_user(self, cookie: str) -> str | None:
        name, _, rest = cookie.partition(".")
        expiry, _, signature = rest.partition(".")
        if not (name and expiry.isdigit() and signature):
            return None
        if not _same(signature, self._sign("session", f"{name}.{expiry}")):
            return None
        if int(expiry) < self._clock():
            return None
        try:
            return base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None

    # -- CSRF --------------------------------------------------------------------------------------
    def csrf_token(self, user: str) -> str:
        """The token every form of `user` carries; a POST without it is refused."""
        return self._sign("csrf", user)

    def csrf_ok(self, user: str, given: str) -> bool:
        return bool(given) and _same(given, self.csrf_token(user))

    def _sign(self, purpose: str, text: str) -> str:
        message = f"{purpose}\0{text}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def _basic_user(self, encoded: str) -> str | None:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if self.basic_auth and _same(decoded, self.basic_auth):
            return decoded.partition(":")[0]
        return None


def _same(given: str, expected: str) -> bool:
    """Constant-time equality (the time taken does not depend on where they differ)."""
    return hmac.compare_digest(given.encode(), expected.encode())
