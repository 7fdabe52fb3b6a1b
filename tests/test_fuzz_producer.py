"""Property-based fuzz of every `enqueue_*`: whatever a caller passes is stored whole, or refused
with a `ValidationError` naming the field (`field: rule`) while Redis stays unchanged.

Run against the real test Redis through the three ways in: the sync producer (batched delivery,
the default), `cio_worker.aio` (one job per message) and a bulk `pipeline()` block whose
background flushes run while the fuzz goes on. Inputs mix plain valid calls with what broke the
producer before: lone surrogates, control characters, ints past 4,300 digits, nesting 10,000
deep and cycles, mixed-type keys, 10 MB values, aware datetimes of year 1 and 9999, URLs of
other schemes.

The example counts are bounded so the file runs in well under a minute; set
CIO_FUZZ_EXAMPLES to search longer (e.g. 2000 before a release).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cio_worker import jsonutil, keys
from cio_worker.aio import AsyncProducer
from cio_worker.config import Settings
from cio_worker.errors import ValidationError
from cio_worker.job import Job
from cio_worker.produce._calls import EnqueueCalls
from cio_worker.produce._payloads import EMAIL_FIELDS, PUSH_FIELDS, SMS_FIELDS
from cio_worker.produce._producer import Producer
from cio_worker.queue._ledger import stats
from cio_worker.queue._routing import batch_api
from cio_worker.queue._shards import SHARDS

#: Examples per enqueue function (sync), a third of that for asyncio and bulk blocks.
EXAMPLES = int(os.environ.get("CIO_FUZZ_EXAMPLES", "100"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a shared CI box stalls now and then; time is bounded by the counts
    database=None,  # nothing written to the work tree; every run starts fresh
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # Redis is flushed per example by the test
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
FUZZ_FEW = settings(FUZZ, max_examples=max(10, EXAMPLES // 3))


# -- values --------------------------------------------------------------------------------------
def deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def cycle() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


SPECIAL_TEXT = [
    "",
    " ",
    "\t\n",
    "u\n1",
    "u\x00",
    "\x7f",
    "u\x85",
    "\ud800",
    "a\udfffb",
    "\u2028",
    "\u200b",
    "é" * 75,
    "é" * 76,
    "x" * 100,
    "x" * 151,
    "x" * 1001,
    ".",
    "..",
    "cio_abc",
    "a@x.test",
    "名前",
    "https://x.test/p?q=1",
    "a/b",  # keys that look like paths: fields must still be named by their argument
    "a.b",
    "a[0]",
]
BIG_TEXT = "x" * 10_000_000
BIG_INTS = [2**63, 2**64, -(2**64) - 1, 10**4299, 10**4300, -(10**5000)]
TIMEZONES = [UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12, minutes=-30))]
NOT_JSON = [b"raw", {1, 2}, frozenset(), object(), datetime(2024, 1, 1), float("nan")]


class Pick:
    """items[index], shown as `Pick(n items)`: Hypothesis reprs its strategies and examples,
    and the repr of these values is huge or raises (10 MB text, an int of 5000 digits,
    10,000-deep nesting)."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __call__(self, index: int) -> Any:
        return self.items[index]

    def __repr__(self) -> str:
        return f"Pick({len(self.items)} items)"


def one_of_these(items: list[Any]) -> st.SearchStrategy[Any]:
    """`sampled_from(items)` for values that cannot be shown: samples an index instead."""
    return st.sampled_from(range(len(items))).map(Pick(items))


