"""Is this request from Customer.io? Its reporting-webhook signature, checked.

Reporting-webhooks spec, "Securely verifying requests": `X-CIO-Signature` is the hex HMAC-SHA256
of `v0:<X-CIO-Timestamp>:<raw body>` keyed with CUSTOMERIO_WEBHOOK_SIGNING_KEY. It is compared in
constant time, and a timestamp more than 5 minutes away from now is refused, so a captured request
cannot be replayed later. The receiver checks in three steps (headers, then the body as it
arrives, then the digest) so that a forged request is refused as early as possible;
`verify_signature` does all three for a body already in hand.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from cio_worker.config import Settings
from cio_worker.errors import ConfigError, WebhookSignatureError

#: Signed requests older (or newer) than this are refused, seconds: Customer.io's 5 minutes.
DEFAULT_TOLERANCE_S = 300


def signing_key(settings: Settings) -> str:
    """The configured signing key, or a ConfigError naming the variable."""
    if not settings.webhook_signing_key:
        raise ConfigError(
            "CUSTOMERIO_WEBHOOK_SIGNING_KEY: not set; it verifies Customer.io's reporting webhooks"
        )
    return settings.webhook_signing_key


def sign(key: str, timestamp: int | str, body: bytes) -> str:
    """The X-CIO-Signature Customer.io sends with `body` at `timestamp`."""
    signer = start_signature(key, str(timestamp))
    signer.update(body)
    return signer.hexdigest()


def start_signature(key: str, timestamp: str) -> hmac.HMAC:
    """An HMAC fed `v0:<timestamp>:`; `update()` it with the body as it arrives, then compare
    with `signature_matches`: a body is verified without being held twice."""
    return hmac.new(key.encode(), b"v0:" + timestamp.encode("ascii") + b":", hashlib.sha256)


def check_signature_headers(
    timestamp: str | None,
    signature: str | None,
    *,
    now: float | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> str:
    """What can be refused before reading the body: both headers present, a timestamp of Unix
    seconds within `tolerance_s` of now. Returns the timestamp as signed (stripped).

    Raises WebhookSignatureError (reason missing, malformed or stale).
    """
    if not timestamp or not signature:
        raise WebhookSignatureError("missing", "X-CIO-Timestamp and X-CIO-Signature are required")
    text = timestamp.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise WebhookSignatureError("malformed", "X-CIO-Timestamp must be Unix seconds")
    current = time.time() if now is None else now
    if abs(current - int(text)) > tolerance_s:
        raise WebhookSignatureError(
            "stale", f"X-CIO-Timestamp is more than {tolerance_s:g}s away from now"
        )
    return text


def signature_matches(signer: hmac.HMAC, signature: str) -> bool:
    """Whether `signature` (hex, any case) is the digest of what `signer` was fed; compared in
    constant time, so there is no byte-by-byte oracle."""
    expected = signer.hexdigest().encode()
    given = signature.strip().lower().encode("utf-8", "replace")
    return hmac.compare_digest(expected, given)


def verify_signature(
    key: str,
    *,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> int:
    """Check a request's X-CIO-Timestamp and X-CIO-Signature; return the timestamp.

    Raises WebhookSignatureError (reason missing, malformed, stale or mismatch).
    """
    text = check_signature_headers(timestamp, signature, now=now, tolerance_s=tolerance_s)
    signer = start_signature(key, text)
    signer.update(body)
    if not signature_matches(signer, signature or ""):
        raise WebhookSignatureError("mismatch", "X-CIO-Signature does not match the body")
    return int(text)
