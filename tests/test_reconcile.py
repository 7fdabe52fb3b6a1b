"""Reconciling ambiguous sends (worker/_reconcile.py) through the delivery code, with a real Redis.

Customer.io is modelled by `FakeApp`, an httpx transport that keeps what it accepted and answers
the App API listings from it: a send can be answered, dropped before it is processed (nothing
sent), or processed and then dropped (sent, answer lost). The worker may only tell the last two
apart by asking. The real sandbox models the same in the chaos suite.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest
import redis

from cio_worker import keys
from cio_worker.config import Settings
from cio_worker.customerio._http import CustomerIoClient
from cio_worker.kinds import Kind
from cio_worker.limiter._limiter import Limiter
from cio_worker.produce._producer import Producer
from cio_worker.queue._deadletter import DeadLetterStore
from cio_worker.queue._leases import LeaseKeeper
from cio_worker.queue._ledger import JobLedger, stats
from cio_worker.queue._receipts import ReceiptBook
from cio_worker.worker._deliverer import Deliverer, Outcome

MESSAGES = re.compile(r"^/v1/customers/([^/]+)/messages$")
TRIGGERS = re.compile(r"^/v1/broadcasts/(\d+)/triggers$")


class FakeApp:
    """Transactional sends, broadcast triggers and the listings that show them."""

    def __init__(self) -> None:
        self.send_mode = "ok"  # ok | drop_before | drop_after | timeout_after
        self.listing_status = 200
        self.deliveries: list[dict[str, Any]] = []
        self.triggers: list[dict[str, Any]] = []
        self.sends = 0
        self.listings = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and (path.startswith("/v1/send/") or "/triggers" in path):
            return self._send(request)
        if request.method == "GET" and (MESSAGES.match(path) or TRIGGERS.match(path)):
            self.listings += 1
            if self.listing_status != 200:
                return httpx.Response(self.listing_status, json={"meta": {"error": "no"}})
            return httpx.Response(200, json=self._listing(request))
        return httpx.Response(404, json={"meta": {"error": "unknown path"}})

    def _send(self, request: httpx.Request) -> httpx.Response:
        self.sends += 1
        if self.send_mode == "drop_before":
            raise httpx.RemoteProtocolError("dropped before processing", request=request)
        answer = self.accept(request)
        if self.send_mode == "drop_after":
            raise httpx.RemoteProtocolError("dropped after processing", request=request)
        if self.send_mode == "timeout_after":
            raise httpx.ReadTimeout("answer too late", request=request)
        return httpx.Response(200, json=answer)

    def accept(self, request: httpx.Request) -> dict[str, Any]:
        body = json.loads(request.content)
        now = int(time.time())
        if "/triggers" in request.url.path:
            broadcast = int(request.url.path.split("/")[3])
            trigger = {"id": 100 + len(self.triggers), "broadcast_id": broadcast,
                       "created_at": now, "processed_at": None}  # fmt: skip
            self.triggers.append(trigger)
            return {"id": trigger["id"]}
        channel = request.url.path.rsplit("/", 1)[1]
        return self.deliver(body, now, "twilio" if channel == "sms" else channel)

    def deliver(self, body: dict[str, Any], now: int, channel: str = "email") -> dict[str, Any]:
        delivery = {
            "id": f"d{len(self.deliveries) + 1}",
            "message_template_id": body["transactional_message_id"],
            "customer_identifiers": body["identifiers"],
            "type": channel,
            "created": now,
            "metrics": {"sent": now},
        }
        self.deliveries.append(delivery)
        return {"delivery_id": delivery["id"], "queued_at": now}

    def _listing(self, request: httpx.Request) -> dict[str, Any]:
        start = int(request.url.params.get("start_ts", "0"))
        if match := TRIGGERS.match(request.url.path):
            found = [t for t in self.triggers if t["broadcast_id"] == int(match.group(1))]
            return {"triggers": [t for t in found if t["created_at"] >= start]}
        match = MESSAGES.match(request.url.path)
        assert match is not None
        id_type = request.url.params.get("id_type", "id")
        person = match.group(1)
        found = [
            d
            for d in self.deliveries
            if str(d["customer_identifiers"].get(id_type)) == person and d["created"] >= start
        ]
        return {"messages": found[::-1], "next": ""}


@pytest.fixture
def app() -> FakeApp:
    return FakeApp()


@pytest.fixture
def deliverer(settings: Settings, redis_client: redis.Redis, app: FakeApp) -> Deliverer:
    s = settings.replace(ambiguous_messages="reconcile", reconcile_settle_s=0)
    return Deliverer(
        settings=s,
        ledger=JobLedger(redis_client),
        dead_letters=DeadLetterStore(redis_client),
        limiter=Limiter(s, redis_client, sleep=lambda _: None),
        client=CustomerIoClient(s, transport=httpx.MockTransport(app)),
        leases=LeaseKeeper(JobLedger(redis_client), "worker-1"),
    )


@pytest.fixture
def producer(settings: Settings, redis_client: redis.Redis) -> Producer:
    return Producer(settings, redis_client=redis_client)


def run(deliverer: Deliverer, job_id: str) -> Outcome:
    """Deliver as the task would, first making a deferred job due (as the sweeper does)."""
    ledger = deliverer.ledger
    kind = Kind(ledger.redis.hget(keys.job(job_id), "kind").decode())
    if ledger.redis.zscore(keys.delayed(), job_id) is not None:
        ledger.redis.zadd(keys.delayed(), {job_id: 0})
        assert ledger.push_again(job_id, kind.value, "due")
    return deliverer.run(job_id, kind)


def email(producer: Producer, person: str = "u1", template: int = 7) -> str:
    return producer.enqueue_send_email(
        template, identifiers={"id": person}, to=f"{person}@example.com"
    )


class TestReceipts:
    def test_a_send_records_its_delivery_id(self, deliverer, producer, app, redis_client) -> None:
        job_id = email(producer)
        assert run(deliverer, job_id).state == "delivered"
        receipt = ReceiptBook(redis_client).get(job_id)
        assert receipt is not None
        assert (receipt.remote_id, receipt.via, receipt.kind) == ("d1", "send", "send_email")
        assert ReceiptBook(redis_client).owners("transactional", ["d1", "d9"]) == {"d1": job_id}

    def test_receipts_are_trimmed_after_their_retention(
        self, deliverer, producer, redis_client
    ) -> None:
        job_id = email(producer)
        run(deliverer, job_id)
        book = ReceiptBook(redis_client, retention_days=1)
        assert book.trim() == 0
        assert book.trim(now_s=time.time() + 86_401) == 1
        assert book.get(job_id) is None
        assert book.owners("transactional", ["d1"]) == {}


class TestAmbiguousSends:
    def test_processed_then_dropped_is_found_not_sent_again(
        self, deliverer, producer, app, redis_client
    ) -> None:
        job_id = email(producer)
        app.send_mode = "drop_after"
        first = run(deliverer, job_id)
        assert first.state == "retry"
        assert redis_client.hget(keys.job(job_id), "sending") is not None  # the mark is kept
        app.send_mode = "ok"
        assert run(deliverer, job_id).state == "delivered"
        assert app.sends == 1 and len(app.deliveries) == 1
        receipt = ReceiptBook(redis_client).get(job_id)
        assert receipt is not None and (receipt.remote_id, receipt.via) == ("d1", "reconciled")
        assert stats(redis_client)["transactional:delivered"] == 1

    def test_dropped_before_processing_is_not_found_and_sent_again(
        self, deliverer, producer, app
    ) -> None:
        job_id = email(producer)
        app.send_mode = "drop_before"
        assert run(deliverer, job_id).state == "retry"
        app.send_mode = "ok"
        assert run(deliverer, job_id).state == "delivered"
        assert app.sends == 2 and len(app.deliveries) == 1  # one email, after one look

    def test_a_timeout_after_writing_is_reconciled_too(self, deliverer, producer, app) -> None:
        job_id = email(producer)
        app.send_mode = "timeout_after"
        assert run(deliverer, job_id).state == "retry"
        app.send_mode = "ok"
        assert run(deliverer, job_id).state == "delivered"
        assert len(app.deliveries) == 1

    def test_another_jobs_delivery_is_not_taken_for_this_ones(
        self, deliverer, producer, app
    ) -> None:
        """Same person, same template: the first job's delivery carries its receipt."""
        first = email(producer)
        assert run(deliverer, first).state == "delivered"
        second = email(producer)
        app.send_mode = "drop_before"
        assert run(deliverer, second).state == "retry"
        app.send_mode = "ok"
        assert run(deliverer, second).state == "delivered"
        assert len(app.deliveries) == 2  # sent again: d1 belongs to the first job

    def test_two_unknown_deliveries_cannot_be_told_apart(
        self, deliverer, producer, app, redis_client
    ) -> None:
        job_id = email(producer)
        app.send_mode = "drop_after"
        assert run(deliverer, job_id).state == "retry"
        # Someone else (not through cio_worker) sent the same template to the same person.
        app.deliver({"transactional_message_id": 7, "identifiers": {"id": "u1"}}, int(time.time()))
        assert run(deliverer, job_id).state == "dead"
        letter = DeadLetterStore(redis_client).get(job_id)
        assert letter is not None
        assert letter.reason.startswith("ambiguous: 2 deliveries since the attempt began")
        assert "d1" in letter.reason and "d2" in letter.reason
        assert app.sends == 1

    def test_an_unreachable_app_api_waits_and_never_resends(
        self, deliverer, producer, app, redis_client
    ) -> None:
        job_id = email(producer)
        app.send_mode = "drop_after"
        run(deliverer, job_id)
        app.send_mode = "ok"
        app.listing_status = 503
        for _ in range(3):
            assert run(deliverer, job_id).state == "retry"
        assert app.sends == 1 and DeadLetterStore(redis_client).count() == 0
        app.listing_status = 200
        assert run(deliverer, job_id).state == "delivered"
        assert app.sends == 1

    def test_a_key_that_may_not_read_dead_letters_with_the_reason(
        self, deliverer, producer, app, redis_client
    ) -> None:
        job_id = email(producer)
        app.send_mode = "drop_after"
        run(deliverer, job_id)
        app.listing_status = 403
        assert run(deliverer, job_id).state == "dead"
        letter = DeadLetterStore(redis_client).get(job_id)
        assert letter is not None and "could not look it up: 403" in letter.reason
        assert app.sends == 1

    def test_a_worker_that_died_mid_send_is_reconciled(
        self, deliverer, producer, app, redis_client
    ) -> None:
        """The request reached Customer.io, then the worker was SIGKILLed before the answer."""
        job_id = email(producer)
        ledger = deliverer.ledger
        ledger.claim(job_id, Kind.SEND_EMAIL.family, "dead-worker", 20)
        ledger.mark_sending(job_id)
        app.accept(
            httpx.Request(
                "POST",
                "http://x/v1/send/email",
                json={"transactional_message_id": 7, "identifiers": {"id": "u1"}},
            )
        )
        redis_client.hset(keys.job(job_id), "lease_until", 0)
        assert run(deliverer, job_id).state == "delivered"
        assert app.sends == 0  # found, not sent

    def test_the_settle_delay_comes_first(self, deliverer, producer, app) -> None:
        deliverer.settings = deliverer.settings.replace(reconcile_settle_s=30)
        deliverer.judge.settings = deliverer.settings
        job_id = email(producer)
        app.send_mode = "drop_after"
        assert run(deliverer, job_id).delay_s == 30
        first = run(deliverer, job_id)  # due early (the test forces it): waits the rest
        assert first.state == "retry" and 25 < first.delay_s <= 30
        assert app.listings == 0

    def test_an_sms_is_found_as_customer_ios_twilio_delivery(
        self, deliverer, producer, app
    ) -> None:
        job_id = producer.enqueue_send_sms(7, identifiers={"id": "u1"}, to="+15555550100")
        app.send_mode = "drop_after"
        assert run(deliverer, job_id).state == "retry"
        app.send_mode = "ok"
        assert run(deliverer, job_id).state == "delivered"
        assert app.sends == 1 and app.deliveries[0]["type"] == "twilio"

    def test_a_broadcast_trigger_is_found(self, deliverer, producer, app, redis_client) -> None:
        job_id = producer.enqueue_broadcast(12, data={"sale": "on"})
        app.send_mode = "drop_after"
        assert run(deliverer, job_id).state == "retry"
        app.send_mode = "ok"
        assert run(deliverer, job_id).state == "delivered"
        assert len(app.triggers) == 1
        receipt = ReceiptBook(redis_client).get(job_id)
        assert receipt is not None and receipt.remote_id == "100"