simple_text = st.text(string.ascii_letters + string.digits + "-_.@ ", min_size=1, max_size=16)
texts = st.one_of(
    simple_text,
    st.text(max_size=20),
    st.builds(  # one surrogate or control character somewhere
        lambda head, odd, tail: head + odd + tail,
        st.text(max_size=6),
        st.characters(categories=["Cs", "Cc"]),
        st.text(max_size=6),
    ),
    st.sampled_from(SPECIAL_TEXT),
)
ints = st.one_of(st.integers(), one_of_these(BIG_INTS))
scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(), texts)
keys_any = st.one_of(texts, texts, st.integers(-2, 2), st.none(), st.tuples(st.integers()))
json_like = st.recursive(
    st.one_of(scalars, one_of_these(NOT_JSON)),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(keys_any, children, max_size=4),
    ),
    max_leaves=8,
)
# Built once: big or deep values the shrinker should not have to construct.
SPECIAL_VALUES = [
    deep(10_000),
    deep(65),
    deep(64),
    cycle(),
    BIG_TEXT,
    {"blob": "x" * 200_000},
    list(range(5_000)),
    {f"a{n}": n for n in range(301)},
]
values = st.one_of(json_like, json_like, one_of_these(SPECIAL_VALUES))
# Plain, valid JSON, so that a good share of calls is stored and checked whole.
clean_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(simple_text, children, max_size=3)
    ),
    max_leaves=6,
)
objects = st.one_of(
    st.none(),
    st.dictionaries(simple_text, clean_json, max_size=5),
    st.dictionaries(simple_text, clean_json, max_size=5),
    st.dictionaries(texts, values, max_size=5),
    st.dictionaries(keys_any, values, max_size=3),
    one_of_these([v for v in SPECIAL_VALUES if isinstance(v, dict)]),
    values,
)
good_ids = st.one_of(
    st.text(string.ascii_letters + string.digits + "-_.@", min_size=1, max_size=16),
    st.integers(min_value=0, max_value=10**12),
)
ids = st.one_of(
    good_ids, good_ids, good_ids, texts, ints, st.none(), st.booleans(), st.floats(), values
)
names = st.one_of(simple_text, simple_text, texts, values)
timestamps = st.one_of(
    st.none(),
    st.none(),
    st.integers(min_value=0, max_value=9_999_999_999),
    st.integers(min_value=-10, max_value=2 * 10**10),
    one_of_these(BIG_INTS),
    st.datetimes(timezones=st.sampled_from(TIMEZONES)),  # aware, years 1..9999
    st.datetimes(),  # naive
    st.text(max_size=25),
    st.floats(),
    st.booleans(),
)
person_refs = st.one_of(
    ids,
    st.fixed_dictionaries({}, optional={"id": ids, "email": ids, "cio_id": ids}),
    st.dictionaries(keys_any, ids, max_size=3),
)
urls = st.one_of(
    st.sampled_from(
        [
            "https://x.test/data.jsonl.gz",
            "http://x.test:8080/d",
            "file:///etc/passwd",
            "ftp://x.test/d",
            "https://",
            "https://x.test/\nd",
            "https://x.test:99999/",
            "http://[::1/",
            "javascript:alert(1)",
        ]
    ),
    texts,
    st.builds(lambda path: "https://x.test/" + path, st.text(max_size=20)),
)
id_lists = st.one_of(
    st.lists(ids, min_size=0, max_size=5),
    st.lists(simple_text, min_size=1, max_size=5),
    one_of_these([["i" * 1000] * 10_000, [str(n) for n in range(10_001)]]),
    values,
)
per_user = st.one_of(
    st.lists(
        st.fixed_dictionaries({}, optional={"id": ids, "email": ids, "data": objects}),
        max_size=4,
    ),
    one_of_these([[{"id": f"u{n}", "data": {"s": "x" * 2500}} for n in range(10_000)]]),
    values,
)


# -- calls ---------------------------------------------------------------------------------------
def call(*args: st.SearchStrategy[Any], **optional: st.SearchStrategy[Any]) -> Any:
    """(args, kwargs): every positional argument drawn, each keyword present or not."""
    return st.tuples(st.tuples(*args), st.fixed_dictionaries({}, optional=optional))


