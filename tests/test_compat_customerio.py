"""cio_worker.compat.customerio is a drop-in for the official `customerio` package, proven.

For every public call of `customerio` 3.2, the official client sends its request to the sandbox,
then the drop-in enqueues the same call and one real worker delivers it to the same sandbox; the
two recorded requests must be equal: method, path, status, JSON body. The only normalisations
(each asserted, not assumed): an event's body carries cio_worker's dedup `id` (the job id) where
the official client sends none, and a request with no body fields is `{}` from the official
client and no body from the worker. Calls with no cio_worker equivalent must raise a clear
`NotImplementedError`, and every public method of the official classes is one or the other.
"""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import customerio as official  # type: ignore[import-untyped]
import httpx
import pytest

from cio_worker.compat import customerio as compat
from cio_worker.config import SANDBOX_APP_API_KEY, Settings
from cio_worker.dev import RedisServer, SandboxProcess, free_port
from cio_worker.errors import EnqueueError, ValidationError
from cio_worker.produce import Producer

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[1] / "bench"
WAIT_S = 30


@dataclass
class Stack:
    """A private Redis, the sandbox and one worker process."""

    sandbox_url: str
    settings: Settings
    procs: tuple[RedisServer, SandboxProcess, subprocess.Popen[bytes]]
    worker_log: Path
    http: httpx.Client

    def records(self, since: int) -> list[dict[str, Any]]:
        url = f"{self.sandbox_url}/_sandbox/requests"
        found: list[dict[str, Any]] = self.http.get(url, params={"since": since}).json()
        return found

    def last_seq(self) -> int:
        records = self.records(0)
        return int(records[-1]["seq"]) if records else 0

    def wait_for(self, since: int, count: int = 1, settle_s: float = 0.0) -> list[dict[str, Any]]:
        """The records after `since`, once there are `count` of them (and, after `settle_s`,
        still no more: a stray extra request would show up by then)."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            found = self.records(since)
            if len(found) >= count:
                time.sleep(settle_s)
                return self.records(since) if settle_s else found
            time.sleep(0.02)
        log = self.worker_log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"no request reached the sandbox after seq {since}; worker:\n{log}")


def start_stack(root: Path, env_changes: Mapping[str, str]) -> Stack:
    """Redis, the sandbox and a Celery worker configured with `env_changes`."""
    redis_server = RedisServer(root / "redis").start()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CIO_", "CUSTOMERIO_"))},
        "CIO_WORKER_REDIS_URL": redis_server.url,
        "CIO_WORKER_SANDBOX_URL": f"http://127.0.0.1:{port}",
        "CIO_WORKER_LOG_FORMAT": "json",
        **env_changes,
    }
    sandbox = SandboxProcess(env=env, log_path=root / "sandbox.log", port=port).start()
    worker_log = root / "worker.log"
    with open(worker_log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "cio_worker", "worker", "--loglevel", "INFO",
             "-n", f"compat-{port}@%h", "--without-mingle", "--without-gossip"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return Stack(
        sandbox.url,
        Settings.from_env(env),
        (redis_server, sandbox, worker),
        worker_log,
        httpx.Client(timeout=5),
    )


def stop_stack(stack: Stack) -> None:
    redis_server, sandbox, worker = stack.procs
    stack.http.close()
    worker.terminate()
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
    sandbox.stop()
    redis_server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Track v1, one request per job: the official client's requests, like for like."""
    running = start_stack(tmp_path_factory.mktemp("compat-cio"), {"CIO_WORKER_BATCH": "off"})
    try:
        yield running
    finally:
        stop_stack(running)


@pytest.fixture(scope="module")
def producer(stack: Stack) -> Iterator[Producer]:
    made = Producer(stack.settings)
    yield made
    made.redis.close()


@dataclass
class Clients:
    """One side: its module, a Track client and an App API client."""

    module: ModuleType
    cio: Any
    api: Any


@pytest.fixture(scope="module")
def sides(stack: Stack, producer: Producer) -> Iterator[tuple[Clients, Clients]]:
    sys.path.insert(0, str(BENCH))
    try:  # bench/peer.py points the official client at a plain-HTTP loopback sandbox
        peer = importlib.import_module("peer")
    finally:
        sys.path.remove(str(BENCH))
    settings = stack.settings
    first = Clients(
        official,
        peer.peer_client(stack.sandbox_url),
        official.APIClient(SANDBOX_APP_API_KEY, url=stack.sandbox_url),
    )
    second = Clients(
        compat,
        compat.CustomerIO(settings.site_id, settings.track_api_key, producer=producer),
        compat.APIClient(settings.app_api_key, producer=producer),
    )
    yield first, second
    first.cio.close()
    first.api.close()


WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)

#: Every public call of customerio 3.2 that cio_worker carries, as the README and the package's
#: tests make them: (name, call(side)). Each is made through both sides.
CALLS: list[tuple[str, Callable[[Clients], Any]]] = [
    ("identify", lambda s: s.cio.identify("cmp-1", email="ada@example.com", plan="pro")),
    (
        "identify-datetime-and-nan",
        lambda s: s.cio.identify(
            42, created_at=WHEN, naive=WHEN.replace(tzinfo=None), x=float("nan")
        ),
    ),
    ("identify-escaped-id", lambda s: s.cio.identify("ada@example.com/a b?c", first_name="Ada")),
    ("track", lambda s: s.cio.track("cmp-track", "purchased", {"price": 23.45, "at": WHEN})),
    (
        "track-keywords-timestamp",
        lambda s: s.cio.track(customer_id="cmp-kw", name="signed_up", timestamp=1700000000),
    ),
    ("track-datetime-timestamp", lambda s: s.cio.track("cmp-dt", "paid", {"n": 1}, timestamp=WHEN)),
    ("track-no-data", lambda s: s.cio.track("cmp-nodata", "opened")),
    ("track_anonymous", lambda s: s.cio.track_anonymous("anon-1", "visited", {"path": "/x"})),
    (
        "track_anonymous-timestamp",
        lambda s: s.cio.track_anonymous("anon-2", "visited", timestamp=1700000001),
    ),
    (
        "pageview",
        lambda s: s.cio.pageview("cmp-page", "https://example.com/pricing", referrer="https://a.b"),
    ),
    ("backfill", lambda s: s.cio.backfill("cmp-bf", "old_purchase", 1600000000, price=3)),
    ("backfill-datetime", lambda s: s.cio.backfill("cmp-bfdt", "old_purchase", WHEN, price=4)),
    ("backfill-string-timestamp", lambda s: s.cio.backfill("cmp-bfstr", "old", "1600000002")),
    ("delete", lambda s: s.cio.delete("cmp-del")),
    (
        "add_device",
        lambda s: s.cio.add_device(
            "cmp-dev", "tok-ios-1", "ios", last_used=1700000000, attributes={"push": "true"}
        ),
    ),
    ("add_device-minimal", lambda s: s.cio.add_device("cmp-dev2", "tok-and-1", "android")),
    ("delete_device", lambda s: s.cio.delete_device("cmp-deldev", "tok/ios 1")),
    ("suppress", lambda s: s.cio.suppress("cmp-sup")),
    ("unsuppress", lambda s: s.cio.unsuppress("cmp-sup")),
    ("merge_customers", lambda s: s.cio.merge_customers("id", "cmp-1", "email", "old@x.com")),
    ("merge_customers-cio_id", lambda s: s.cio.merge_customers("cio_id", "a1", "id", "cmp-9")),
    (
        "send_email",
        lambda s: s.api.send_email(
            s.module.SendEmailRequest(
                transactional_message_id=7,
                to="ada@example.com",
                identifiers={"id": "cmp-1"},
                _from="shop@example.com",
                subject="Your order",
                body="<p>Thanks</p>",
                message_data={"order": {"id": 9, "total": 30}},
                reply_to="help@example.com",
                bcc="audit@example.com",
                send_at=1900000000,
                tracked=True,
                disable_message_retention=False,
                send_to_unsubscribed=True,
                queue_draft=False,
                language="fr",
                preheader="Soon",
                body_plain="Thanks",
                fake_bcc=False,
                disable_css_preprocessing=True,
            )
        ),
    ),
    ("send_email-attachment", lambda s: s.api.send_email(_with_attachment(s.module))),
    (
        "send_email-dict",
        lambda s: s.api.send_email(
            {"transactional_message_id": "welcome", "to": "a@b.co", "identifiers": {"id": "c1"}}
        ),
    ),
    (
        "send_push",
        lambda s: s.api.send_push(
            s.module.SendPushRequest(
                transactional_message_id=8,
                to="all",
                identifiers={"email": "ada@example.com"},
                title="Shipped",
                message="Your order is on its way",
                image_url="https://example.com/i.png",
                link="https://example.com/o/9",
                custom_data={"order": 9},
                device={"token": "tok-1", "platform": "ios"},
                sound="default",
                message_data={"n": 1},
            )
        ),
    ),
    (
        "send_sms",
        lambda s: s.api.send_sms(
            s.module.SendSMSRequest(
                transactional_message_id=9,
                to="+15555550100",
                identifiers={"cio_id": "a1b2"},
                message_data={"code": "1234"},
                send_to_unsubscribed=False,
            )
        ),
    ),
]


