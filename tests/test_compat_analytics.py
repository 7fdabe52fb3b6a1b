"""cio_worker.compat.analytics is a drop-in for Customer.io's Pipelines SDK, proven.

The SDK (`customerio-cdp-analytics` 1.1) installs as the top-level package `customerio`, over
the official `customerio` package's own files, so it is installed at test time into a directory
of its own and run in a subprocess with that directory on PYTHONPATH, in `sync_mode` (one
`POST /v1/batch` per call). The drop-in makes the same calls; one real worker delivers them
through the Pipelines API (`CIO_WORKER_DATA_API=pipelines`, batching on, as the SDK batches).
For every public call, the message each side sent must be equal, after dropping only what is
the sender's own: `messageId` (ours is the job id, asserted), generated timestamps (a given one is
compared as an instant), the SDK's `sentAt`, `context.library` (the SDK's name and version, like
a user agent), its empty `integrations`, and the `null` it sends for an argument not given
(`anonymousId`, `category`).
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_compat_customerio import Stack, start_stack, stop_stack

from cio_worker.compat import analytics
from cio_worker.config import SANDBOX_PIPELINES_API_KEY, Settings
from cio_worker.errors import ValidationError
from cio_worker.produce import Producer

pytestmark = pytest.mark.integration

SDK = "customerio-cdp-analytics==1.1.*"
WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)

#: Every public call of the SDK's module that makes a request: (case, call, args, kwargs).
CALLS: list[tuple[str, str, list[Any], dict[str, Any]]] = [
    ("identify", "identify", ["u-1", {"email": "ada@example.com", "plan": "pro"}], {}),
    (
        "identify-keywords-int-id-timestamp",
        "identify",
        [],
        {"user_id": 42, "traits": {"name": "Ada", "age": 36}, "timestamp": WHEN},
    ),
    ("track", "track", ["u-1", "Order Completed", {"total": 30, "items": [{"sku": "a"}]}], {}),
    ("track-no-properties", "track", [], {"user_id": "u-2", "event": "Signed Up"}),
    ("track-timestamp", "track", ["u-3", "Paid", {"n": 1}], {"timestamp": WHEN}),
    (
        "track-anonymous",
        "track",
        [],
        {"anonymous_id": "anon-1", "event": "Visited", "properties": {"path": "/"}},
    ),
    (
        "page",
        "page",
        ["u-1"],
        {"name": "Pricing", "properties": {"url": "https://example.com/pricing", "ref": "ad"}},
    ),
    ("page-name-only", "page", ["u-4"], {"name": "Home"}),
    ("alias", "alias", ["anon-9", "u-1"], {}),
    ("alias-keywords", "alias", [], {"previous_id": "old-7", "user_id": "u-7"}),
]
#: Calls equal except for one documented difference (docs/migrating.md), asserted as such.
DIFFERENT = {
    # cio_worker's page job is a URL: without `properties.url`, the name is sent as the url too.
    "page-name-only": "properties.url",
}

# The SDK in a subprocess: settings as a drop-in user sets them, then each call in turn.
RUNNER = """
import json, sys
from datetime import datetime
from customerio import analytics

config, calls = json.load(sys.stdin)
for name, value in config.items():
    setattr(analytics, name, value)

def decode(value):
    if isinstance(value, dict) and set(value) == {"$datetime"}:
        return datetime.fromisoformat(value["$datetime"])
    return value

for call, args, kwargs in calls:
    getattr(analytics, call)(*map(decode, args), **{k: decode(v) for k, v in kwargs.items()})