# Valid counterparts: every argument drawn from these makes a call that is usually stored, so
# the "stored whole" half of the promise is exercised as often as the refusals.
good_names = st.text(string.ascii_letters + string.digits + " _-", min_size=1, max_size=30).filter(
    str.strip
)
good_objects = st.one_of(st.none(), st.dictionaries(simple_text, clean_json, max_size=5))
good_times = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=9_999_999_999),
    st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2286, 1, 1),
        timezones=st.sampled_from(TIMEZONES),
    ),
)
good_refs = st.one_of(
    good_ids,
    st.builds(
        lambda key, value: {key: value}, st.sampled_from(["id", "email", "cio_id"]), good_ids
    ),
)
good_urls = st.builds(
    lambda scheme, path: f"{scheme}://x.test/{path}",
    st.sampled_from(["http", "https"]),
    st.text(string.ascii_letters + "/.-_", max_size=20),
)


def either(fuzz: Any, good: Any) -> Any:
    """Half the calls from fuzzed arguments, half from valid ones."""
    return st.one_of(fuzz, good)


def message(fields: frozenset[str], *, to: bool = False) -> Any:
    field_names = sorted(fields) + ["from_", "subjekt", "title", "subject"]

    def build(base: tuple[tuple[Any, ...], dict[str, Any]], more: dict[str, Any]) -> Any:
        args, kwargs = base
        return args, {**more, **kwargs}

    fuzz = st.tuples(
        st.tuples(st.one_of(st.integers(min_value=-1, max_value=2**64), ints, texts, values)),
        st.fixed_dictionaries(
            {"identifiers": st.one_of(person_refs, st.just({}))},
            optional={"to": ids if to else st.one_of(ids, st.none()), "message_data": objects},
        ),
    )
    good = st.tuples(
        st.tuples(st.one_of(st.integers(min_value=1, max_value=2**63 - 1), good_names)),
        st.fixed_dictionaries(
            {"identifiers": good_refs, **({"to": st.just("a@x.test")} if to else {})},
            optional={"message_data": good_objects},
        ),
    )
    extra = st.dictionaries(st.sampled_from(field_names), values, max_size=3)
    good_fields = sorted(fields & {"subject", "title", "language"})
    good_extra = st.dictionaries(st.sampled_from(good_fields), good_names, max_size=2)
    return either(st.builds(build, fuzz, extra), st.builds(build, good, good_extra))


CALLS: dict[str, Any] = {
    "enqueue_identify": either(
        call(ids, objects, timestamp=timestamps),
        call(good_ids, good_objects, timestamp=good_times),
    ),
    "enqueue_track": either(
        call(ids, names, objects, timestamp=timestamps),
        call(good_ids, good_names, good_objects, timestamp=good_times),
    ),
    "enqueue_track_anonymous": either(
        call(ids, names, objects, timestamp=timestamps),
        call(good_ids, good_names, good_objects, timestamp=good_times),
    ),
    "enqueue_page": either(
        call(ids, st.one_of(urls, names), objects, timestamp=timestamps),
        call(good_ids, good_urls, good_objects, timestamp=good_times),
    ),
    "enqueue_delete": either(call(ids), call(good_ids)),
    "enqueue_merge": either(call(person_refs, person_refs), call(good_refs, good_refs)),
    "enqueue_suppress": either(call(ids), call(good_ids)),
    "enqueue_unsuppress": either(call(ids), call(good_ids)),
    "enqueue_add_device": either(
        call(
            ids,
            ids,
            st.one_of(st.sampled_from(["ios", "android", "web", "IOS"]), values),
            last_used=timestamps,
            attributes=objects,
        ),
        call(
            good_ids,
            good_ids,
            st.sampled_from(["ios", "android"]),
            last_used=good_times,
            attributes=st.dictionaries(simple_text, simple_text, max_size=3),
        ),
    ),
    "enqueue_remove_device": either(call(ids, ids), call(good_ids, good_ids)),
    "enqueue_send_email": message(EMAIL_FIELDS, to=True),
    "enqueue_send_push": message(PUSH_FIELDS),
    "enqueue_send_sms": message(SMS_FIELDS),
    "enqueue_broadcast": either(
        call(
            st.one_of(st.integers(min_value=-1, max_value=2**64), ints, texts, st.none(), values),
            data=objects,
            recipients=objects,
            emails=id_lists,
            ids=id_lists,
            per_user_data=per_user,
            data_file_url=urls,
            id_ignore_missing=st.one_of(st.booleans(), values),
            email_ignore_missing=st.booleans(),
            email_add_duplicates=st.booleans(),
        ),
        st.tuples(
            st.tuples(st.integers(min_value=1, max_value=2**63 - 1)),
            st.one_of(
                st.fixed_dictionaries({}, optional={"data": good_objects}),
                st.fixed_dictionaries(
                    {"ids": st.lists(good_ids, min_size=1, max_size=5)},
                    optional={"data": good_objects, "id_ignore_missing": st.booleans()},
                ),
                st.fixed_dictionaries(
                    {
                        "per_user_data": st.lists(
                            st.fixed_dictionaries({"email": good_ids, "data": good_objects}),
                            min_size=1,
                            max_size=3,
                        )
                    }
                ),
                st.fixed_dictionaries({"data_file_url": good_urls}),
                st.fixed_dictionaries(
                    {"recipients": st.just({"segment": {"id": 3}})}, optional={"data": good_objects}
                ),
            ),
        ),
    ),
}
NAMES = sorted(CALLS)


