"""Shared body checks: the Problem type, size limits and field rules used by every API.

Checks return a list of problems (empty when the request is fine); responses.py turns them into
each API's error shape. Limits are Customer.io's published ones (docs/customerio-api.md §2-§6).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson

from cio_worker.sandbox.config import SandboxConfig

#: Bytes in the "KB" of Customer.io's size limits; binary, as Segment-derived clients count.
KB = 1024
#: Person id in a path or `identifiers.id`, bytes (UTF-8).
MAX_PERSON_ID_BYTES = 150
#: Attributes in one identify call.
MAX_ATTRIBUTES = 300
#: Attribute name, bytes.
MAX_ATTRIBUTE_NAME_BYTES = 150
#: Attribute value, bytes; non-strings are measured as compact JSON.
MAX_ATTRIBUTE_VALUE_BYTES = 1000
#: Event name, bytes.
MAX_EVENT_NAME_BYTES = 100
#: Event data object as compact JSON, bytes.
MAX_EVENT_DATA_BYTES = 100_000

#: A ULID's shape: 26 characters of Crockford base32 (the timestamp part is not checked).
ULID_PATTERN = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
#: The characters ULID_PATTERN allows.
ULID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

#: Attributes exempt from the per-value size limit: structured, not a profile value.
_STRUCTURED_ATTRIBUTES = frozenset({"cio_relationships"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request.

    Attributes:
        field: the field at fault, dotted/indexed from the body's root ("" for the whole body),
            or a JSON pointer for broadcast audience errors.
        reason: a short code: required, invalid, too_long, too_large, too_many, not_found.
        message: the rule in words, naming the field.
        status: HTTP status this problem answers alone (400, 404, 413 or 422).
        index: position in a v2 batch, for per-operation problems.
    """

    field: str
    reason: str
    message: str
    status: int = 400
    index: int | None = None


@dataclass(frozen=True)
class Incoming:
    """What a check sees of one request.

    Attributes:
        body: the parsed JSON body (None when absent or invalid; see `body_error`).
        body_error: "missing" or "invalid JSON" when there is no usable body, else None.
        size: body length, bytes.
        params: percent-decoded path parameters.
        config: the sandbox's configuration.
    """

    body: object
    body_error: str | None
    size: int
    params: Mapping[str, str]
    config: SandboxConfig


Check = Callable[[Incoming], list[Problem]]


def no_checks(incoming: Incoming) -> list[Problem]:
    """Accept anything (endpoints without a body)."""
    return []


def utf8_len(text: str) -> int:
    """Length of `text` in UTF-8, bytes."""
    return len(text.encode("utf-8", errors="surrogatepass"))


def utf8_longer_than(text: str, limit: int) -> bool:
    """Whether `text` is longer than `limit` bytes in UTF-8 (`utf8_len(text) > limit`), encoding
    it only when its length in characters cannot tell: a character takes 1 to 4 bytes."""
    chars = len(text)
    if chars > limit:
        return True
    if 4 * chars <= limit:
        return False
    return utf8_len(text) > limit