analytics.flush()
"""


def _encode(value: Any) -> Any:
    return {"$datetime": value.isoformat()} if isinstance(value, datetime) else value


@pytest.fixture(scope="session")
def sdk_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SDK and its dependencies, installed once into a directory of their own (kept in the
    pytest cache between runs)."""
    cache = getattr(request.config, "cache", None)
    target = (
        cache.mkdir("customerio-cdp-analytics-1.1")
        if cache is not None
        else tmp_path_factory.mktemp("cdp-analytics")
    )
    if list(target.glob("customerio_cdp_analytics-1.1.*.dist-info")):
        return target
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--target", str(target), "--upgrade", SDK],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if install.returncode != 0:
        reason = f"could not install {SDK} (package index unreachable?): {install.stderr[-500:]}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return target


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("compat-analytics"),
        {"CIO_WORKER_DATA_API": "pipelines", "CIO_WORKER_BATCH_LINGER_MS": "20"},
    )
    try:
        yield running
    finally:
        stop_stack(running)


def _messages(records: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each message sent, by messageId, with the request that carried it."""
    found = {}
    for record in records:
        body = record["body"]
        for message in body["batch"] if record["path"] == "/v1/batch" else [body]:
            found[message["messageId"]] = (record, message)
    return found


@pytest.fixture(scope="module")
def exchanges(
    stack: Stack, sdk_path: Path
) -> dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(SDK request, SDK message, our request, our message) per case."""
    before = stack.last_seq()
    config = {
        "write_key": SANDBOX_PIPELINES_API_KEY,
        "host": stack.sandbox_url,
        "sync_mode": True,
    }
    calls = [
        (call, [_encode(a) for a in args], {k: _encode(v) for k, v in kwargs.items()})
        for _, call, args, kwargs in CALLS
    ]
    env = {**os.environ, "PYTHONPATH": str(sdk_path), "NO_PROXY": "127.0.0.1"}
    run = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps([config, calls]),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    sent = stack.wait_for(before, len(CALLS))
    assert len(sent) == len(CALLS)  # sync_mode: one request per call, in order
    before = sent[-1]["seq"]

    producer = Producer(stack.settings)
    analytics.producer, analytics.default_client = producer, None
    try:
        job_ids = []
        for _, call, args, kwargs in CALLS:
            ok, message = getattr(analytics, call)(*args, **kwargs)
            assert ok is True
            job_ids.append(message["messageId"])
        analytics.flush()
        analytics.shutdown()
    finally:
        analytics.producer, analytics.default_client = None, None
        producer.redis.close()
    ours = _messages(stack.wait_for(before))
    while len(ours) < len(CALLS):  # the worker batches: fewer requests than calls
        ours = _messages(stack.wait_for(before, len(set(r["seq"] for r, _ in ours.values())) + 1))
    assert set(ours) == set(job_ids)
    result = {}
    for (name, *_), record, job_id in zip(CALLS, sent, job_ids, strict=True):
        [message] = record["body"]["batch"]
        result[name] = (record, message, *ours[job_id])
    return result


def _normalised(message: dict[str, Any]) -> dict[str, Any]:
    """The message without what is the sender's own (see the module)."""
    out = {k: v for k, v in message.items() if k not in ("messageId", "timestamp")}
    out = {
        k: v for k, v in out.items() if v is not None
    }  # the SDK sends what it was not given as null
    context = {k: v for k, v in out.pop("context", {}).items() if k != "library"}
    if context:
        out["context"] = context
    if out.get("integrations") == {}:
        del out["integrations"]
    return out


@pytest.mark.parametrize("case", [name for name, *_ in CALLS])
def test_the_worker_sends_what_the_sdk_sends(exchanges: dict[str, Any], case: str) -> None:
    sdk_request, sdk_message, our_request, our_message = exchanges[case]
    assert sdk_request["status"] == our_request["status"] == 200
    assert set(sdk_request["body"]) == {"batch", "sentAt"}
    assert sdk_request["method"] == our_request["method"] == "POST"
    assert our_request["path"] == sdk_request["path"] == "/v1/batch"
    if DIFFERENT.get(case) == "properties.url":
        assert our_message["properties"].pop("url") == sdk_message["name"]
    assert sdk_message["context"]["library"]["name"] == "analytics-python"
    _, _, _, kwargs = next(c for c in CALLS if c[0] == case)
    if "timestamp" in kwargs:  # a given time: the same instant (ours to the second)
        assert datetime.fromisoformat(our_message["timestamp"]) == datetime.fromisoformat(
            sdk_message["timestamp"]
        )
    assert _normalised(our_message) == _normalised(sdk_message)


SIGNATURES = """
import inspect, json
from customerio import analytics
names = sorted(n for n in vars(analytics) if not n.startswith("_") and n not in ("analytics",))
methods = {
    name: [p.name for p in inspect.signature(getattr(analytics.Client, name)).parameters.values()]
    for name in dir(analytics.Client)
    if not name.startswith("_") and inspect.isfunction(getattr(analytics.Client, name))
}
print(json.dumps({"names": names, "methods": methods}))
"""
#: SDK module members that are its own plumbing, not the API: its version, its submodules.
NOT_API = {"VERSION", "client", "consumer", "request", "utils", "version"}
#: The calls that have no cio_worker job.
REFUSED = {"screen", "group"}


def test_every_public_name_and_call_of_the_sdk_is_here(sdk_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", SIGNATURES],
        env={**os.environ, "PYTHONPATH": str(sdk_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    sdk = json.loads(run.stdout)
    assert [
        name for name in sdk["names"] if name not in NOT_API and not hasattr(analytics, name)
    ] == []
    for name, parameters in sdk["methods"].items():
        if name in REFUSED:
            continue
        ours = [p for p in inspect.signature(getattr(analytics.Client, name)).parameters]
        assert ours[: len(parameters)] == parameters, name
    proven = {call for _, call, _, _ in CALLS} | {"flush", "join", "shutdown"}
    assert set(sdk["methods"]) - proven == REFUSED


class TestRefused:
    """What cio_worker's jobs cannot carry fails at once, naming the argument and the reason."""

    @pytest.mark.parametrize(
        ("call", "args", "kwargs", "message"),
        [
            (
                "screen",
                ["u"],
                {"name": "Home"},
                "screen: screen is not supported: .*track an event",
            ),
            ("group", ["u", "g"], {}, "group: group is not supported"),
            (
                "track",
                ["u", "E"],
                {"context": {"ip": "1.2.3.4"}},
                "track: context is not supported",
            ),
            ("identify", ["u"], {"integrations": {"All": False}}, "identify: integrations"),
            ("track", ["u", "E"], {"message_id": "m-1"}, "message_id is not supported: .*job id"),
            ("page", ["u"], {"name": "P", "category": "Docs"}, "page: category"),
            ("identify", [], {"anonymous_id": "a"}, "identify: anonymous_id"),
            ("track", ["u", "E"], {"anonymous_id": "a"}, "either a user_id or an anonymous_id"),
        ],
    )
    def test_with_a_clear_error(
        self, call: str, args: list[Any], kwargs: dict[str, Any], message: str
    ) -> None:
        client = analytics.Client("key", producer=Producer(Settings()))
        with pytest.raises(NotImplementedError, match=f"{message}.*migrating.md"):
            getattr(client, call)(*args, **kwargs)

    def test_bad_input_names_the_field(self, redis_url: str) -> None:
        producer = Producer(Settings.from_env({"CIO_WORKER_REDIS_URL": redis_url}))
        with pytest.raises(ValidationError, match="event"):
            analytics.Client("key", producer=producer).track("u", None)


def test_flush_join_and_shutdown_return_at_once_and_send_false_stores_nothing(
    redis_client: Any, redis_url: str
) -> None:
    producer = Producer(Settings.from_env({"CIO_WORKER_REDIS_URL": redis_url}))
    client = analytics.Client("key", send=False, producer=producer)
    ok, message = client.track("u-1", "Viewed", {"a": 1})
    assert ok is True and "messageId" not in message
    started = time.monotonic()
    client.flush()
    client.join()
    client.shutdown()
    assert time.monotonic() - started < 0.1
    assert redis_client.dbsize() == 0