def _with_attachment(module: ModuleType) -> Any:
    request = module.SendEmailRequest(
        transactional_message_id=17, to="ada@example.com", identifiers={"id": "cmp-1"}
    )
    request.attach("receipt.txt", "total: 30")
    request.attach("raw.bin", b"\x00\x01", encode=True)
    return request


#: Official public calls cio_worker has no job for, and the alternative the error names.
UNSUPPORTED: dict[tuple[str, str], tuple[list[Any], str]] = {
    ("CustomerIO", "batch"): ([{"type": "person"}], "CIO_WORKER_BATCH"),
    ("CustomerIO", "send_request"): (["POST", "/x", {}], "raw request"),
    ("APIClient", "send_whatsapp"): ([{}], "official APIClient"),
    ("APIClient", "send_inbox_message"): ([{}], "official APIClient"),
    ("APIClient", "send_in_app"): ([{}], "official APIClient"),
    ("APIClient", "send_request"): (["POST", "/x", {}], "raw request"),
}
#: Official public members that make no request: the context manager, close, the id check,
#: and the HTTP plumbing (the session, the URL builders) that the drop-in has no use for.
NOT_CALLS = {
    "close",
    "is_valid_id_type",
    "http",
    "setup_base_url",
    "get_customer_query_string",
    "get_event_query_string",
    "get_events_query_string",
    "get_device_query_string",
}


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    body = record["body"]
    return {
        "method": record["method"],
        "path": record["path"],
        "status": record["status"],
        "auth": record["auth"],
        # A request with no fields: the official client sends `{}`, the worker no body.
        "body": {} if body is None else body,
    }


def _key(record: dict[str, Any]) -> tuple[str, ...]:
    """What tells the calls' requests apart: each case names its own person, merge or message."""
    body = record["body"] or {}
    named = ("transactional_message_id", "primary", "anonymous_id")
    return (record["method"], record["path"], *(str(body.get(key)) for key in named))


@dataclass
class Exchange:
    """One call made through both sides: the official request, ours, and the job id."""

    sent: dict[str, Any]
    delivered: dict[str, Any] | None
    job_id: str


@pytest.fixture(scope="module")
def exchanges(stack: Stack, sides: tuple[Clients, Clients]) -> dict[str, Exchange]:
    """Every call through the official client (one request each, in turn), then every call
    through the drop-in at once (the worker delivers them in any order), paired by `_key`."""
    first, second = sides
    sent: dict[str, dict[str, Any]] = {}
    before = stack.last_seq()
    for name, call in CALLS:
        call(first)  # synchronous: its request is on record when it returns
        [sent[name]] = stack.wait_for(before)
        before = sent[name]["seq"]
    keys = [_key(record) for record in sent.values()]
    assert len(set(keys)) == len(keys), "two cases make the same request: pairing is ambiguous"
    before = stack.last_seq()
    job_ids = {}
    for name, call in CALLS:
        returned = call(second)
        job_ids[name] = returned["job_id"] if isinstance(returned, dict) else returned
    records = stack.wait_for(before, len(CALLS), settle_s=0.3)
    assert len(records) == len(CALLS), "the worker sent more requests than calls were made"
    delivered = {_key(record): record for record in records}
    return {
        name: Exchange(sent[name], delivered.get(_key(sent[name])), job_ids[name])
        for name, _ in CALLS
    }


@pytest.mark.parametrize("name", [name for name, _ in CALLS])
def test_the_worker_sends_what_the_official_client_sends(
    exchanges: dict[str, Exchange], name: str
) -> None:
    exchange = exchanges[name]
    assert exchange.sent["status"] == 200, exchange.sent
    assert exchange.delivered is not None, f"no delivered request like {exchange.sent}"
    official_request, our_request = _comparable(exchange.sent), _comparable(exchange.delivered)
    if exchange.sent["path"].endswith("/events"):
        # An event: the worker sends the job id as its dedup id, the official client none.
        assert our_request["body"].pop("id") == exchange.job_id
        assert "id" not in official_request["body"]
    assert our_request == official_request


@pytest.mark.parametrize(
    ("owner", "name"), sorted(UNSUPPORTED), ids=[".".join(key) for key in sorted(UNSUPPORTED)]
)
def test_calls_without_an_equivalent_say_so(owner: str, name: str) -> None:
    args, alternative = UNSUPPORTED[(owner, name)]
    client = compat.CustomerIO() if owner == "CustomerIO" else compat.APIClient("key")
    with pytest.raises(NotImplementedError, match=f"{name}: .*{alternative}.*migrating.md"):
        getattr(client, name)(*args)


