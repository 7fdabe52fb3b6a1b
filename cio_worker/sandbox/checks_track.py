"""Body checks for the Track API: v1 calls, and v2 entity operations and batches."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from cio_worker.sandbox.checks import (
    JSON_GROWTH,
    KB,
    MAX_EVENT_NAME_BYTES,
    MAX_PERSON_ID_BYTES,
    ULID_ALPHABET,
    Incoming,
    Problem,
    batch_body,
    body_object,
    check_attributes,
    check_event,
    check_identifiers,
    check_person_id,
    is_int,
    json_longer_than,
)

#: One v2 operation (an entity request, or one item of a batch), bytes.
MAX_OPERATION_BYTES = 32 * KB
#: A whole v2 batch request must be smaller than this, bytes.
MAX_BATCH_BYTES = 500 * KB

PLATFORMS = ("ios", "android")
MERGE_IDENTIFIERS = ("id", "email", "cio_id")
PERSON_IDENTIFIERS = ("id", "email", "phone", "cio_id")

_ACTIONS: dict[str, frozenset[str]] = {
    "person": frozenset(
        {
            "identify",
            "delete",
            "event",
            "page",
            "screen",
            "add_device",
            "delete_device",
            "add_relationships",
            "delete_relationships",
            "suppress",
            "unsuppress",
            "merge",
        }
    ),
    "object": frozenset(
        {"identify", "identify_anonymous", "delete", "add_relationships", "delete_relationships"}
    ),
    "delivery": frozenset({"event"}),
}


def check_path_person(incoming: Incoming) -> list[Problem]:
    """The person id in the path (calls without a body: delete, suppress, devices/{token})."""
    return check_person_id(incoming.params["id"], "customer_id")


def check_identify(incoming: Incoming) -> list[Problem]:
    """PUT /api/v1/customers/{id}: a flat object of attributes."""
    body, problems = body_object(incoming)
    return check_path_person(incoming) or problems or check_attributes(body, "")


def check_person_event(incoming: Incoming) -> list[Problem]:
    """POST /api/v1/customers/{id}/events."""
    body, problems = body_object(incoming)
    return check_path_person(incoming) or problems or _event_v1(body)


def check_anonymous_event(incoming: Incoming) -> list[Problem]:
    """POST /api/v1/events: an event with an optional `anonymous_id`."""
    body, problems = body_object(incoming)
    if problems:
        return problems
    problems = _event_v1(body)
    anonymous_id = body.get("anonymous_id")
    if "anonymous_id" in body and (not isinstance(anonymous_id, str) or not anonymous_id):
        message = "anonymous_id must be a non-empty string"
        problems.append(Problem("anonymous_id", "invalid", message))
    return problems


def _event_v1(body: Mapping[str, object]) -> list[Problem]:
    return check_event(body, data_key="data", with_type=True)


def check_add_device(incoming: Incoming) -> list[Problem]:
    """PUT /api/v1/customers/{id}/devices: `{"device": {"id", "platform", ...}}`."""
    body, problems = body_object(incoming)
    problems = check_path_person(incoming) or problems
    if problems:
        return problems
    device = body.get("device")
    if not isinstance(device, dict):
        return [Problem("device", "required", "device is required (an object)")]
    token = device.get("id")
    if not isinstance(token, str) or not token:
        problems.append(Problem("device.id", "required", "device.id is required (a string)"))
    problems += _check_device_common(device, "device")
    return problems


def _check_device_common(device: Mapping[str, object], prefix: str) -> list[Problem]:
    problems: list[Problem] = []
    if device.get("platform") not in PLATFORMS:
        message = f"{prefix}.platform must be one of {', '.join(PLATFORMS)}"
        problems.append(Problem(f"{prefix}.platform", "invalid", message))
    if "last_used" in device and not is_int(device["last_used"]):
        message = f"{prefix}.last_used must be an integer (Unix seconds)"
        problems.append(Problem(f"{prefix}.last_used", "invalid", message))
    if "attributes" in device and not isinstance(device["attributes"], dict):
        message = f"{prefix}.attributes must be an object"
        problems.append(Problem(f"{prefix}.attributes", "invalid", message))
    return problems


def check_merge(incoming: Incoming) -> list[Problem]:
    """POST /api/v1/merge_customers: `primary` and `secondary`, one identifier each."""
    body, problems = body_object(incoming)
    if problems:
        return problems
    return _check_merge_people(body)


def _check_merge_people(body: Mapping[str, object]) -> list[Problem]:
    return check_identifiers(body.get("primary"), "primary", MERGE_IDENTIFIERS) + (
        check_identifiers(body.get("secondary"), "secondary", MERGE_IDENTIFIERS)
    )


def check_entity(incoming: Incoming) -> list[Problem]:
    """POST /api/v2/entity: one operation of at most 32 KB."""
    if incoming.size > MAX_OPERATION_BYTES:
        message = f"request is larger than {MAX_OPERATION_BYTES} bytes"
        return [Problem("", "too_large", message, status=413)]
    body, problems = body_object(incoming)
    return problems or check_operation(body)


def check_batch(incoming: Incoming) -> list[Problem]:
    """POST /api/v2/batch: whole-request problems (index None) or per-operation ones."""
    if incoming.size >= MAX_BATCH_BYTES:
        message = f"request must be smaller than {MAX_BATCH_BYTES} bytes"
        return [Problem("", "too_large", message, status=413)]
    _, batch, problems = batch_body(incoming, "operations")
    if problems:
        return problems
    for index, operation in enumerate(batch):
        if _plain_event(operation):
            continue  # no problem: settled without the general checks below
        if json_longer_than(operation, MAX_OPERATION_BYTES):
            message = f"operation is larger than {MAX_OPERATION_BYTES} bytes"
            problems.append(Problem("", "too_large", message, index=index))
            continue
        for problem in check_operation(operation):
            problems.append(Problem(problem.field, problem.reason, problem.message, index=index))
    return problems


#: The actions `_plain_event` settles: a person's event, page or screen.
_EVENT_ACTIONS = frozenset({"event", "page", "screen"})


def _plain_event(operation: object) -> bool:
    """True only for a person event that passes every check of `check_batch`'s loop (size and
    `check_operation`), decided by a few cheap tests: a batch of 2,500 events was ten
    microseconds of checks per event. Anything these tests cannot settle (a long value, an int
    id, an unusual type) answers False and goes through the full checks, which have the last
    word; tests/test_sandbox.py pins that both agree."""
    if type(operation) is not dict or operation.get("type") != "person":
        return False
    action = operation.get("action")
    if type(action) is not str or action not in _EVENT_ACTIONS:
        return False
    identifiers = operation.get("identifiers")
    if type(identifiers) is not dict or len(identifiers) != 1:
        return False
    ((kind, value),) = identifiers.items()
    if kind not in PERSON_IDENTIFIERS or type(value) is not str or not value:
        return False
    if kind == "id" and 4 * len(value) > MAX_PERSON_ID_BYTES:  # may be too long: measure
        return False
    name = operation.get("name")
    if type(name) is not str or not name or 4 * len(name) > MAX_EVENT_NAME_BYTES:
        return False
    if "attributes" in operation and type(operation["attributes"]) is not dict:
        return False
    if "id" in operation:
        event_id = operation["id"]
        if type(event_id) is not str or len(event_id) != 26 or event_id.strip(ULID_ALPHABET):
            return False
    if "timestamp" in operation and type(operation["timestamp"]) is not int:
        return False
    # Its size: within the bound, neither the operation (32 KB) nor its attributes, a part of
    # it (100 KB), can be over their limit however Python writes them (`json_longer_than`).
    try:
        size = len(orjson.dumps(operation))
    except orjson.JSONEncodeError:
        return False
    return size * JSON_GROWTH <= MAX_OPERATION_BYTES


def check_operation(operation: object) -> list[Problem]:
    """One v2 operation: type, action, identifiers and the action's own fields."""
    if not isinstance(operation, dict):
        return [Problem("", "invalid", "operation must be a JSON object")]
    kind = operation.get("type")
    if not isinstance(kind, str) or kind not in _ACTIONS:
        return [Problem("type", "invalid", "type must be one of person, object, delivery")]
    action = operation.get("action")
    if not isinstance(action, str) or action not in _ACTIONS[kind]:
        allowed = ", ".join(sorted(_ACTIONS[kind]))
        return [Problem("action", "invalid", f"action for {kind} must be one of {allowed}")]
    if kind == "person" and action == "merge":
        return _check_merge_people(operation)
    problems = _check_op_identifiers(kind, operation.get("identifiers"))
    if action in ("identify", "identify_anonymous"):
        attributes = operation.get("attributes", {})
        if not isinstance(attributes, dict):
            problems.append(Problem("attributes", "invalid", "attributes must be an object"))
        else:
            problems += check_attributes(attributes, "attributes")
    elif action in ("event", "page", "screen"):
        problems += check_event(operation, data_key="attributes", with_type=False)
    elif action in ("add_device", "delete_device"):
        problems += _check_op_device(operation.get("device"), add=action == "add_device")
    elif action in ("add_relationships", "delete_relationships"):
        if not isinstance(operation.get("cio_relationships"), list):
            message = "cio_relationships is required (an array)"
            problems.append(Problem("cio_relationships", "required", message))
    return problems


def _check_op_identifiers(kind: str, identifiers: object) -> list[Problem]:
    if kind == "person":
        return check_identifiers(identifiers, "identifiers", PERSON_IDENTIFIERS)
    if kind == "delivery":
        return check_identifiers(identifiers, "identifiers", ("id",))
    if isinstance(identifiers, dict) and (
        "cio_object_id" in identifiers
        or ("object_type_id" in identifiers and "object_id" in identifiers)
    ):
        return []
    message = "identifiers must have object_type_id and object_id, or cio_object_id"
    return [Problem("identifiers", "invalid", message)]


def _check_op_device(device: object, *, add: bool) -> list[Problem]:
    if not isinstance(device, dict):
        return [Problem("device", "required", "device is required (an object)")]
    problems: list[Problem] = []
    token = device.get("token")
    if not isinstance(token, str) or not token:
        message = "device.token is required (a string)"
        problems.append(Problem("device.token", "required", message))
    if add:
        problems += _check_device_common(device, "device")
    return problems
