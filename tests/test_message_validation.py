"""The short ways through a transactional message's checks answer exactly as the general ones.

`payloads.message` and `validation.person_reference` take a short way for the common case of a
bulk send (an exact int message id, an exact one-key dict of identifiers, a `to` without
commas and no cc/bcc, a body too small to measure). Each test here gives the same input once
in a shape that takes the short way and once in an equal shape that cannot (an int subclass, a
read-only mapping view of the same dict), and requires the same body or the same error (field
and rule) from both. So a short way that accepted, refused or named something differently from
the general check fails here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cio_worker import validation as v
from cio_worker.errors import ValidationError
from cio_worker.kinds import Kind
from cio_worker.produce import _payloads as payloads


class Int(int):
    """An int that is not exactly `int`: it takes the general way through every check."""


class Str(str):
    """A str that is not exactly `str`."""


class Boom:
    """A value whose comparison raises: both ways must raise the same."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("compared")

    __hash__ = object.__hash__


def outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What a check answered: its result, or its error (type, and field and rule)."""
    try:
        return ("ok", call())
    except ValidationError as error:
        return ("refused", error.field, error.rule)
    except Exception as error:  # noqa: BLE001 - compared between the two ways
        return ("raised", type(error), str(error))


def shown(value: object) -> str:
    """A test id: a short repr that never raises (an int past the digit limit has none)."""
    return v.shown(value, 40)


def general(value: object) -> object:
    """`value` in an equal shape that no short way takes."""
    if type(value) is int:
        return Int(value)
    if type(value) is dict:
        return MappingProxyType(value)
    return value


# Values a caller may put in identifiers (or pass as `to`, or as the id): every type and edge
# the rules look at.
HOSTILE_VALUES: list[object] = [
    "u1",
    "",
    " ",
    "\t",
    "a\nb",
    "a\x00b",
    "a\x85b",  # C1 control
    "é" * 75,  # 150 bytes
    "é" * 76,  # 152 bytes
    "x" * 150,
    "x" * 151,
    ".",
    "..",
    "\ud800",  # lone surrogate
    '"\\',
    0,
    1,
    -1,
    2**63,
    10**5000,  # beyond int->str's digit limit
    True,
    False,
    None,
    1.5,
    [],
    ["u1"],
    {},
    {"id": "u1"},
    Str("u1"),
    Int(7),
    b"u1",
    Boom(),
]
KEYS: list[object] = ["id", "email", "cio_id", "ID", "", "other", 1, None, Str("id"), ("id",)]


def identifier_dicts() -> list[dict[Any, Any]]:
    one_key = [{key: value} for key in KEYS for value in HOSTILE_VALUES]
    several = [
        {"id": "u1", "email": "a@x.test"},
        {"id": "u1", "other": 1},
        {"id": "", "email": "a@x.test"},
        {"id": None, "email": None},
        {"id": "u1", 1: "x"},
        {"email": "", "cio_id": "c1"},
    ]
    return [{}, *one_key, *several]


@pytest.mark.parametrize("value", identifier_dicts(), ids=shown)
def test_person_reference_short_way_agrees(value: dict[Any, Any]) -> None:
    short = outcome(lambda: v.person_reference("identifiers", value))
    assert short == outcome(lambda: v.person_reference("identifiers", general(value)))
    if short[0] == "ok":  # the result is a plain dict of plain str, whatever went in
        assert type(short[1]) is dict
        assert all(type(k) is str and type(x) is str for k, x in short[1].items())


@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=shown)
def test_person_reference_shorthand_unchanged(value: object) -> None:
    """A shorthand id (not a dict) takes the general way, as before."""
    assert outcome(lambda: v.person_reference("p", value)) == outcome(
        lambda: v.person_reference("p", general(value))
    )


MESSAGE_IDS: list[object] = [
    1,
    0,
    -1,
    2**63 - 1,
    2**63,
    True,
    None,
    1.0,
    "welcome",
    "",
    "  ",
    "\ud800",
    Int(5),
    [],
]
TOS: list[object] = [
    "a@x.test",
    None,
    "",
    "a@x.test,b@x.test",
    "a@x.test, ,b@x.test",
    ",,,",
    ",".join(f"u{i}@x.test" for i in range(15)),
    ",".join(f"u{i}@x.test" for i in range(16)),
    "x" * 10_000,
    "x" * 10_001,
    '"' * 10_000,
    "a\nb@x.test",
    7,
    True,
    ["a@x.test"],
]


def message_both_ways(
    kind: Kind, message_id: object, identifiers: object, to: object, **fields: object
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    short = outcome(lambda: payloads.message(kind, message_id, identifiers, to, None, fields))
    slow = outcome(
        lambda: payloads.message(
            kind, general(message_id), general(identifiers), to, None, dict(fields)
        )
    )
    return short, slow


@pytest.mark.parametrize("kind", [Kind.SEND_EMAIL, Kind.SEND_PUSH, Kind.SEND_SMS])
@pytest.mark.parametrize("message_id", MESSAGE_IDS, ids=shown)
def test_message_id_short_way_agrees(kind: Kind, message_id: object) -> None:
    short, slow = message_both_ways(kind, message_id, {"id": "u1"}, "a@x.test")
    assert short == slow


@pytest.mark.parametrize("identifiers", [None, *identifier_dicts()], ids=shown)
def test_message_identifiers_short_way_agrees(identifiers: object) -> None:
    short, slow = message_both_ways(Kind.SEND_EMAIL, 1, identifiers, "a@x.test")
    assert short == slow


@pytest.mark.parametrize("kind", [Kind.SEND_EMAIL, Kind.SEND_SMS])
@pytest.mark.parametrize("to", TOS, ids=shown)
def test_message_to_short_way_agrees(kind: Kind, to: object) -> None:
    short, slow = message_both_ways(kind, 1, {"email": "a@x.test"}, to)
    assert short == slow


@pytest.mark.parametrize(
    "fields",
    [
        {"cc": "b@x.test"},
        {"bcc": ["b@x.test"] * 14},
        {"bcc": ["b@x.test"] * 15},
        {"cc": None, "bcc": None},
        {"cc": ",".join(["b@x.test"] * 14)},
        {"subject": "hi", "from_": "me@x.test"},
        {"headers": {"X-A": "1"}},
        {"headers": None},
        {"title": "t"},
        {"body": "x" * (3 * 1024 * 1024)},
        {"body": "x" * (3 * 1024 * 1024 - 200)},
        {"no_such_field": 1},
    ],
    ids=shown,
)
def test_message_fields_short_way_agrees(fields: dict[str, object]) -> None:
    for to in ("a@x.test", "a@x.test,c@x.test"):
        short, slow = message_both_ways(Kind.SEND_EMAIL, 1, {"id": "u1"}, to, **fields)
        assert short == slow


def test_an_unmeasured_body_is_far_below_the_limit() -> None:
    """A body of only an int id, identifiers and `to` is not measured: the largest one, each
    character escaped in JSON, stays within UNMEASURED_MESSAGE_BYTES (< the 3 MB limit)."""
    assert payloads.UNMEASURED_MESSAGE_BYTES < payloads.MAX_MESSAGE_BYTES
    for char in ('"', "\\", "é", "\U0001f600", "\u200b"):
        body = payloads.message(
            Kind.SEND_EMAIL,
            payloads.MAX_OBJECT_ID,
            {"cio_id": char * (v.MAX_ID_BYTES // len(char.encode()))},
            char * (payloads.MAX_TO_BYTES // len(char.encode())),
            None,
            {},
        )
        assert v.encoded_len(body) <= payloads.UNMEASURED_MESSAGE_BYTES


def count_recipients(body: Mapping[str, Any]) -> int:
    """The rule, counted the plain way: non-blank parts of comma-separated strings, list items."""
    count = 0
    for key in ("to", "cc", "bcc"):
        value = body.get(key)
        if isinstance(value, str):
            count += sum(1 for part in value.split(",") if part.strip())
        elif isinstance(value, list):
            count += len(value)
    return count


@pytest.mark.parametrize(
    "body",
    [
        {"to": to, **extra}
        for to in [*TOS, Str("a,b"), ",".join(["a"] * 16)]
        for extra in (
            {},
            {"cc": "c"},
            {"cc": ["c"] * 15},
            {"cc": ",".join(["c"] * 15)},
            {"bcc": ["c"] * 15},
            {"bcc": ",".join(["c"] * 14)},
            {"cc": None},
        )
    ],
    ids=shown,
)
def test_check_recipients_counts_as_the_rule(body: dict[str, Any]) -> None:
    expected = count_recipients(body) <= payloads.MAX_EMAIL_RECIPIENTS
    result = outcome(lambda: payloads._check_recipients(body))
    assert result == (
        ("ok", None)
        if expected
        else ("refused", "to", "at most 15 recipients across to, cc and bcc")
    )


# Random identifiers dicts, from keys and values the rules tell apart.
_values = st.one_of(
    st.sampled_from(HOSTILE_VALUES),
    st.text(max_size=200),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
)
_keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    identifiers=st.dictionaries(_keys, _values, max_size=3),
    message_id=st.one_of(st.sampled_from(MESSAGE_IDS), st.integers(), st.text(max_size=20)),
    to=st.one_of(st.sampled_from(TOS), st.text(max_size=60)),
)
def test_random_messages_agree(identifiers: dict[Any, Any], message_id: object, to: object) -> None:
    short, slow = message_both_ways(Kind.SEND_EMAIL, message_id, identifiers, to)
    assert short == slow
