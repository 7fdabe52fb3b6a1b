"""Body checks for the App API: transactional sends, API-triggered broadcasts, people search."""

from __future__ import annotations

import json
from collections.abc import Mapping

from cio_worker.sandbox.checks import (
    Incoming,
    Problem,
    body_object,
    check_identifiers,
    is_int,
)

#: Recipients of one transactional email, across to, cc and bcc.
MAX_EMAIL_RECIPIENTS = 15
#: Items in a broadcast's `ids` or `per_user_data`.
MAX_BROADCAST_PEOPLE = 10_000

SEND_IDENTIFIERS = ("id", "email", "cio_id")
AUDIENCE_KEYS = ("recipients", "emails", "ids", "per_user_data", "data_file_url")


def check_send(incoming: Incoming) -> list[Problem]:
    """POST /v1/send/push and /v1/send/sms: message id and identifiers; `to` a string if given."""
    body, problems = body_object(incoming)
    problems = problems or _check_send_fields(body)
    if not problems and "to" in body and not (isinstance(body["to"], str) and body["to"]):
        return [Problem("to", "invalid", "to must be a non-empty string")]
    return problems


def check_send_email(incoming: Incoming) -> list[Problem]:
    """POST /v1/send/email: as check_send, plus `to` and at most 15 recipients."""
    body, problems = body_object(incoming)
    problems = problems or _check_send_fields(body)
    if problems:
        return problems
    to = body.get("to")
    if not isinstance(to, str) or not to.strip():
        return [Problem("to", "required", "to is required (a string of addresses)")]
    if "headers" in body and not _is_header_list(body["headers"]):
        message = 'headers must be a JSON string of [{"name": ..., "value": ...}] (strings)'
        return [Problem("headers", "invalid", message)]
    recipients = sum(_count_addresses(body.get(name)) for name in ("to", "cc", "bcc"))
    if recipients > MAX_EMAIL_RECIPIENTS:
        message = f"to, cc and bcc have {recipients} recipients; at most {MAX_EMAIL_RECIPIENTS}"
        return [Problem("to", "too_many", message)]
    return []


def _check_send_fields(body: Mapping[str, object]) -> list[Problem]:
    problems: list[Problem] = []
    message_id = body.get("transactional_message_id")
    if not is_int(message_id) and not (isinstance(message_id, str) and message_id):
        message = "transactional_message_id is required (an integer or a non-empty string)"
        problems.append(Problem("transactional_message_id", "required", message))
    problems += check_identifiers(body.get("identifiers"), "identifiers", SEND_IDENTIFIERS)
    if "message_data" in body and not isinstance(body["message_data"], dict):
        problems.append(Problem("message_data", "invalid", "message_data must be an object"))
    return problems


def _is_header_list(value: object) -> bool:
    """The published `headers` shape: a string holding a JSON array of {name, value} strings."""
    if not isinstance(value, str):
        return False
    try:
        parsed = json.loads(value)
    except ValueError:
        return False
    return isinstance(parsed, list) and all(
        isinstance(item, dict)
        and set(item) == {"name", "value"}
        and all(isinstance(part, str) and part for part in item.values())
        for item in parsed
    )


def _count_addresses(value: object) -> int:
    if isinstance(value, str):
        return len([part for part in value.split(",") if part.strip()])
    if isinstance(value, list):
        return len(value)
    return 0


def check_broadcast(incoming: Incoming) -> list[Problem]:
    """POST /v1/campaigns/{broadcast_id}/triggers: id, existence, then at most one audience."""
    broadcast_id = incoming.params["broadcast_id"]
    if not broadcast_id.isascii() or not broadcast_id.isdigit():
        message = "broadcast_id must be a number"
        return [Problem("broadcast_id", "invalid", message)]
    if int(broadcast_id) in incoming.config.missing_broadcast_ids:
        message = f"broadcast {broadcast_id} not found"
        return [Problem("broadcast_id", "not_found", message, status=404)]
    if incoming.body_error == "missing":
        return []  # no body: the audience set up in the UI
    body, problems = body_object(incoming)
    if problems:
        return problems
    if "data" in body and not isinstance(body["data"], dict):
        return [Problem("data", "invalid", "data must be an object")]
    present = [key for key in AUDIENCE_KEYS if key in body]
    if len(present) > 1:
        detail = f"use at most one of {', '.join(AUDIENCE_KEYS)}; got {', '.join(present)}"
        return [_unprocessable("", detail)]
    if present:
        return _check_audience(present[0], body[present[0]])
    return []


