"""Reporting webhooks: signature checks (valid, bad, stale, replayed), storage once per event_id,
consumer-group reads (at least once), the receiver app, and the sandbox's signed sender."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cio_worker import keys, webhooks
from cio_worker.config import SANDBOX_WEBHOOK_SIGNING_KEY, Settings
from cio_worker.errors import ConfigError, ValidationError, WebhookSignatureError
from cio_worker.sandbox import webhook_sender
from cio_worker.webhooks._app import create_webhook_app
from cio_worker.webhooks._event import WebhookEvent, parse_event
from cio_worker.webhooks._signature import sign, verify_signature
from cio_worker.webhooks._store import WebhookStore

with warnings.catch_warnings():
    # Starlette prefers httpx2 for its test client and warns when it falls back to httpx.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

KEY = "whsec-test-key"
NOW = 1_760_000_000


def event(event_id: str = "01E4C4CT6YDC7Y5M7FE1GWWPQJ", metric: str = "bounced") -> dict[str, Any]:
    """An email event in the reporting-webhooks spec's shape."""
    return {
        "event_id": event_id,
        "object_type": "email",
        "metric": metric,
        "timestamp": NOW - 5,
        "data": {
            "delivery_id": f"dlv-{event_id}",
            "identifiers": {"id": "42", "email": "test@example.com"},
            "recipient": "test@example.com",
            "failure_message": "mailbox does not exist",
        },
    }


