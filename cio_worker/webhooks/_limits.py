"""How the receiver holds up against clients that cannot sign: bounds on bodies, in memory and time.

The signature covers the whole body, so a forged request with plausible headers is only caught
once its body is in; everything before that point is bounded instead (webhooks/_app.py applies
these in this order):

- Refused on the headers alone, before a byte of body is read (and the connection closed, so the
  rest of the upload is never parsed): signature headers missing, sent twice (a proxy merging or
  a client repeating them would otherwise make "which one counts" ambiguous), malformed or stale;
  a Content-Length over the limit.
- The body limit defaults to 1 MiB. Customer.io's events are about a kilobyte; the largest are
  "sent" events with Body Content on, which carry the message's HTML: an email past ~100 KB is
  clipped by Gmail, so senders stay well under it, and even if JSON escaping (Go's encoder writes
  `<` as `\\u003c`, six bytes) tripled that, 1 MiB leaves room. The old 5 MiB let 50 forged
  posts hold 250 MB.
- At most CIO_WORKER_WEBHOOK_MAX_CONCURRENT_BODIES (32) bodies are read at once, and only a
  quarter of those (8) may be large: over 64 KiB declared, or chunked with no declared size.
  Memory held by bodies is therefore at most 8 x 1 MiB + 24 x 64 KiB, about 9.5 MiB, whatever the
  number of clients. Small bodies, which every event without Body Content is, get a lane of their
  own, so uploads stalled near the limit cannot lock Customer.io's ordinary events out. A request
  that finds no slot is answered 503 with Retry-After at once rather than queued: a queue would
  hold its connection (and what uvicorn buffered of its body) for nothing.
- Each body must arrive within CIO_WORKER_WEBHOOK_BODY_TIMEOUT_S (5 s) of its headers, or it is
  answered 408 and its slot freed. Customer.io gives up on a call after 4 s, so a slower body is
  worthless anyway; the deadline is what takes slots back from stalled uploads.
- The body is fed to an incremental HMAC as it arrives and its pieces are joined into one buffer
  only once the signature matched: a forged body is never held twice.
- Refusals are counted in Redis after the answer has gone (and its connection closed): counts
  accumulate in memory and at most one flush runs at a time (webhooks/_upkeep.py), so a flood of
  refusals costs one Redis round trip at a time and cannot take the worker threads that store
  events.
- uvicorn bounds what comes before the app sees a request (webhooks/_server.py).

What this does not stop: enough clients stalling small uploads can keep every slot busy (each
for at most the body timeout), and Customer.io then gets 503s and retries; uvicorn has no timer
on a request's headers, so connections that never finish them are bounded only by the proxy in
front. Per-client limits belong in that proxy.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.requests import Request

from cio_worker.errors import WebhookSignatureError

#: Bodies up to this size (declared) read in the small lane; larger or chunked ones are "large".
SMALL_BODY_BYTES = 64 * 1024


class BodyTooLargeError(Exception):
    """The body grew past the limit while it was read (its declared length said otherwise)."""


class BodySlots:
    """How many bodies are being read, in two lanes; see the module docstring. The event loop is
    single-threaded and take/give never await, so plain counters are exact."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.large = max(1, total // 4)
        self.busy = 0
        self.busy_large = 0

    def take(self, large: bool) -> bool:
        if self.busy >= self.total or (large and self.busy_large >= self.large):
            return False
        self.busy += 1
        self.busy_large += large
        return True

    def give(self, large: bool) -> None:
        self.busy -= 1
        self.busy_large -= large


def single_header(headers: Headers, name: str) -> str | None:
    """The header's value; refused when sent more than once (first-one-wins would let whatever
    sits between Customer.io and us pick the one that counts)."""
    values = headers.getlist(name)
    if len(values) > 1:
        raise WebhookSignatureError("duplicate", f"{name} sent more than once")
    return values[0] if values else None


def declared_length(headers: Headers) -> int | None:
    """The body size the client declared; None when chunked (unknown until read). uvicorn's h11
    has already refused malformed or conflicting Content-Length headers."""
    declared = headers.get("content-length")
    if declared is not None and declared.strip().isdigit():
        return int(declared)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return None
    return 0


async def read_body(
    request: Request, signer: hmac.HMAC, limit: int
) -> tuple[list[bytes], hmac.HMAC]:
    """The body's chunks, fed to `signer` as they come; BodyTooLargeError past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        signer.update(chunk)
        chunks.append(chunk)
    return chunks, signer
