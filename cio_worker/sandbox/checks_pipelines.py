"""Body checks for the Data Pipelines API: single calls and batches."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from cio_worker.sandbox.checks import (
    KB,
    Check,
    Incoming,
    Problem,
    batch_body,
    body_object,
    join,
    json_longer_than,
)

#: One call (a request, or one item of a batch), bytes.
MAX_CALL_BYTES = 32 * KB
#: A whole batch request, bytes.
MAX_BATCH_BYTES = 500 * KB

#: Call types. The published batch schema omits `alias`, but Customer.io's own Pipelines
#: libraries send every alias inside /v1/batch, so a batch accepts it (customerio-api-notes.md).
CALL_TYPES = ("identify", "track", "page", "screen", "group", "alias")

_OBJECT_FIELDS: dict[str, tuple[str, ...]] = {
    "identify": ("traits", "context", "integrations"),
    "group": ("traits", "context", "integrations"),
    "track": ("properties", "context", "integrations"),
    "page": ("properties", "context", "integrations"),
    "screen": ("properties", "context", "integrations"),
    "alias": ("context", "integrations"),
}


def check_call(call_type: str) -> Check:
    """The check for POST /v1/{call_type}."""

    def check(incoming: Incoming) -> list[Problem]:
        if incoming.size > MAX_CALL_BYTES:
            message = f"request is larger than {MAX_CALL_BYTES} bytes"
            return [Problem("", "too_large", message)]
        body, problems = body_object(incoming)
        if not problems and "type" in body and body["type"] != call_type:
            # The published schemas allow `type` on a single call only as the endpoint's own.
            message = f"type must be {call_type} on /v1/{call_type} (or left out)"
            return [Problem("type", "invalid", message)]
        return problems or check_message(call_type, body, "")

    check.__doc__ = f"POST /v1/{call_type}."
    return check


def check_batch(incoming: Incoming) -> list[Problem]:
    """POST /v1/batch: `{"batch": [call, ...], "context"?, "integrations"?}`."""
    if incoming.size > MAX_BATCH_BYTES:
        return [Problem("", "too_large", f"request is larger than {MAX_BATCH_BYTES} bytes")]
    body, batch, problems = batch_body(incoming, "calls")
    if problems:
        return problems
    problems = _check_objects(body, ("context", "integrations"), "")
    for index, item in enumerate(batch):
        prefix = f"batch[{index}]"
        if not isinstance(item, dict):
            problems.append(Problem(prefix, "invalid", f"{prefix} must be an object"))
            continue
        call_type = item.get("type")
        if not isinstance(call_type, str) or call_type not in CALL_TYPES:
            message = f"{prefix}.type must be one of {', '.join(CALL_TYPES)}"
            problems.append(Problem(join(prefix, "type"), "invalid", message))
        elif json_longer_than(item, MAX_CALL_BYTES):
            message = f"{prefix} is larger than {MAX_CALL_BYTES} bytes"
            problems.append(Problem(prefix, "too_large", message))
        else:
            problems += check_message(call_type, item, prefix)
    return problems


def check_message(call_type: str, message: Mapping[str, object], prefix: str) -> list[Problem]:
    """One call's ids, timestamp and per-type fields."""
    problems: list[Problem] = []
    if call_type == "alias":
        for name in ("userId", "previousId"):
            if not _non_empty(message.get(name)):
                field = join(prefix, name)
                problems.append(Problem(field, "required", f"{field} is required for alias"))
    elif not (_non_empty(message.get("userId")) or _non_empty(message.get("anonymousId"))):
        field = join(prefix, "userId")
        text = f"{field} or {join(prefix, 'anonymousId')} is required (a non-empty string)"
        problems.append(Problem(field, "required", text))
    if call_type == "track" and not _non_empty(message.get("event")):
        field = join(prefix, "event")
        problems.append(Problem(field, "required", f"{field} is required for track"))
    if call_type == "group" and not _non_empty(message.get("groupId")):
        field = join(prefix, "groupId")
        problems.append(Problem(field, "required", f"{field} is required for group"))
    if "timestamp" in message and not _is_iso8601(message["timestamp"]):
        field = join(prefix, "timestamp")
        problems.append(Problem(field, "invalid", f"{field} must be an ISO-8601 string"))
    return problems + _check_objects(message, _OBJECT_FIELDS[call_type], prefix)


def _check_objects(
    message: Mapping[str, object], names: tuple[str, ...], prefix: str
) -> list[Problem]:
    problems: list[Problem] = []
    for name in names:
        if name in message and not isinstance(message[name], dict):
            field = join(prefix, name)
            problems.append(Problem(field, "invalid", f"{field} must be an object"))
    return problems


def _non_empty(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _is_iso8601(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True
