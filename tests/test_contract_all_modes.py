"""Every request cio_worker sends, in every mode, conforms to Customer.io's published documents.

Each mode (Track or Pipelines data API, batching on or off) gets every job kind with every
option, enqueued by a real `Producer` into a real Redis, and delivered by the real worker code
(`Deliverer` for single jobs, `Batcher` for batches) through `CustomerIoClient` over an httpx
`MockTransport` that records each request as it leaves the client. Every recorded request is then
validated against the spec of its API (tests/specs: Track, Pipelines, App request schemas), path
as sent, headers and body included.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import openapi_contract as contract
import pytest
import redis

from cio_worker.app_api._requests import people_filter, search_request
from cio_worker.config import (
    SANDBOX_APP_API_KEY,
    SANDBOX_PIPELINES_API_KEY,
    SANDBOX_SITE_ID,
    SANDBOX_TRACK_API_KEY,
    Settings,
)
from cio_worker.customerio._http import CustomerIoClient
from cio_worker.customerio._operations import build_operation
from cio_worker.kinds import Kind
from cio_worker.limiter._limiter import Limiter
from cio_worker.produce._jobs import JobDraft
from cio_worker.produce._producer import Producer
from cio_worker.queue._deadletter import DeadLetterStore
from cio_worker.queue._leases import LeaseKeeper
from cio_worker.queue._ledger import JobLedger
from cio_worker.queue._routing import batch_api, is_batched
from cio_worker.queue._shards import SHARDS, BatchQueue
from cio_worker.sandbox import SandboxConfig, create_app
from cio_worker.worker._batcher import Batcher
from cio_worker.worker._deliverer import Deliverer

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its test client and warns when it falls back to httpx.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TS = 1_700_000_000
HOSTS = {"track.test": "track", "app.test": "app", "cdp.test": "pipelines"}
MODES = [
    pytest.param("track", False, id="track-batch-off"),
    pytest.param("track", True, id="track-batch-on"),
    pytest.param("pipelines", False, id="pipelines-batch-off"),
    pytest.param("pipelines", True, id="pipelines-batch-on"),
]


def track_family_jobs(p: Producer, *, json_traits: bool) -> list[str]:
    """Every Track-family kind with each of its options, and awkward (legal) identifiers."""
    when = datetime.fromtimestamp(TS, UTC)
    ids = [
        p.enqueue_identify("u-1"),
        p.enqueue_identify("u-1", {"plan": "pro", "seats": 3, "vip": True}, timestamp=TS),
        p.enqueue_identify("jane@example.com", {"unsubscribed": False, "created_at": TS}),
        p.enqueue_identify("cio_a3000001", {"email": "jane@example.com"}, timestamp=when),
        p.enqueue_identify(42, {"_update": True}),
        p.enqueue_track("u-1", "Signed Up"),
        p.enqueue_track(
            "u-1", "purchase", {"price": 9.5, "items": ["a"], "m": {"k": 1}}, timestamp=TS
        ),
        p.enqueue_track("a/b c", "e", {"x": None}),
        p.enqueue_track("żółć ?#%2e", "événement"),
        p.enqueue_track_anonymous("anon-7", "viewed"),
        p.enqueue_track_anonymous("anon-7", "viewed", {"video": "intro"}, timestamp=TS),
        p.enqueue_track_anonymous(".", "dot is fine in a body"),
        p.enqueue_page("u-1", "https://example.com/pricing?ref=ad"),
        p.enqueue_page("a@example.com", "https://x.test/", {"title": "T"}, timestamp=TS),
        p.enqueue_delete("u-1"),
        p.enqueue_delete("cio_a3000001"),
        p.enqueue_merge("u-1", "u-2"),
        p.enqueue_merge({"email": "a@example.com"}, {"cio_id": "a3000001"}),
        p.enqueue_merge(7, {"id": 8}),
        p.enqueue_suppress("u-1"),
        p.enqueue_unsuppress("u-1"),
        p.enqueue_add_device("u-1", "apns-token-1", "ios"),
        p.enqueue_add_device(
            "u-1", "fcm/token 1", "android", last_used=TS, attributes={"app_version": "1.2"}
        ),
        p.enqueue_remove_device("u-1", "apns-token-1"),
        p.enqueue_remove_device("100%", "fcm/token 1"),
    ]
    if json_traits:
        # Track v1's identify schema takes string/int/bool traits only; Track v2 and Pipelines
        # take JSON. A known divergence kept visible by test_operations.py (strict xfail).
        ids.append(p.enqueue_identify("u-1", {"ltv": 99.5, "tags": ["a"], "addr": {"c": "O"}}))
    return ids


def app_jobs(p: Producer) -> list[str]:
    """Every transactional channel and broadcast audience, with each documented option."""
    who = {"id": "u-1"}
    return [
        p.enqueue_send_email(42, identifiers=who, to="jane@example.com"),
        p.enqueue_send_email(
            "order_shipped",
            identifiers={"email": "jane@example.com"},
            to="Jane <jane@example.com>",
            message_data={"order": 7, "items": [{"sku": "a"}]},
            from_="shop@example.com",
            subject="Your order",
            body="<p>Hi</p>",
            body_plain="Hi",
            body_amp="<html amp4email></html>",
            cc="ops@example.com",
            bcc="audit@example.com",
            reply_to="help@example.com",
            preheader="Shipped",
            headers={"X-Mailgun-Tag": "orders", "X-Custom": "v-1"},
            attachments={"receipt.txt": "aGVsbG8="},
            tracked=True,
            fake_bcc=False,
            disable_css_preprocessing=True,
            auto_create=False,
            send_at=TS,
            language="fr",
            disable_message_retention=True,
            send_to_unsubscribed=False,
            queue_draft=False,
        ),
        p.enqueue_send_email(
            7,
            identifiers={"cio_id": "a3000001"},
            to="a@example.com",
            headers=[{"name": "X-Tag", "value": "t"}],
        ),
        p.enqueue_send_push(5, identifiers=who),
        p.enqueue_send_push(
            "pwdreset",
            identifiers={"email": "jane@example.com"},
            to="last_used",
            title="Shipped",
            message="Your order shipped",
            image_url="https://example.com/i.png",
            link="app://orders/7",
            sound="default",
            custom_data={"order": "7"},
            custom_device={"token": "apns-1", "platform": "ios", "last_used": TS},
            custom_payload={"android": {"message": {"notification": {"title": "T"}}}},
            message_data={"n": 1},
            language="de",
            send_at=TS,
            disable_message_retention=False,
            send_to_unsubscribed=True,
            queue_draft=False,
        ),
        p.enqueue_send_push(5, identifiers=who, to="all"),
        p.enqueue_send_push(5, identifiers=who, to="a-device-token"),
        p.enqueue_send_sms(7, identifiers=who, to="+15555550100"),
        p.enqueue_send_sms(
            "otp",
            identifiers={"cio_id": "a3000001"},
            to="{{customer.phone}}",
            message_data={"code": "1234"},
            tracked=True,
            language="es",
            send_at=TS,
            queue_draft=True,
        ),
        p.enqueue_broadcast(9),
        p.enqueue_broadcast(9, data={"sale": "spring"}),
        p.enqueue_broadcast(9, ids=["u-1", "u-2"], id_ignore_missing=True),
        p.enqueue_broadcast(9, ids=["u-1", 2]),
        p.enqueue_broadcast(
            9, emails=["a@example.com"], email_ignore_missing=True, email_add_duplicates=False
        ),
        p.enqueue_broadcast(
            9, per_user_data=[{"id": "u-1", "data": {"n": 1}}, {"email": "b@example.com"}]
        ),
        p.enqueue_broadcast(9, data={"a": 1}, recipients={"segment": {"id": 3}}),
        p.enqueue_broadcast(
            9,
            recipients={
                "and": [
                    {"segment": {"id": 3}},
                    {"not": {"attribute": {"field": "plan", "operator": "eq", "value": "free"}}},
                    {"or": [{"attribute": {"field": "vip", "operator": "exists"}}]},
                ]
            },
        ),
        p.enqueue_broadcast(9, data_file_url="https://example.com/people.jsonl"),
    ]


SEARCHES = [
    people_filter(None, "jane@example.com"),
    people_filter({"segment": {"id": 3}}, None),
    people_filter({"or": [{"segment": {"id": 3}}, {"segment": {"id": 4}}]}, "a@example.com"),
    people_filter({"not": {"attribute": {"field": "plan", "operator": "exists"}}}, None),
]


def _answer(request: httpx.Request) -> httpx.Response:
    if request.url.host == "app.test":
        return httpx.Response(200, json={"delivery_id": "d-1", "queued_at": TS, "id": 1})
    return httpx.Response(200, json={})


@pytest.fixture
def recorded() -> list[httpx.Request]:
    return []


@pytest.fixture
def make_client(recorded: list[httpx.Request]) -> Iterator[Callable[[Settings], CustomerIoClient]]:
    clients: list[CustomerIoClient] = []

    def make(s: Settings) -> CustomerIoClient:
        def record(request: httpx.Request) -> httpx.Response:
            recorded.append(request)
            return _answer(request)

        client = CustomerIoClient(s, transport=httpx.MockTransport(record))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def mode_settings(settings: Settings, data_api: str, batch: bool) -> Settings:
    return settings.replace(
        data_api=data_api,
        batch=batch,
        batch_linger_ms=0,
        site_id=SANDBOX_SITE_ID,  # the sandbox's keys: the same requests are replayed to it
        track_api_key=SANDBOX_TRACK_API_KEY,
        app_api_key=SANDBOX_APP_API_KEY,
        pipelines_api_key=SANDBOX_PIPELINES_API_KEY,
        track_url="http://track.test",
        app_url="http://app.test",
        pipelines_url="http://cdp.test",
        broadcast_interval_s=0.001,  # many triggers in one test; the limit is not under test
        transactional_rps=10_000.0,
        track_rps=10_000.0,
    )


def deliver_all(
    s: Settings, redis_client: redis.Redis, client: CustomerIoClient, job_ids: list[str]
) -> None:
    """Deliver every job as the workers do; each must end delivered."""
    ledger = JobLedger(redis_client)
    deliverer = Deliverer(
        settings=s,
        ledger=ledger,
        dead_letters=DeadLetterStore(redis_client),
        limiter=Limiter(s, redis_client, sleep=lambda _: None),
        client=client,
        leases=LeaseKeeper(ledger, "contract"),
    )
    for job_id in job_ids:
        entry = ledger.load(job_id)
        if entry is None:
            continue  # batched: the batcher's
        assert not is_batched(entry.job, s)
        outcome = deliverer.run(job_id, entry.job.kind)
        assert outcome.state == "delivered", (entry.job.kind, outcome)
    batcher = Batcher(
        settings=s,
        redis=redis_client,
        client=client,
        limiter=Limiter(s, redis_client, sleep=lambda _: None),
        dead_letters=DeadLetterStore(redis_client),
        owner="contract",
    )
    for _ in range(SHARDS * 2):
        batcher.step()
    assert BatchQueue(redis_client, batch_api(s)).depth() == 0
    assert DeadLetterStore(redis_client).count() == 0


def conformance_problems(requests: list[httpx.Request]) -> list[str]:
    problems: list[str] = []
    for request in requests:
        api = HOSTS[request.url.host]
        path = request.url.raw_path.decode("ascii")
        body: Any = json.loads(request.content) if request.content else None
        for problem in contract.request_errors(
            api, request.method, path, body, dict(request.headers)
        ):
            problems.append(f"{request.method} {path}: {problem}")
    return problems


@pytest.mark.parametrize(("data_api", "batch"), MODES)
def test_every_request_of_every_mode_conforms(
    settings: Settings,
    redis_client: redis.Redis,
    make_client: Callable[[Settings], CustomerIoClient],
    recorded: list[httpx.Request],
    monkeypatch: pytest.MonkeyPatch,
    data_api: str,
    batch: bool,
) -> None:
    """Every kind and option, delivered in this mode, validates against the published specs."""
    s = mode_settings(settings, data_api, batch)
    producer = Producer(s, redis_client=redis_client)
    kinds: set[Kind] = set()
    store = producer._store

    def recording_store(draft: JobDraft) -> str:
        kinds.add(draft.kind)
        return store(draft)

    monkeypatch.setattr(producer, "_store", recording_store)
    json_traits = not (data_api == "track" and not batch)
    job_ids = track_family_jobs(producer, json_traits=json_traits) + app_jobs(producer)
    assert kinds == set(Kind), "every kind must be exercised"
    client = make_client(s)
    deliver_all(s, redis_client, client, job_ids)
    for search in SEARCHES:
        client.send(search_request(search, page_size=10).operation())

    assert recorded, "nothing was sent"
    assert conformance_problems(recorded) == []
    sent = {(HOSTS[r.url.host], r.method, r.url.path) for r in recorded}
    if batch:
        batch_path = "/v1/batch" if data_api == "pipelines" else "/api/v2/batch"
        assert (data_api, "POST", batch_path) in sent
    assert ("app", "POST", "/v1/send/push") in sent
    assert ("app", "POST", "/v1/customers") in sent


@pytest.mark.parametrize(("data_api", "batch"), MODES)
def test_the_sandbox_accepts_every_conforming_request(
    settings: Settings,
    redis_client: redis.Redis,
    make_client: Callable[[Settings], CustomerIoClient],
    recorded: list[httpx.Request],
    data_api: str,
    batch: bool,
) -> None:
    """The sandbox's own checks agree with the specs: each recorded request, replayed to it
    byte for byte, is answered 2xx."""
    s = mode_settings(settings, data_api, batch)
    producer = Producer(s, redis_client=redis_client)
    json_traits = not (data_api == "track" and not batch)
    job_ids = track_family_jobs(producer, json_traits=json_traits) + app_jobs(producer)
    client = make_client(s)
    deliver_all(s, redis_client, client, job_ids)
    for search in SEARCHES:
        client.send(search_request(search, page_size=10).operation())
    config = SandboxConfig(
        broadcast_interval_s=0.001, track_rps=10_000, pipelines_rps=10_000, app_rps=10_000
    )
    with TestClient(create_app(config)) as sandbox:
        for request in recorded:
            answer = sandbox.request(
                request.method,
                request.url.raw_path.decode("ascii"),
                content=request.content,
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
            )
            assert answer.is_success, (request.method, request.url, answer.text)


APP_AUTH = {"Authorization": f"Bearer {SANDBOX_APP_API_KEY}"}
EMAIL = {"transactional_message_id": 1, "identifiers": {"id": "u-1"}, "to": "a@example.com"}


@pytest.mark.parametrize(
    ("path", "body", "auth", "accepted"),
    [
        ("/v1/send/email", {**EMAIL, "headers": '[{"name":"X-Tag","value":"t"}]'}, "app", True),
        ("/v1/send/email", {**EMAIL, "headers": {"X-Tag": "t"}}, "app", False),
        ("/v1/send/email", {**EMAIL, "headers": '{"X-Tag": "t"}'}, "app", False),
        ("/v1/send/email", {**EMAIL, "headers": '[{"name":"X-Tag"}]'}, "app", False),
        ("/v1/send/push", {**EMAIL, "to": "all"}, "app", True),
        ("/v1/send/push", {**EMAIL, "to": ""}, "app", False),
        ("/v1/track", {"type": "track", "userId": "u", "event": "e"}, "cdp", True),
        ("/v1/track", {"userId": "u", "event": "e"}, "cdp", True),
        ("/v1/track", {"type": "identify", "userId": "u", "event": "e"}, "cdp", False),
        ("/v1/alias", {"type": "alias", "userId": "u", "previousId": "v"}, "cdp", True),
        (
            "/v1/batch",
            {"batch": [{"type": "alias", "userId": "u", "previousId": "v"}]},
            "cdp",
            True,
        ),
    ],
)
def test_the_sandbox_checks_what_the_specs_check(
    path: str, body: dict[str, Any], auth: str, accepted: bool
) -> None:
    """The sandbox refuses an email `headers` that is not the documented JSON string, and a
    Pipelines `type` that contradicts its endpoint; it accepts what the specs accept."""
    with TestClient(create_app(SandboxConfig())) as sandbox:
        if auth == "app":
            answer = sandbox.post(path, json=body, headers=APP_AUTH)
        else:
            answer = sandbox.post(
                path,
                json=body,
                auth=(SANDBOX_PIPELINES_API_KEY, ""),
                headers={"X-Strict-Mode": "1"},
            )
    assert answer.is_success is accepted, answer.text
    if not accepted:
        assert answer.status_code == 400


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="known divergence, kept visible: the published /v1/send/sms schema requires `to`, "
    "while enqueue_send_sms accepts a send without it (the template's To is used). Unlike push "
    "there is no documented default to fill in, so the fix is to refuse it at enqueue "
    "(payloads.message), left to the owner of those rules",
)
def test_sms_without_to_conforms(redis_client: redis.Redis, settings: Settings) -> None:
    """An SMS enqueued without `to` is either refused or sent in a conforming shape."""
    s = mode_settings(settings, "track", False)
    producer = Producer(s, redis_client=redis_client)
    job_id = producer.enqueue_send_sms(7, identifiers={"id": "u-1"})
    entry = JobLedger(redis_client).load(job_id)
    assert entry is not None
    op = build_operation(entry.job, s)
    assert contract.request_errors("app", op.method, op.path, op.json) == []