def reference_signature(key: str, timestamp: int, body: bytes) -> str:
    """The spec's recipe, written out independently of the code under test."""
    return hmac.new(key.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()


def signed(body: bytes, *, timestamp: int = NOW, key: str = KEY) -> dict[str, str]:
    return {
        "X-CIO-Timestamp": str(timestamp),
        "X-CIO-Signature": reference_signature(key, timestamp, body),
        "Content-Type": "application/json",
    }


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


# -- Signatures -----------------------------------------------------------------------------------
class TestVerifySignature:
    def test_sign_matches_the_spec_recipe(self) -> None:
        """sign() is hex HMAC-SHA256 of v0:<timestamp>:<body> keyed with the signing key."""
        body = b'{"event_id":"x"}'
        assert sign(KEY, NOW, body) == reference_signature(KEY, NOW, body)

    def test_a_valid_signature_passes_and_returns_the_timestamp(self) -> None:
        body = dumps(event())
        headers = signed(body)
        result = verify_signature(
            KEY,
            timestamp=headers["X-CIO-Timestamp"],
            signature=headers["X-CIO-Signature"].upper(),  # hex case does not matter
            body=body,
            now=NOW,
        )
        assert result == NOW

    @pytest.mark.parametrize(
        ("change", "reason"),
        [
            ({"key": "another-key"}, "mismatch"),
            ({"body": b'{"event_id":"tampered"}'}, "mismatch"),
            ({"timestamp": str(NOW + 1)}, "mismatch"),  # the timestamp is signed too
            ({"signature": "abc"}, "mismatch"),
            ({"signature": "é" * 64}, "mismatch"),  # not even ASCII: still a plain refusal
            ({"signature": None}, "missing"),
            ({"timestamp": ""}, "missing"),
            ({"timestamp": "1.5e9"}, "malformed"),
            ({"now": NOW + 301}, "stale"),
            ({"now": NOW - 301}, "stale"),  # from the future: a skewed or forged clock
        ],
    )
    def test_bad_signatures_are_refused_with_a_reason(
        self, change: dict[str, Any], reason: str
    ) -> None:
        body = dumps(event())
        headers = signed(body)
        args: dict[str, Any] = {
            "key": KEY,
            "timestamp": headers["X-CIO-Timestamp"],
            "signature": headers["X-CIO-Signature"],
            "body": body,
            "now": NOW,
        }
        args.update(change)
        key = args.pop("key")
        with pytest.raises(WebhookSignatureError) as caught:
            verify_signature(key, **args)
        assert caught.value.reason == reason

    def test_five_minutes_is_the_edge(self) -> None:
        """Exactly 300 s old still passes; 301 s does not (the spec's 5-minute window)."""
        body = b"{}"
        signature = reference_signature(KEY, NOW, body)
        verify_signature(KEY, timestamp=str(NOW), signature=signature, body=body, now=NOW + 300)
        with pytest.raises(WebhookSignatureError, match="300s"):
            verify_signature(KEY, timestamp=str(NOW), signature=signature, body=body, now=NOW + 301)

    def test_comparison_is_constant_time(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The signature is compared with hmac.compare_digest, never with ==."""
        calls: list[tuple[bytes, bytes]] = []
        real = hmac.compare_digest

        def spy(a: bytes, b: bytes) -> bool:
            calls.append((a, b))
            return real(a, b)

        monkeypatch.setattr(hmac, "compare_digest", spy)
        body = b"{}"
        signature = reference_signature(KEY, NOW, body)
        verify_signature(KEY, timestamp=str(NOW), signature=signature, body=body, now=NOW)
        assert calls == [(signature.encode(), signature.encode())]

    def test_signing_key_is_required(self, settings: Settings) -> None:
        with pytest.raises(ConfigError, match="CUSTOMERIO_WEBHOOK_SIGNING_KEY"):
            webhooks.signing_key(settings.replace(webhook_signing_key=None))

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            (b"not json", "body"),
            (b"[1]", "body"),
            (dumps({"object_type": "email", "metric": "sent"}), "event_id"),
            (dumps({**event(), "event_id": ""}), "event_id"),
            (dumps({**event(), "metric": None}), "metric"),
        ],
    )
    def test_bodies_that_are_not_events(self, body: bytes, field: str) -> None:
        with pytest.raises(ValidationError) as caught:
            parse_event(body)
        assert caught.value.field == field


# -- The store and consumer groups ----------------------------------------------------------------
@pytest.fixture
def store(redis_client: redis.Redis) -> WebhookStore:
    return WebhookStore(redis_client)


def add(store: WebhookStore, *event_ids: str, metric: str = "bounced") -> list[str | None]:
    return [
        store.append(event(event_id, metric), dumps(event(event_id, metric)))
        for event_id in event_ids
    ]


class TestStore:
    def test_each_event_id_is_stored_once(
        self, store: WebhookStore, redis_client: redis.Redis
    ) -> None:
        """A retried delivery (same event_id) adds nothing; the marker expires after 8 days."""
        first, again = add(store, "E1", "E1")
        assert first is not None and again is None
        assert redis_client.xlen(keys.webhook_events()) == 1
        ttl = redis_client.ttl(keys.webhook_seen("E1"))
        assert 7 * 86_400 < ttl <= 8 * 86_400

    def test_stored_event_keeps_the_body_as_sent(self, store: WebhookStore) -> None:
        add(store, "E1")
        (stored,) = store.recent()
        assert stored.body == event("E1")
        assert (stored.metric, stored.object_type, stored.timestamp) == (
            "bounced",
            "email",
            NOW - 5,
        )
        assert stored.data["delivery_id"] == "dlv-E1"
        assert stored.summary()["delivery_id"] == "dlv-E1"
        assert "recipient" not in json.dumps(stored.summary())

    def test_recent_is_newest_first_and_filters_by_metric(self, store: WebhookStore) -> None:
        add(store, "A", "B")
        add(store, "C", metric="spammed")
        assert [e.event_id for e in store.recent()] == ["C", "B", "A"]
        assert [e.event_id for e in store.recent(metric="bounced")] == ["B", "A"]
        assert [e.event_id for e in store.recent(1)] == ["C"]

    def test_counters(self, store: WebhookStore) -> None:
        store.count("stored")
        store.count("stored")
        store.count("rejected_stale")
        assert store.counts() == {"rejected_stale": 1, "stored": 2}


class TestConsumerGroups:
    def test_a_new_group_starts_with_the_oldest_event(self, store: WebhookStore) -> None:
        """Events stored before the group existed are delivered to it too."""
        add(store, "A", "B")
        assert [e.event_id for e in store.read("crm", "c1")] == ["A", "B"]

    def test_groups_each_get_every_event_consumers_share_them(self, store: WebhookStore) -> None:
        add(store, "A", "B", "C", "D")
        first = store.read("crm", "c1", count=2)
        second = store.read("crm", "c2", count=10)
        assert [e.event_id for e in first + second] == ["A", "B", "C", "D"]
        assert [e.event_id for e in store.read("billing", "b1")] == ["A", "B", "C", "D"]

    def test_unacknowledged_events_are_handed_out_again(self, store: WebhookStore) -> None:
        """At least once: an event not acked within claim_idle_s goes to the next reader."""
        add(store, "A", "B")
        taken = store.read("crm", "dies", claim_idle_s=0.05)
        store.ack("crm", taken[1].stream_id)  # B handled, A not (its consumer crashed)
        assert store.read("crm", "c2", claim_idle_s=0.05) == []  # A not idle long enough yet
        time.sleep(0.1)
        again = store.read("crm", "c2", claim_idle_s=0.05)
        assert [e.event_id for e in again] == ["A"]
        assert store.ack("crm", again[0].stream_id) == 1
        time.sleep(0.1)
        assert store.read("crm", "c3", claim_idle_s=0.05) == []

    def test_block_waits_for_a_new_event(self, store: WebhookStore) -> None:
        """block_s returns as soon as an event arrives, or empty when the time is up."""
        started = time.monotonic()
        assert store.read("crm", "c1", block_s=0.3) == []
        assert 0.25 <= time.monotonic() - started < 2
        timer = threading.Timer(0.3, lambda: add(store, "late"))
        timer.start()
        started = time.monotonic()
        found = store.read("crm", "c1", block_s=5)
        timer.join()
        assert [e.event_id for e in found] == ["late"]
        assert time.monotonic() - started < 3

    def test_long_blocks_survive_a_short_socket_timeout(self, redis_url: str) -> None:
        """With get_redis's 0.4 s socket timeout, a 1 s block is waited in shorter pieces
        instead of failing as a dead connection."""
        client = redis.Redis.from_url(redis_url, socket_timeout=0.4)
        started = time.monotonic()
        assert WebhookStore(client).read("crm", "c1", block_s=1.0) == []
        assert time.monotonic() - started >= 0.95
        client.close()

    def test_a_blocking_piece_that_answers_late_is_not_an_error(self, redis_url: str) -> None:
        """A late answer to one blocking piece (a busy host) is ridden out, not raised; the
        event still arrives on the next piece."""
        client = redis.Redis.from_url(redis_url, socket_timeout=0.4)
        store = WebhookStore(client)
        store.read("crm", "c1")  # creates the group
        store.append(event("A"), dumps(event("A")))
        original = client.xreadgroup
        calls: list[int] = []

        def late_once(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise redis.TimeoutError("Timeout reading from socket")
            return original(*args, **kwargs)

        client.xreadgroup = late_once  # type: ignore[method-assign]
        events = store.read("crm", "c1", block_s=1.0)
        assert [e.event_id for e in events] == ["A"]
        assert len(calls) == 2
        client.close()

    def test_a_late_last_piece_ends_the_wait_empty_handed(self, redis_url: str) -> None:
        """When the late answer comes after the whole block, the read ends with no events
        (as a block that found none), not with an error."""
        client = redis.Redis.from_url(redis_url, socket_timeout=0.4)
        store = WebhookStore(client)

        def late(*_: Any, **__: Any) -> Any:
            time.sleep(0.35)
            raise redis.TimeoutError("Timeout reading from socket")

        store.read("crm", "c1")
        client.xreadgroup = late  # type: ignore[method-assign]
        assert store.read("crm", "c1", block_s=0.3) == []
        client.close()

    def test_module_functions_use_the_settings(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """webhooks.read/ack/list_events work from Settings alone, and ack takes events."""
        WebhookStore(redis_client).append(event("A"), dumps(event("A")))
        events = webhooks.read("crm", "c1", settings=settings)
        assert [e.event_id for e in events] == ["A"]
        assert webhooks.ack("crm", *events, settings=settings) == 1
        assert [e.event_id for e in webhooks.list_events(settings=settings)] == ["A"]

    @pytest.mark.parametrize(("group", "consumer"), [("", "c"), ("g", " "), ("g" * 201, "c")])
    def test_group_and_consumer_names_are_checked(
        self, store: WebhookStore, group: str, consumer: str
    ) -> None:
        with pytest.raises(ValidationError):
            store.read(group, consumer)

    def test_trim_drops_old_events(self, store: WebhookStore, redis_client: redis.Redis) -> None:
        add(store, "A")
        assert store.trim(3600) == 0
        time.sleep(0.01)
        assert store.trim(0) == 1
        assert redis_client.xlen(keys.webhook_events()) == 0


class TestRetention:
    """The stream is bounded by the retention even when nobody reads it (it used to grow forever:
    trim() was never called)."""

    def test_each_append_trims_events_past_the_retention(
        self, store: WebhookStore, redis_client: redis.Redis
    ) -> None:
        """Approximate MINID on the append itself: whole stream nodes of old entries go."""
        stream = keys.webhook_events()
        for number in range(1, 301):  # three full nodes of entries from January 1970
            redis_client.xadd(stream, {"event_id": f"old{number}"}, id=f"{number}-0")
        add(store, "new")
        remaining = redis_client.xlen(stream)
        assert remaining <= 100, remaining  # at most one node's worth of stragglers
        assert [e.event_id for e in store.recent(1)] == ["new"]

    def test_append_keeps_events_inside_the_retention(self, redis_client: redis.Redis) -> None:
        store = WebhookStore(redis_client, retention_s=3600)
        add(store, *(f"E{n}" for n in range(250)))
        assert redis_client.xlen(keys.webhook_events()) == 250

    def test_trim_is_exact_and_defaults_to_the_retention(self, redis_client: redis.Redis) -> None:
        stream = keys.webhook_events()
        for number in range(1, 151):
            redis_client.xadd(stream, {"event_id": f"old{number}"}, id=f"{number}-0")
        store = WebhookStore(redis_client, retention_s=3600)
        redis_client.xadd(stream, {"event_id": "recent"})  # now, by Redis's clock
        assert store.trim() == 150
        assert redis_client.xlen(stream) == 1

    def test_the_receiver_trims_on_a_timer(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """With no new events (so no append trims), the receiver still drops old ones."""
        stream = keys.webhook_events()
        redis_client.xadd(stream, {"event_id": "old"}, id="1000-0")
        store = WebhookStore(redis_client, retention_s=3600)
        app = create_webhook_app(
            settings.replace(webhook_signing_key=KEY), store=store, trim_interval_s=0.05
        )
        with TestClient(app):
            deadline = time.monotonic() + 10
            while redis_client.xlen(stream) and time.monotonic() < deadline:
                time.sleep(0.02)
        assert redis_client.xlen(stream) == 0

    def test_retention_comes_from_the_settings(self) -> None:
        settings = Settings.from_env({"CIO_WORKER_WEBHOOK_RETENTION_DAYS": "2"})
        assert settings.webhook_retention_days == 2
        assert Settings().webhook_retention_days == 7


# -- The receiver app -----------------------------------------------------------------------------
class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def receiver(settings: Settings, store: WebhookStore) -> Iterator[tuple[TestClient, Clock]]:
    clock = Clock()
    app = create_webhook_app(settings.replace(webhook_signing_key=KEY), store=store, clock=clock)
    with TestClient(app) as client:
        yield client, clock


class TestReceiver:
    def test_valid_webhook_is_stored(
        self, receiver: tuple[TestClient, Clock], store: WebhookStore
    ) -> None:
        client, _ = receiver
        body = dumps(event("A"))
        response = client.post("/", content=body, headers=signed(body))
        assert (response.status_code, response.json()) == (200, {"stored": True})
        assert [e.event_id for e in store.recent()] == ["A"]
        assert store.counts() == {"stored": 1}

    def test_replayed_request_is_stored_once(
        self, receiver: tuple[TestClient, Clock], store: WebhookStore
    ) -> None:
        """The same signed request again (a Customer.io retry, or a replay inside the window):
        200 so the sender stops, but no second event."""
        client, clock = receiver
        body = dumps(event("A"))
        headers = signed(body)
        assert client.post("/", content=body, headers=headers).json() == {"stored": True}
        clock.now += 120
        again = client.post("/", content=body, headers=headers)
        assert (again.status_code, again.json()) == (200, {"stored": False, "duplicate": True})
        clock.now += 200  # the captured request is now 320 s old: refused outright
        assert client.post("/", content=body, headers=headers).status_code == 401
        assert len(store.recent()) == 1
        assert store.counts() == {"duplicate": 1, "rejected_stale": 1, "stored": 1}

    @pytest.mark.parametrize(
        ("make_headers", "reason"),
        [
            (lambda body: signed(body, key="forged"), "mismatch"),
            (lambda body: signed(b'{"other": 1}'), "mismatch"),
            (lambda body: signed(body, timestamp=NOW - 301), "stale"),
            (lambda body: {"Content-Type": "application/json"}, "missing"),
            (lambda body: {**signed(body), "X-CIO-Timestamp": "yesterday"}, "malformed"),
        ],
    )
    def test_bad_signatures_are_401_counted_and_not_stored(
        self,
        receiver: tuple[TestClient, Clock],
        store: WebhookStore,
        make_headers: Callable[[bytes], dict[str, str]],
        reason: str,
    ) -> None:
        client, _ = receiver
        body = dumps(event("A"))
        response = client.post("/", content=body, headers=make_headers(body))
        assert response.status_code == 401
        assert "A" not in response.text  # nothing of the request is echoed back
        assert store.recent() == []
        assert store.counts() == {f"rejected_{reason}": 1}

    def test_signed_garbage_is_400(
        self, receiver: tuple[TestClient, Clock], store: WebhookStore
    ) -> None:
        client, _ = receiver
        body = b'{"hello": "world"}'
        response = client.post("/", content=body, headers=signed(body))
        assert response.status_code == 400 and "event_id" in response.json()["error"]
        assert store.counts() == {"invalid": 1}

    def test_oversized_body_is_413(self, receiver: tuple[TestClient, Clock]) -> None:
        client, _ = receiver
        body = b"x" * (Settings().webhook_max_body_bytes + 1)
        assert client.post("/", content=body, headers=signed(body)).status_code == 413

    def test_only_post_at_root_and_a_health_check(self, receiver: tuple[TestClient, Clock]) -> None:
        client, _ = receiver
        assert client.get("/").status_code == 405
        assert client.get("/healthz").json() == {"ok": True, "redis": "ok"}

    def test_redis_down_is_503_so_customer_io_retries(self, settings: Settings) -> None:
        dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
        app = create_webhook_app(
            settings.replace(webhook_signing_key=KEY), store=WebhookStore(dead), clock=Clock()
        )
        body = dumps(event("A"))
        with TestClient(app) as client:
            assert client.post("/", content=body, headers=signed(body)).status_code == 503

    def test_no_key_no_receiver(self, settings: Settings) -> None:
        with pytest.raises(ConfigError, match="CUSTOMERIO_WEBHOOK_SIGNING_KEY"):
            create_webhook_app(settings.replace(webhook_signing_key=None))

    def test_sandbox_mode_uses_the_sandboxs_signing_key(self) -> None:
        """With CIO_WORKER_SANDBOX_URL and no key of its own, the receiver takes the sandbox's."""
        sandbox = Settings.from_env({"CIO_WORKER_SANDBOX_URL": "http://127.0.0.1:9"})
        assert webhooks.signing_key(sandbox) == SANDBOX_WEBHOOK_SIGNING_KEY
        real = Settings.from_env(
            {"CIO_WORKER_SANDBOX_URL": "http://127.0.0.1:9", "CUSTOMERIO_WEBHOOK_SIGNING_KEY": "k"}
        )
        assert webhooks.signing_key(real) == "k"
        assert Settings.from_env({}).webhook_signing_key is None


# -- The receiver against clients that cannot sign ------------------------------------------------
class Exchange:
    """One request driven through the ASGI app by hand: which body chunks it hands over, whether
    it stalls after them, and what came back."""

    def __init__(self, chunks: list[bytes], *, stall: bool = False) -> None:
        self.chunks = list(chunks)
        self.stall = stall
        self.receive_calls = 0
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""

    async def receive(self) -> dict[str, Any]:
        self.receive_calls += 1
        if self.chunks:
            chunk = self.chunks.pop(0)
            more = bool(self.chunks) or self.stall
            return {"type": "http.request", "body": chunk, "more_body": more}
        if self.stall:
            await asyncio.Event().wait()  # an upload that never finishes
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    async def run(self, app: Any, headers: dict[str, str] | list[tuple[str, str]]) -> Exchange:
        pairs = headers.items() if isinstance(headers, dict) else headers
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/",
            "raw_path": b"/",
            "root_path": "",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in pairs],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8788),
        }
        await app(scope, self.receive, self.send)
        return self