def test_every_public_call_is_proven_or_refused() -> None:
    proven = {name.split("-")[0] for name, _ in CALLS}
    for owner in ("CustomerIO", "APIClient"):
        for name, _ in inspect.getmembers(getattr(official, owner)):
            if name.startswith("_") or name in NOT_CALLS:
                continue
            assert name in proven or (owner, name) in UNSUPPORTED, f"{owner}.{name} not covered"
            assert callable(getattr(getattr(compat, owner), name)), f"{owner}.{name} missing"


@pytest.mark.parametrize(
    "name",
    [
        "CustomerIO",
        "APIClient",
        "SendEmailRequest",
        "SendPushRequest",
        "SendSMSRequest",
        "SendWhatsAppRequest",
        "SendInboxMessageRequest",
        "SendInAppRequest",
    ],
)
def test_constructors_take_the_official_arguments(name: str) -> None:
    def parameters(cls: type) -> list[tuple[str, object, object]]:
        return [
            (p.name, p.kind, p.default)
            for p in inspect.signature(cls).parameters.values()
            if p.name != "producer"  # cio_worker's keyword-only addition
        ]

    assert parameters(getattr(compat, name)) == parameters(getattr(official, name))
    assert "producer" not in inspect.signature(getattr(official, name)).parameters


class TestErrors:
    """Input errors: the official client's messages, then cio_worker's rules, as the official
    `CustomerIOException` (so `except CustomerIOException` keeps working)."""

    @pytest.mark.parametrize(
        ("call", "message"),
        [
            (lambda c: c.identify(""), "id cannot be blank in identify"),
            (lambda c: c.track(None, "x"), "customer_id cannot be blank in track"),
            (lambda c: c.pageview("", "/p"), "customer_id cannot be blank in pageview"),
            (lambda c: c.backfill("", "x", 1), "customer_id cannot be blank in backfill"),
            (lambda c: c.backfill("1", "x", "soon"), "soon is not a valid timestamp"),
            (lambda c: c.add_device("1", "", "ios"), "device_id cannot be blank in add_device"),
            (lambda c: c.add_device("1", "t", None), "platform cannot be blank in add_device"),
            (lambda c: c.delete_device("1", ""), "device_id cannot be blank in delete_device"),
            (lambda c: c.suppress(""), "customer_id cannot be blank in suppress"),
            (lambda c: c.merge_customers("phone", "1", "id", "2"), "invalid primary id type"),
            (lambda c: c.merge_customers("id", "1", "id", ""), "secondary customer_id cannot"),
        ],
    )
    def test_the_official_checks_and_messages(self, call: Any, message: str) -> None:
        for module in (official, compat):
            with pytest.raises(module.CustomerIOException, match=message):
                call(module.CustomerIO("site", "key"))

    def test_a_region_must_be_one(self) -> None:
        with pytest.raises(compat.CustomerIOException, match="invalid region provided"):
            compat.CustomerIO("site", "key", region="eu")  # type: ignore[arg-type]
        # The official package's own Regions are accepted, for a partial migration.
        assert compat.CustomerIO(region=official.Regions.EU).host == "track-eu.customer.io"

    def test_a_rule_of_cio_worker_is_a_customerio_exception_with_its_cause(
        self, producer: Producer
    ) -> None:
        client = compat.CustomerIO(producer=producer)
        with pytest.raises(compat.CustomerIOException, match="platform: must be one of") as info:
            client.add_device("1", "tok", "windows")
        assert isinstance(info.value.__cause__, ValidationError)

    def test_an_event_id_is_refused_not_replaced(self, producer: Producer) -> None:
        client = compat.CustomerIO(producer=producer)
        with pytest.raises(compat.CustomerIOException, match="id is not accepted.*dedup id"):
            client.track("1", "x", id="my-dedup-id")

    def test_an_unknown_device_field_is_named(self, producer: Producer) -> None:
        client = compat.CustomerIO(producer=producer)
        with pytest.raises(compat.CustomerIOException, match="colour is not a device field"):
            client.add_device("1", "tok", "ios", colour="red")

    def test_a_request_of_another_kind_is_named(self, producer: Producer) -> None:
        api = compat.APIClient("key", producer=producer)
        with pytest.raises(compat.CustomerIOException, match="send_email takes a SendEmail"):
            api.send_email(compat.SendSMSRequest(transactional_message_id=1))  # type: ignore[arg-type]

    def test_redis_away_is_a_customerio_exception(self) -> None:
        away = Settings.from_env({"CIO_WORKER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
        client = compat.CustomerIO(producer=Producer(away))
        with pytest.raises(compat.CustomerIOException) as info:
            client.identify("1", a=1)
        assert isinstance(info.value.__cause__, EnqueueError)