# -- checks --------------------------------------------------------------------------------------
def expected_payload(settings: Settings, name: str, args: Any, kwargs: Any) -> dict[str, Any]:
    """The payload validation builds for this call (raises ValidationError as the call must),
    as the worker will read it back: through JSON."""
    job = getattr(EnqueueCalls, name).build(*args, **kwargs)
    result: dict[str, Any] = json.loads(jsonutil.dumps(job.payload))
    return result


def check_refusal(error: ValidationError, name: str, kwargs: dict[str, Any]) -> None:
    """`field: rule`, the field rooted in one of the call's arguments (or the whole payload)."""
    assert isinstance(error.field, str) and error.field
    assert isinstance(error.rule, str) and error.rule
    assert str(error) == f"{error.field}: {error.rule}"
    allowed = set(inspect.signature(getattr(Producer, name)).parameters) | set(kwargs)
    allowed |= {"payload", "from"}  # the whole body's size; `from_` is reported as `from`
    # `traits.a/b[0]`: the argument is what comes before the first `.`, `[` or `/` (the last
    # for "several audience keys": `emails/ids`); keys themselves may hold any of them.
    root = re.split(r"[.\[/]", error.field, maxsplit=1)[0]
    assert root in allowed, (error.field, name)
    event(f"refused: {root}")


def stored_json(client: redis.Redis, settings: Settings, job_id: str) -> bytes:
    """The job as stored: its ledger record, or its entry in a batch shard."""
    raw = client.hget(keys.job(job_id), "job")
    if raw is None:
        api = batch_api(settings)
        shard_entries = (client.hget(keys.batch_jobs(api, s), job_id) for s in range(SHARDS))
        raw = next((entry for entry in shard_entries if entry is not None), None)
    assert raw is not None, f"job {job_id} not found"
    return raw  # type: ignore[return-value]


def check_stored(
    client: redis.Redis, settings: Settings, job_id: str, name: str, payload: dict[str, Any]
) -> None:
    """Stored whole: readable by a worker (Job.from_record: a shard's record has no id, the
    field is the id) and equal to the validated payload."""
    record = json.loads(stored_json(client, settings, job_id))  # exact: big integers stay ints
    assert record.get("id", job_id) == job_id
    job = Job.from_record(job_id, record)
    assert job.kind.value == name.removeprefix("enqueue_")
    assert job.payload == payload
    check_rules(job.payload)
    event("stored")


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_id(value: object, max_bytes: int = 150) -> None:
    text = str(value)
    assert text.strip() and len(text.encode()) <= max_bytes, text
    assert not CONTROL.search(text), text