def length(body: bytes, headers: dict[str, str], declared: int | None = None) -> dict[str, str]:
    return {**headers, "Content-Length": str(len(body) if declared is None else declared)}


@pytest.fixture
def guarded(settings: Settings, store: WebhookStore) -> Callable[..., Any]:
    """A receiver app, with the default limits unless `make(**settings_changes)` says."""

    def make(**changes: Any) -> Any:
        limits = {"webhook_signing_key": KEY, **changes}
        return create_webhook_app(settings.replace(**limits), store=store, clock=Clock())

    return make


class TestUnsignedClients:
    @pytest.mark.parametrize(
        ("make_headers", "status", "counter"),
        [
            (lambda body: {"Content-Type": "application/json"}, 401, "rejected_missing"),
            (lambda body: signed(body, timestamp=NOW - 301), 401, "rejected_stale"),
            (lambda body: {**signed(body), "X-CIO-Timestamp": "soon"}, 401, "rejected_malformed"),
            (lambda body: signed(body), 413, "rejected_too_large"),
        ],
    )
    def test_refused_on_headers_without_reading_the_body(
        self,
        guarded: Callable[..., Any],
        store: WebhookStore,
        make_headers: Callable[[bytes], dict[str, str]],
        status: int,
        counter: str,
    ) -> None:
        """Nothing of the body is read, and the connection is closed (the rest of the upload is
        never parsed); the declared 2 MiB is over the 1 MiB default."""
        body = dumps(event("A"))
        exchange = asyncio.run(
            Exchange([body], stall=True).run(
                guarded(), length(body, make_headers(body), declared=2 * 1024 * 1024)
            )
        )
        assert exchange.status == status
        assert exchange.receive_calls == 0
        assert exchange.headers["connection"] == "close"
        assert store.counts() == {counter: 1}

    def test_duplicate_signature_headers_are_refused(
        self, receiver: tuple[TestClient, Clock], store: WebhookStore
    ) -> None:
        """Two X-CIO-Signature (or X-CIO-Timestamp) headers: 401, even if one of them is right
        (not first-one-wins)."""
        client, _ = receiver
        body = dumps(event("A"))
        good = signed(body)
        for name, other in (
            ("X-CIO-Signature", "0" * 64),
            ("X-CIO-Timestamp", str(NOW - 1)),
        ):
            for pair in ((good[name], other), (other, good[name])):
                headers = [(k, v) for k, v in good.items() if k != name]
                headers += [(name, pair[0]), (name, pair[1])]
                response = client.post("/", content=body, headers=headers)
                assert response.status_code == 401
        assert store.recent() == []
        assert store.counts() == {"rejected_duplicate": 4}

    def test_a_stalled_body_is_cut_off_at_the_deadline(
        self, guarded: Callable[..., Any], store: WebhookStore
    ) -> None:
        """A body that stops short is answered 408 after CIO_WORKER_WEBHOOK_BODY_TIMEOUT_S, and
        its slot comes back."""
        app = guarded(webhook_body_timeout_s=0.3, webhook_max_concurrent_bodies=1)
        body = dumps(event("A"))
        started = time.monotonic()
        exchange = asyncio.run(
            Exchange([body[:10]], stall=True).run(app, length(body, signed(body)))
        )
        assert exchange.status == 408 and exchange.headers["connection"] == "close"
        assert 0.25 <= time.monotonic() - started < 5
        # The one slot is free again: a whole signed event gets in.
        assert asyncio.run(Exchange([body]).run(app, length(body, signed(body)))).status == 200
        assert store.counts() == {"rejected_timeout": 1, "stored": 1}

    def test_a_body_over_the_limit_is_refused_as_it_streams(
        self, receiver: tuple[TestClient, Clock], store: WebhookStore
    ) -> None:
        """Chunked, so no size is declared: reading stops at the limit."""
        client, _ = receiver
        body = b"x" * (Settings().webhook_max_body_bytes + 1)
        pieces = (body[i : i + 65536] for i in range(0, len(body), 65536))
        response = client.post("/", content=pieces, headers=signed(body))
        assert response.status_code == 413
        assert store.counts() == {"rejected_too_large": 1}

    def test_the_body_limit_is_a_setting(
        self, guarded: Callable[..., Any], store: WebhookStore
    ) -> None:
        body = dumps(event("A"))
        headers = length(body, signed(body))
        small = guarded(webhook_max_body_bytes=len(body) - 1)
        assert asyncio.run(Exchange([body]).run(small, headers)).status == 413
        exact = guarded(webhook_max_body_bytes=len(body))
        assert asyncio.run(Exchange([body]).run(exact, headers)).status == 200

    def test_a_body_in_many_pieces_verifies(self, guarded: Callable[..., Any]) -> None:
        """The signature is computed as the body arrives, piece by piece."""
        body = dumps(event("A"))
        pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
        exchange = asyncio.run(Exchange(pieces).run(guarded(), length(body, signed(body))))
        assert (exchange.status, json.loads(exchange.body)) == (200, {"stored": True})

    def test_bodies_read_at_once_are_capped_large_ones_in_their_own_lane(
        self, guarded: Callable[..., Any], store: WebhookStore
    ) -> None:
        """With 4 slots, one may hold a large body (> 64 KiB or chunked). A large upload that
        stalls takes it: the next large one is refused at once (503, Retry-After, nothing read),
        while small events, what Customer.io sends without Body Content, still get in. Four
        stalled small ones fill every slot."""
        app = guarded(webhook_max_concurrent_bodies=4, webhook_body_timeout_s=2)
        big = b" " * 100_000
        small = dumps(event("A"))

        async def scenario() -> list[Exchange]:
            stalled_big = asyncio.create_task(
                Exchange([big[:10]], stall=True).run(app, length(big, signed(big)))
            )
            await asyncio.sleep(0.05)
            refused = await Exchange([big]).run(app, length(big, signed(big)))
            chunked = await Exchange([big]).run(
                app, {**signed(big), "Transfer-Encoding": "chunked"}
            )
            admitted = await Exchange([small]).run(app, length(small, signed(small)))
            stalled_small = [
                asyncio.create_task(
                    Exchange([small[:5]], stall=True).run(app, length(small, signed(small)))
                )
                for _ in range(3)
            ]
            await asyncio.sleep(0.05)
            full = await Exchange([small]).run(app, length(small, signed(small)))
            held = await asyncio.gather(stalled_big, *stalled_small)
            return [refused, chunked, admitted, full, *held]

        refused, chunked, admitted, full, *held = asyncio.run(scenario())
        for busy in (refused, chunked, full):
            assert busy.status == 503 and busy.receive_calls == 0
            assert busy.headers["retry-after"] == "2"
        assert admitted.status == 200
        assert [exchange.status for exchange in held] == [408] * 4
        assert store.counts() == {"rejected_busy": 3, "rejected_timeout": 4, "stored": 1}

    def test_a_flood_of_refusals_is_counted_in_few_round_trips(
        self, guarded: Callable[..., Any], store: WebhookStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Counting refusals never runs more than one Redis call at a time: a flood cannot take
        the worker threads that store events."""
        calls: list[dict[str, int]] = []
        active: list[int] = []
        real = store.add_counts

        def slow(deltas: dict[str, int]) -> None:
            active.append(1)
            assert len(active) == 1
            time.sleep(0.05)
            calls.append(dict(deltas))
            real(deltas)
            active.pop()

        monkeypatch.setattr(store, "add_counts", slow)
        app = guarded()

        async def flood() -> None:
            await asyncio.gather(*(Exchange([]).run(app, {}) for _ in range(50)))

        asyncio.run(flood())
        assert store.counts() == {"rejected_missing": 50}
        assert len(calls) <= 3

    def test_counting_with_redis_down_does_not_fail_the_answer(self, settings: Settings) -> None:
        dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
        app = create_webhook_app(
            settings.replace(webhook_signing_key=KEY), store=WebhookStore(dead), clock=Clock()
        )
        assert asyncio.run(Exchange([]).run(app, {})).status == 401


class TestOddSignedBodies:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            (b'{"event_id": "\\ud800", "object_type": "email", "metric": "sent"}', "event_id"),
            (b'{"event_id": "E", "object_type": "\\udfff", "metric": "sent"}', "object_type"),
            (b"[" * 100_000 + b"]" * 100_000, "body"),
            (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "body"),
            (dumps(event("A")).decode().encode("utf-16"), "body"),
            (b'{"event_id": "\xff", "object_type": "email", "metric": "sent"}', "body"),
            (dumps({**event("A"), "metric": "m" * 201}), "metric"),
            (
                b'{"event_id": "E", "object_type": "email", "metric": "sent", "n": 1'
                + b"0" * 5000
                + b"}",
                "body",
            ),  # fmt: skip
        ],
    )
    def test_signed_but_odd_bodies_are_400_never_500(
        self, receiver: tuple[TestClient, Clock], store: WebhookStore, body: bytes, field: str
    ) -> None:
        client, _ = receiver
        response = client.post("/", content=body, headers=signed(body))
        assert response.status_code == 400, response.text
        assert response.json()["error"].startswith(f"{field}:")
        assert store.recent() == []
        assert store.counts() == {"invalid": 1}

    def test_other_strings_may_hold_anything_json_allows(
        self, receiver: tuple[TestClient, Clock], store: WebhookStore
    ) -> None:
        """Only the fields we store separately must be UTF-8 strings; the body is kept as sent."""
        body = dumps({**event("A"), "data": {"note": "\ud800 \x00 é"}})
        response = receiver[0].post("/", content=body, headers=signed(body))
        assert response.status_code == 200, response.text
        (stored,) = store.recent()
        assert stored.body["data"]["note"] == "\ud800 \x00 é"


class TestHealth:
    def test_healthz_says_whether_redis_answers(self, settings: Settings) -> None:
        dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
        app = create_webhook_app(
            settings.replace(webhook_signing_key=KEY), store=WebhookStore(dead), clock=Clock()
        )
        with TestClient(app) as client:
            response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json() == {"ok": False, "redis": "ConnectionError"}


class TestReceiverSettings:
    def test_defaults(self) -> None:
        settings = Settings.from_env({})
        assert settings.webhook_max_body_bytes == 1024 * 1024
        assert settings.webhook_body_timeout_s == 5
        assert settings.webhook_max_concurrent_bodies == 32

    def test_from_env(self) -> None:
        settings = Settings.from_env(
            {
                "CIO_WORKER_WEBHOOK_MAX_BODY_BYTES": "2097152",
                "CIO_WORKER_WEBHOOK_BODY_TIMEOUT_S": "2.5",
                "CIO_WORKER_WEBHOOK_MAX_CONCURRENT_BODIES": "8",
            }
        )
        assert settings.webhook_max_body_bytes == 2 * 1024 * 1024
        assert settings.webhook_body_timeout_s == 2.5
        assert settings.webhook_max_concurrent_bodies == 8

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("CIO_WORKER_WEBHOOK_MAX_BODY_BYTES", "100"),
            ("CIO_WORKER_WEBHOOK_MAX_BODY_BYTES", "1.5e6"),
            ("CIO_WORKER_WEBHOOK_BODY_TIMEOUT_S", "0"),
            ("CIO_WORKER_WEBHOOK_MAX_CONCURRENT_BODIES", "0"),
            ("CIO_WORKER_WEBHOOK_RETENTION_DAYS", "-1"),
        ],
    )
    def test_bad_values_name_the_variable(self, name: str, value: str) -> None:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})


# -- The sandbox's sender -------------------------------------------------------------------------
class TestSandboxSender:
    def test_events_have_the_spec_shape(self) -> None:
        email = webhook_sender.build_event("bounced", "email", index=3)
        assert set(email) == {"event_id", "object_type", "metric", "timestamp", "data"}
        assert (
            email["data"]["failure_message"] and email["data"]["recipient"] == "person3@example.com"
        )
        customer = webhook_sender.build_event("unsubscribed", "customer")
        assert set(customer["data"]) == {"customer_id", "email_address", "identifiers"}
        push = webhook_sender.build_event("delivered", "push")
        assert push["data"]["recipients"][0]["device_platform"] == "ios"

    @pytest.mark.parametrize(
        ("spec", "field"),
        [
            ({}, "url"),
            ({"url": "ftp://x"}, "url"),
            ({"url": "http://127.0.0.1:1/", "count": 0}, "count"),
            ({"url": "http://127.0.0.1:1/", "signature": "maybe"}, "signature"),
            ({"url": "http://127.0.0.1:1/", "object_type": "fax"}, "object_type"),
            ({"url": "http://127.0.0.1:1/", "events": []}, "events"),
            ({"url": "http://127.0.0.1:1/", "colour": "red"}, "colour"),
        ],
    )
    def test_bad_specs_name_the_field(self, spec: dict[str, Any], field: str) -> None:
        with pytest.raises(webhook_sender.WebhookSpecError, match=field):
            webhook_sender.parse_send_spec(spec)

    def test_sender_signatures_verify_and_forgeries_do_not(self) -> None:
        """The sandbox's independent signing agrees with verify_signature; "bad" does not."""
        body = b'{"event_id": "x"}'
        for signature, ok in (("valid", True), ("bad", False)):
            spec = webhook_sender.SendSpec(url="http://x/", signature=signature)
            headers = webhook_sender._headers(spec, KEY, body)
            try:
                verify_signature(
                    KEY,
                    timestamp=headers["X-CIO-Timestamp"],
                    signature=headers["X-CIO-Signature"],
                    body=body,
                )
                verified = True
            except WebhookSignatureError:
                verified = False
            assert verified is ok

    def test_unreachable_url_is_reported_not_raised(self) -> None:
        spec = webhook_sender.parse_send_spec({"url": "http://127.0.0.1:1/", "count": 2})
        results = asyncio.run(webhook_sender.send_webhooks(spec, KEY, timeout_s=1))
        assert [r["status"] for r in results] == [None, None]
        assert all("ConnectError" in r["error"] for r in results)

    def test_events_are_webhook_events_when_stored(self, store: WebhookStore) -> None:
        """A sandbox event parses and stores like a real one."""
        sent = webhook_sender.build_event("spammed", "email")
        body = dumps(sent)
        assert store.append(parse_event(body), body) is not None
        (stored,) = store.recent()
        assert isinstance(stored, WebhookEvent) and stored.metric == "spammed"
