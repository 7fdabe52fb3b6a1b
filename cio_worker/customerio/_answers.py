"""Customer.io's answers: a 2xx becomes an `Answer`, anything else one of errors.py's exceptions.

Messages name the route template (`/api/v1/customers/{id}`), never the ids in a path, so no
person's id reaches a log line or a dead letter; nor does a credential.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from cio_worker.customerio._operations import Api, HttpOperation
from cio_worker.errors import AuthError, RateLimitedError, RejectedError, ServerError

#: Characters of a response body kept for an error message or a dead letter.
BODY_EXCERPT_CHARS = 500


@dataclass(frozen=True, slots=True)
class Answer:
    """Customer.io's 2xx answer to one request: its status, parsed JSON body (or None) and
    round-trip time."""

    status_code: int
    body: Any
    elapsed_s: float


def outcome(
    op: HttpOperation, response: httpx.Response, elapsed: float, job_id: str | None
) -> Answer:
    """The `Answer` to `op` on a 2xx; otherwise raise the `DeliveryError` its status means."""
    status = response.status_code
    if 200 <= status < 300:
        return Answer(status, _json_or_none(response), elapsed)
    excerpt = response.text[:BODY_EXCERPT_CHARS]
    where = f"{op.method} {op.api}:{op.route}"  # the template: no person's id in a dead letter
    info: dict[str, Any] = {"job_id": job_id, "status_code": status, "body_excerpt": excerpt}
    if status == 429:
        raise RateLimitedError(
            f"429 from {op.api}", retry_after_seconds=parse_retry_after(response.headers), **info
        )
    if status == 408 or status >= 500:
        raise ServerError(
            f"{status} from {where}",
            retry_after_seconds=parse_retry_after(response.headers),
            **info,
        )
    if status in (401, 403):
        raise AuthError(
            f"{status} from {op.api}: the {op.api} credential was refused "
            f"({_credential_names(op.api)})",
            credential=op.api,
            **info,
        )
    raise RejectedError(f"{status} from {where}: {excerpt}", **info)


def _credential_names(api: Api) -> str:
    return {
        "track": "CUSTOMERIO_SITE_ID / CUSTOMERIO_TRACK_API_KEY",
        "app": "CUSTOMERIO_APP_API_KEY",
        "pipelines": "CUSTOMERIO_PIPELINES_API_KEY",
    }[api]


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json() if response.content else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def parse_retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """`Retry-After` in seconds (delta-seconds or an HTTP-date), or None if absent or invalid."""
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime dates carry no zone; HTTP dates are always UTC
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def refused_items(status: int, body: Any) -> dict[int, str]:
    """The items of a batch Customer.io refused (a 207's `errors`): batch_index -> reason."""
    if status != 207 or not isinstance(body, dict):
        return {}
    rejected: dict[int, str] = {}
    for error in body.get("errors") or []:
        if isinstance(error, dict) and isinstance(error.get("batch_index"), int):
            detail = ", ".join(
                str(error[key]) for key in ("reason", "field", "message") if error.get(key)
            )
            rejected[error["batch_index"]] = f"207: item refused: {detail or 'no detail'}"
    return rejected