def check_rules(payload: dict[str, Any]) -> None:
    """An oracle, independent of validation.py: what was stored keeps Customer.io's rules."""
    for key in ("user_id", "anonymous_id"):
        if key in payload:
            check_id(payload[key])
    if "device_id" in payload:
        check_id(payload["device_id"], 1000)
    if "to" in payload:
        check_id(payload["to"], 10_000)
    for key in ("timestamp", "last_used"):
        assert payload.get(key) is None or 0 <= payload[key] <= 9_999_999_999, payload[key]
    for key in ("primary", "secondary", "identifiers"):
        for value in payload.get(key, {}).values():
            check_id(value)
    if "broadcast_id" in payload:
        body = payload["body"]
        assert 0 < payload["broadcast_id"] < 2**63
        assert (
            len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()) <= 25_000_000
        )
        if "data" in body:
            data = json.dumps(body["data"], separators=(",", ":"), ensure_ascii=False)
            assert len(data.encode()) <= 50_000
        for entry in body.get("ids", []) + body.get("emails", []):
            check_id(entry)
        if "data_file_url" in body:
            assert re.match(r"(?i)https?://[^/\s]", body["data_file_url"]), body["data_file_url"]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        yield connection


# -- the fuzz ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_sync_producer(
    batch_settings: Settings, client: redis.Redis, name: str, data: st.DataObject
) -> None:
    """Producer (batched delivery on, the default): stored whole, or refused and Redis empty."""
    args, kwargs = data.draw(CALLS[name], label="call")
    client.flushdb()
    producer = Producer(batch_settings, redis_client=client)
    try:
        job_id = getattr(producer, name)(*args, **kwargs)
    except ValidationError as error:
        check_refusal(error, name, kwargs)
        assert client.dbsize() == 0
        return
    check_stored(
        client, batch_settings, job_id, name, expected_payload(batch_settings, name, args, kwargs)
    )
    assert sum(stats(client).values()) == 1


@pytest.mark.parametrize("name", NAMES)
def test_async_producer(settings: Settings, client: redis.Redis, name: str) -> None:
    """cio_worker.aio (one job per message): the same promise, awaited."""
    loop = asyncio.new_event_loop()
    # Generous Redis timeouts: a stalled shared CI box must not turn into an EnqueueError.
    producer = AsyncProducer(settings.replace(redis_timeout_s=10.0))

    @FUZZ_FEW
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        args, kwargs = data.draw(CALLS[name], label="call")
        client.flushdb()
        try:
            job_id = loop.run_until_complete(getattr(producer, name)(*args, **kwargs))
        except ValidationError as error:
            check_refusal(error, name, kwargs)
            assert client.dbsize() == 0
            return
        check_stored(client, settings, job_id, name, expected_payload(settings, name, args, kwargs))
        assert sum(stats(client).values()) == 1

    try:
        fuzz()
    finally:
        loop.run_until_complete(producer.aclose())
        loop.close()


@FUZZ_FEW
@given(
    calls=st.lists(
        st.sampled_from(NAMES).flatmap(lambda n: st.tuples(st.just(n), CALLS[n])),
        min_size=1,
        max_size=6,
    )
)
def test_bulk_block(settings: Settings, client: redis.Redis, calls: list[Any]) -> None:
    """A pipeline() block flushing every 2 jobs in the background: each call returns an id or
    raises ValidationError; when the block ends exactly the returned ids are stored, whole."""
    client.flushdb()
    expected: dict[str, tuple[str, dict[str, Any]]] = {}
    with Producer(settings, redis_client=client).pipeline(flush_every=2) as bulk:
        for name, (args, kwargs) in calls:
            try:
                job_id = getattr(bulk, name)(*args, **kwargs)
            except ValidationError as error:
                check_refusal(error, name, kwargs)
                continue
            expected[job_id] = (name, expected_payload(settings, name, args, kwargs))
    assert bulk.stored == len(expected)
    assert sum(stats(client).values()) == len(expected)
    for job_id, (name, payload) in expected.items():
        check_stored(client, settings, job_id, name, payload)
    if not expected:
        assert client.dbsize() == 0