def _unprocessable(pointer: str, detail: str) -> Problem:
    return Problem(pointer, "invalid", detail, status=422)


def _check_audience(key: str, value: object) -> list[Problem]:
    pointer = f"/{key}"
    if key == "recipients":
        if not isinstance(value, dict) or not value:
            return [_unprocessable(pointer, "recipients must be a non-empty filter object")]
        return []
    if key == "data_file_url":
        if not isinstance(value, str) or not value.startswith(("https://", "http://")):
            return [_unprocessable(pointer, "data_file_url must be an http(s) URL")]
        return []
    if not isinstance(value, list) or not value:
        return [_unprocessable(pointer, f"{key} must be a non-empty array")]
    if key in ("ids", "per_user_data") and len(value) > MAX_BROADCAST_PEOPLE:
        detail = f"{key} has {len(value)} items; at most {MAX_BROADCAST_PEOPLE}"
        return [_unprocessable(pointer, detail)]
    for index, item in enumerate(value):
        problem = _check_audience_item(key, item)
        if problem:
            return [_unprocessable(f"{pointer}/{index}", f"{key}[{index}] {problem}")]
    return []


def _check_audience_item(key: str, item: object) -> str | None:
    if key == "emails":
        return None if isinstance(item, str) and "@" in item else "must be an email address"
    if key == "ids":
        ok = is_int(item) or (isinstance(item, str) and item)
        return None if ok else "must be a non-empty string or an integer"
    if not isinstance(item, dict) or not ("id" in item or "email" in item):
        return "must be an object with id or email"
    if "data" in item and not isinstance(item["data"], dict):
        return "data must be an object"
    return None


def check_search(incoming: Incoming) -> list[Problem]:
    """POST /v1/customers: `{"filter": {...}}` in Customer.io's audience-filter grammar."""
    body, problems = body_object(incoming)
    if problems:
        return problems
    if "filter" not in body:
        return [Problem("filter", "required", "filter is required")]
    return _filter_problems("filter", body["filter"])


def _filter_problems(field: str, value: object) -> list[Problem]:
    if not isinstance(value, dict) or len(value) != 1:
        message = f"{field} must have exactly one of and, or, not, segment, attribute"
        return [Problem(field, "invalid", message)]
    ((key, inner),) = value.items()
    where = f"{field}.{key}"
    if key in ("and", "or"):
        if not isinstance(inner, list) or not inner:
            return [Problem(where, "invalid", f"{where} must be a non-empty array")]
        return [p for i, item in enumerate(inner) for p in _filter_problems(f"{where}[{i}]", item)]
    if key == "not":
        return _filter_problems(where, inner)
    if key == "segment":
        if not isinstance(inner, dict) or not is_int(inner.get("id")):
            return [Problem(f"{where}.id", "invalid", f"{where}.id must be an integer")]
        return []
    if key == "attribute":
        return _attribute_problems(where, inner)
    return [Problem(field, "invalid", f"{field} has unknown key {key}")]


def _attribute_problems(where: str, inner: object) -> list[Problem]:
    if not isinstance(inner, dict) or not isinstance(inner.get("field"), str):
        return [Problem(f"{where}.field", "required", f"{where}.field is required")]
    if inner.get("operator") not in ("eq", "exists"):
        return [Problem(f"{where}.operator", "invalid", f"{where}.operator must be eq or exists")]
    if inner["operator"] == "eq" and "value" not in inner:
        return [Problem(f"{where}.value", "required", f"{where}.value is required with eq")]
    return []