def json_len(value: object) -> int:
    """Length of `value` as compact JSON, bytes."""
    return utf8_len(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


#: How many times longer than orjson's encoding json_len's can be. The two are byte for byte
#: the same length for strings, integers, true, false and null; only floats differ: orjson's
#: form takes at least 3 bytes ("0.0"), Python's at most 24 ("-2.2250738585072014e-308"), and
#: orjson writes NaN and the infinities as null (4 bytes; Python at most 9, "-Infinity").
#: Integers beyond 64 bits and lone surrogates make orjson raise instead.
JSON_GROWTH = 8


def json_longer_than(value: object, limit: int) -> bool:
    """Whether `value` as compact JSON is longer than `limit` bytes (`json_len(value) > limit`).

    The same answer as json_len's for every value, at a fraction of the cost for the usual one
    far under the limit: orjson's length bounds Python's (`JSON_GROWTH`), and only a value the
    bound cannot settle is measured exactly.
    """
    try:
        fast = len(orjson.dumps(value))
    except orjson.JSONEncodeError:
        return json_len(value) > limit
    if fast * JSON_GROWTH <= limit:
        return False
    return json_len(value) > limit


def is_int(value: object) -> bool:
    """True for a JSON integer (bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_object(value: object) -> bool:
    """True for a JSON object."""
    return isinstance(value, dict)


def join(prefix: str, name: str) -> str:
    """The dotted field path `prefix.name` (just `name` at the root)."""
    return f"{prefix}.{name}" if prefix else name


def body_object(incoming: Incoming) -> tuple[dict[str, object], list[Problem]]:
    """The body as a JSON object, or a problem saying why it is not one."""
    if incoming.body_error is not None:
        return {}, [Problem("", "invalid", f"body must be a JSON object ({incoming.body_error})")]
    if not isinstance(incoming.body, dict):
        return {}, [Problem("", "invalid", "body must be a JSON object")]
    return incoming.body, []


def batch_body(
    incoming: Incoming, items: str
) -> tuple[dict[str, object], list[object], list[Problem]]:
    """A batch request's body and its `batch` array, or the problem with them: the body must be
    an object whose `batch` is a non-empty array (of `items`, as the message calls them)."""
    body, problems = body_object(incoming)
    if problems:
        return body, [], problems
    batch = body.get("batch")
    if not isinstance(batch, list) or not batch:
        message = f"batch must be a non-empty array of {items}"
        return body, [], [Problem("batch", "required", message)]
    return body, batch, []


def check_person_id(value: str, field: str) -> list[Problem]:
    """A person id: non-empty, at most 150 bytes."""
    if not value:
        return [Problem(field, "required", f"{field} must not be empty")]
    if utf8_longer_than(value, MAX_PERSON_ID_BYTES):
        return [Problem(field, "too_long", f"{field} is longer than {MAX_PERSON_ID_BYTES} bytes")]
    return []


def check_identifiers(value: object, field: str, allowed: tuple[str, ...]) -> list[Problem]:
    """An identifiers object with exactly one of `allowed`, its value a non-empty string or int."""
    if not isinstance(value, dict):
        names = ", ".join(allowed)
        return [Problem(field, "required", f"{field} must be an object with one of {names}")]
    # Exactly one of `allowed` and nothing else: a single key, and that one allowed.
    name = next(iter(value), None) if len(value) == 1 else None
    if name not in allowed:
        names = ", ".join(allowed)
        return [Problem(field, "invalid", f"{field} must have exactly one of {names}")]
    identifier = value[name]
    inner = join(field, name)
    if is_int(identifier):
        identifier = str(identifier)
    if not isinstance(identifier, str) or not identifier:
        return [Problem(inner, "invalid", f"{inner} must be a non-empty string")]
    if name == "id":
        return check_person_id(identifier, inner)
    return []


def check_attributes(attributes: Mapping[str, object], prefix: str) -> list[Problem]:
    """Identify attributes: count, name length and value length."""
    if len(attributes) > MAX_ATTRIBUTES:
        return [
            Problem(
                prefix or "attributes",
                "too_many",
                f"{prefix or 'attributes'} has more than {MAX_ATTRIBUTES} attributes",
            )
        ]
    problems: list[Problem] = []
    for name, value in attributes.items():
        field = join(prefix, name)
        if utf8_longer_than(name, MAX_ATTRIBUTE_NAME_BYTES):
            message = f"attribute name {field} is longer than {MAX_ATTRIBUTE_NAME_BYTES} bytes"
            problems.append(Problem(field, "too_long", message))
        elif name not in _STRUCTURED_ATTRIBUTES:
            if (
                utf8_longer_than(value, MAX_ATTRIBUTE_VALUE_BYTES)
                if isinstance(value, str)
                else json_longer_than(value, MAX_ATTRIBUTE_VALUE_BYTES)
            ):
                message = f"{field} value is longer than {MAX_ATTRIBUTE_VALUE_BYTES} bytes"
                problems.append(Problem(field, "too_long", message))
    return problems


def check_event(event: Mapping[str, object], *, data_key: str, with_type: bool) -> list[Problem]:
    """An event's `name`, data object (`data_key`), ULID `id`, integer `timestamp`, `type`."""
    problems: list[Problem] = []
    name = event.get("name")
    if not isinstance(name, str) or not name:
        problems.append(Problem("name", "required", "name is required (a non-empty string)"))
    elif utf8_longer_than(name, MAX_EVENT_NAME_BYTES):
        message = f"name is longer than {MAX_EVENT_NAME_BYTES} bytes"
        problems.append(Problem("name", "too_long", message))
    if data_key in event:
        data = event[data_key]
        if not isinstance(data, dict):
            problems.append(Problem(data_key, "invalid", f"{data_key} must be a JSON object"))
        elif json_longer_than(data, MAX_EVENT_DATA_BYTES):
            message = f"{data_key} is larger than {MAX_EVENT_DATA_BYTES} bytes"
            problems.append(Problem(data_key, "too_large", message))
    if "id" in event:
        event_id = event["id"]
        if not isinstance(event_id, str) or not ULID_PATTERN.match(event_id):
            message = "id must be a ULID (26 characters of Crockford base32)"
            problems.append(Problem("id", "invalid", message))
    if "timestamp" in event and not is_int(event["timestamp"]):
        message = "timestamp must be an integer (Unix seconds)"
        problems.append(Problem("timestamp", "invalid", message))
    if with_type and "type" in event and event["type"] not in ("event", "page", "screen"):
        problems.append(Problem("type", "invalid", "type must be one of event, page, screen"))
    return problems
