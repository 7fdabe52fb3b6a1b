"""Ids are data, never path syntax: every id that goes into a URL path reaches Customer.io as
that very id, and no error message or dead letter carries a person's id.

`.` and `..` cannot be made literal in a path: httpx removes them as dot segments
(`/customers/victim/devices/..` is sent as `DELETE /customers/victim`, deleting the person), and
their percent-encoded forms are no cure, since RFC 3986 lets any proxy or router decode `%2E` to
`.` before it resolves dot segments. So they are refused at enqueue for the fields that are path
segments (validation.PATH_BOUND_FIELDS), and customerio/_http.py refuses to send any path httpx
would rewrite. Every other character is percent-encoded and arrives literally: checked here on the
wire (an httpx MockTransport records the URL the client emits) and by a real sandbox over
loopback (it logs the raw path it received and decodes the parameters once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

import fakeredis
import httpx
import pytest
import redis

from cio_worker.app_api import _requests as app_requests
from cio_worker.config import Settings
from cio_worker.customerio._http import CustomerIoClient
from cio_worker.customerio._operations import ROUTES, HttpOperation, build_operation, route_of
from cio_worker.dev import SandboxProcess
from cio_worker.errors import RejectedError, ServerError, ValidationError
from cio_worker.job import Job
from cio_worker.kinds import Kind
from cio_worker.limiter._limiter import Limiter
from cio_worker.produce._producer import Producer
from cio_worker.queue._deadletter import DeadLetterStore
from cio_worker.queue._leases import LeaseKeeper
from cio_worker.queue._ledger import JobLedger
from cio_worker.worker._deliverer import Deliverer

SETTINGS = Settings(
    site_id="site",
    track_api_key="tk",
    app_api_key="ak",
    pipelines_api_key="pk",
    batch=False,
    track_url="http://track.test",
    app_url="http://app.test",
    pipelines_url="http://cdp.test",
)
#: Ids with path syntax in them; each must arrive as one segment that decodes to itself.
LITERAL_IDS = [
    "a/b",
    "../victim",
    "./x",
    "...",
    "%2e",
    "%2E%2E",
    ".%2E",
    "?x=1",
    "a#frag",
    "john doe",
    " .. ",
    "żółć",
    "ü/🙂 x",
    "a\\b",
    "100%",
    "jane@example.com",
]
DOT_IDS = [".", ".."]

#: Every operation that puts a caller's id in a path: (name, the path-bound field, enqueue).
PersonCall = Callable[[Producer, str], str]
PERSON_PATHS: list[tuple[Kind, str, PersonCall]] = [
    (Kind.IDENTIFY, "/api/v1/customers/{id}", lambda p, v: p.enqueue_identify(v, {"a": "b"})),
    (Kind.TRACK, "/api/v1/customers/{id}/events", lambda p, v: p.enqueue_track(v, "e")),
    (Kind.PAGE, "/api/v1/customers/{id}/events", lambda p, v: p.enqueue_page(v, "https://x/")),
    (Kind.DELETE, "/api/v1/customers/{id}", lambda p, v: p.enqueue_delete(v)),
    (Kind.SUPPRESS, "/api/v1/customers/{id}/suppress", lambda p, v: p.enqueue_suppress(v)),
    (Kind.UNSUPPRESS, "/api/v1/customers/{id}/unsuppress", lambda p, v: p.enqueue_unsuppress(v)),
    (
        Kind.ADD_DEVICE,
        "/api/v1/customers/{id}/devices",
        lambda p, v: p.enqueue_add_device(v, "tok", "ios"),
    ),
    (
        Kind.REMOVE_DEVICE,
        "/api/v1/customers/{id}/devices/{token}",
        lambda p, v: p.enqueue_remove_device(v, "tok"),
    ),
]
DEVICE_CALLS: list[tuple[str, PersonCall]] = [
    ("add_device", lambda p, v: p.enqueue_add_device("u-1", v, "ios")),
    ("remove_device", lambda p, v: p.enqueue_remove_device("u-1", v)),
]


@pytest.fixture(params=[False, True], ids=["batch-off", "batch-on"])
def producer(request: pytest.FixtureRequest) -> Iterator[Producer]:
    """A producer over fakeredis; ids are refused whatever the mode (delivery decides the API)."""
    client = fakeredis.FakeRedis()
    yield Producer(SETTINGS.replace(batch=request.param), redis_client=client)
    client.close()


@pytest.fixture
def single() -> Iterator[Producer]:
    client = fakeredis.FakeRedis()
    yield Producer(SETTINGS, redis_client=client)
    client.close()


def stored(producer: Producer, job_id: str) -> Job:
    raw = producer.redis.hget(f"cio:job:{job_id}", "job")
    assert raw is not None
    return Job.from_json(raw)


def on_the_wire(op: HttpOperation) -> httpx.Request:
    """The request CustomerIoClient emits for `op` (recorded by a MockTransport)."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    client = CustomerIoClient(SETTINGS, transport=httpx.MockTransport(record))
    try:
        client.send(op)
    finally:
        client.close()
    (request,) = seen
    return request


def segments(request: httpx.Request) -> list[str]:
    return request.url.raw_path.decode("ascii").split("?")[0].split("/")


# -- the premise: what httpx does with dot segments --------------------------------------------


class TestHttpxDotSegments:
    """Pins the behaviour this module defends against (a newer httpx may differ; we do not)."""

    def test_httpx_removes_literal_dot_segments(self) -> None:
        """`/customers/victim/devices/..` is emitted as `/customers/victim`: another resource."""
        url = httpx.URL("http://track.test/api/v1/customers/victim/devices/..")
        assert url.raw_path == b"/api/v1/customers/victim"

    def test_httpx_keeps_percent_encoded_dots_as_sent(self) -> None:
        """`%2E%2E` is left alone by httpx; whether a server or proxy decodes it before resolving
        dot segments is outside our control (RFC 3986 §6.2.2.2 allows it), hence the refusal."""
        url = httpx.URL("http://track.test/api/v1/customers/victim/devices/%2E%2E")
        assert url.raw_path == b"/api/v1/customers/victim/devices/%2E%2E"


# -- refused at enqueue ---------------------------------------------------------------------------


class TestDotIdsAreRefused:
    @pytest.mark.parametrize("value", DOT_IDS)
    @pytest.mark.parametrize(("kind", "template", "call"), PERSON_PATHS)
    def test_person_id_dot_segments_are_refused(
        self, producer: Producer, kind: Kind, template: str, call: PersonCall, value: str
    ) -> None:
        """`.`/`..` as a person id: ValidationError naming user_id and the rule; nothing stored."""
        with pytest.raises(ValidationError) as caught:
            call(producer, value)
        assert caught.value.field == "user_id"
        assert "path segment" in caught.value.rule
        assert producer.redis.dbsize() == 0

    @pytest.mark.parametrize("value", DOT_IDS)
    @pytest.mark.parametrize(("name", "call"), DEVICE_CALLS)
    def test_device_token_dot_segments_are_refused(
        self, producer: Producer, name: str, call: PersonCall, value: str
    ) -> None:
        """A device token of `.`/`..` is refused (removing it later would need it in a path)."""
        with pytest.raises(ValidationError) as caught:
            call(producer, value)
        assert caught.value.field == "device_id"

    def test_the_reported_attack_is_refused(self, producer: Producer) -> None:
        """The issue's reproduction: remove_device("victim", "..") would delete the person."""
        with pytest.raises(ValidationError, match=r"device_id: must not be '\.\.'"):
            producer.enqueue_remove_device("victim", "..")
        with pytest.raises(ValidationError, match=r"user_id: must not be '\.\.'"):
            producer.enqueue_track("..", "e")

    @pytest.mark.parametrize("value", DOT_IDS)
    def test_app_reads_refuse_dot_segments(self, value: str) -> None:
        """The App reads that put an id in a path refuse `.`/`..` too."""
        with pytest.raises(ValidationError) as person:
            app_requests.person_request(value)
        assert person.value.field == "person_id"
        with pytest.raises(ValidationError) as delivery:
            app_requests.delivery_request(value)
        assert delivery.value.field == "delivery_id"

    @pytest.mark.parametrize("value", DOT_IDS)
    def test_body_only_ids_may_be_dots(self, single: Producer, value: str) -> None:
        """Ids that only travel in bodies are data there: an anonymous id or a merge id of `.`."""
        job = stored(single, single.enqueue_track_anonymous(value, "e"))
        op = build_operation(job, SETTINGS)
        assert op.path == "/api/v1/events" and op.json is not None
        assert op.json["anonymous_id"] == value
        merge = stored(single, single.enqueue_merge({"id": value}, "u-2"))
        assert build_operation(merge, SETTINGS).json == {
            "primary": {"id": value},
            "secondary": {"id": "u-2"},
        }


# -- everything else arrives literally -----------------------------------------------------------


class TestIdsArriveLiterally:
    @pytest.mark.parametrize("value", LITERAL_IDS)
    @pytest.mark.parametrize(("kind", "template", "call"), PERSON_PATHS)
    def test_person_id_is_one_literal_segment_on_the_wire(
        self, single: Producer, kind: Kind, template: str, call: PersonCall, value: str
    ) -> None:
        """The URL the client emits has the template's shape, and the id segment decodes (once)
        to exactly the id: no `/`, `?`, `#`, dot or `%` in it is read as syntax."""
        job = stored(single, call(single, value))
        request = on_the_wire(build_operation(job, SETTINGS))
        parts = segments(request)
        assert len(parts) == len(template.split("/"))
        assert unquote(parts[4]) == value
        assert request.url.query == b""
        assert route_of(request.url.raw_path.decode("ascii")) == template

    @pytest.mark.parametrize("value", LITERAL_IDS)
    def test_device_token_is_one_literal_segment_on_the_wire(
        self, single: Producer, value: str
    ) -> None:
        """remove_device: person id and device token each decode to themselves."""
        job = stored(single, single.enqueue_remove_device(value, value))
        parts = segments(on_the_wire(build_operation(job, SETTINGS)))
        assert len(parts) == 7
        assert (unquote(parts[4]), parts[5], unquote(parts[6])) == (value, "devices", value)

    @pytest.mark.parametrize("value", LITERAL_IDS)
    def test_app_read_paths_carry_the_literal_id(self, value: str) -> None:
        """person_request / delivery_request: the id is one segment, the query stays a query."""
        person = on_the_wire(app_requests.person_request(value, "email").operation())
        parts = segments(person)
        assert (len(parts), unquote(parts[3]), parts[4]) == (5, value, "attributes")
        assert person.url.params["id_type"] == "email"
        delivery = on_the_wire(app_requests.delivery_request(value).operation())
        assert unquote(segments(delivery)[3]) == value

    def test_broadcast_path_takes_only_the_int_id(self, single: Producer) -> None:
        """A broadcast id is a positive int: the only path segment it can make is its digits."""
        for bad in ("..", "9/../1", 0, True):
            with pytest.raises(ValidationError):
                single.enqueue_broadcast(bad)  # type: ignore[arg-type]
        job = stored(single, single.enqueue_broadcast(9))
        assert segments(on_the_wire(build_operation(job, SETTINGS))) == [
            "",
            "v1",
            "campaigns",
            "9",
            "triggers",
        ]


class TestTheClientRefusesRewrittenPaths:
    """A job stored before the enqueue rule (or any other way to a dot segment) is never sent."""

    @pytest.mark.parametrize(
        "path",
        [
            "/api/v1/customers/victim/devices/..",
            "/api/v1/customers/..",
            "/api/v1/customers/./events",
            "/api/v1/customers/../events",
        ],
    )
    def test_dot_segment_paths_are_dead_lettered_unsent(self, path: str) -> None:
        seen: list[httpx.Request] = []
        client = CustomerIoClient(
            SETTINGS, transport=httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200))
        )
        with pytest.raises(RejectedError) as caught:
            client.send(HttpOperation("track", "track", "DELETE", path), job_id="j1")
        client.close()
        assert seen == []
        assert "not sent" in str(caught.value) and "victim" not in str(caught.value)

    def test_a_stored_dot_job_is_dead_lettered_not_sent(self, redis_client: redis.Redis) -> None:
        """End to end: a remove_device job for token `..` written before the rule existed is
        dead-lettered by the worker, and the person it would have deleted is untouched."""
        seen: list[httpx.Request] = []
        s = SETTINGS.replace(redis_url="redis://unused")
        ledger = JobLedger(redis_client)
        job = Job(
            id="01ARZ3NDEKTSV4RRFFQ69G5FAV",
            kind=Kind.REMOVE_DEVICE,
            payload={"user_id": "victim", "device_id": ".."},
            created_at=0.0,
        )
        ledger.enqueue(job)
        deliverer = Deliverer(
            settings=s,
            ledger=ledger,
            dead_letters=DeadLetterStore(redis_client),
            limiter=Limiter(s, redis_client, sleep=lambda _: None),
            client=CustomerIoClient(
                s, transport=httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200))
            ),
            leases=LeaseKeeper(ledger, "paths"),
        )
        assert deliverer.run(job.id, job.kind).state == "dead"
        assert seen == []
        letter = DeadLetterStore(redis_client).get(job.id)
        assert letter is not None
        assert "/api/v1/customers/{id}/devices/{token}" in letter.reason
        assert "victim" not in letter.reason


# -- no person's id in an error message or a dead letter ----------------------------------------


class TestErrorsNameTheRoute:
    @pytest.mark.parametrize(
        ("status", "error"), [(422, RejectedError), (400, RejectedError), (500, ServerError)]
    )
    def test_error_messages_carry_the_route_template(
        self, single: Producer, status: int, error: type[Exception]
    ) -> None:
        """`422 from PUT track:/api/v1/customers/{id}`, never the person's id or email."""
        job = stored(single, single.enqueue_identify("pii-path@example.com", {"a": "b"}))
        client = CustomerIoClient(
            SETTINGS, transport=httpx.MockTransport(lambda _: httpx.Response(status, json={}))
        )
        with pytest.raises(error) as caught:
            client.send(build_operation(job, SETTINGS), job_id=job.id)
        client.close()
        text = str(caught.value)
        assert f"{status} from PUT track:/api/v1/customers/{{id}}" in text
        assert "pii-path" not in text and "example.com" not in text

    def test_the_dead_letter_reason_has_no_person_id(self, redis_client: redis.Redis) -> None:
        """A 422 dead-letters with the route in its reason (also what the error log prints)."""
        s = SETTINGS.replace(redis_url="redis://unused")
        producer = Producer(s, redis_client=redis_client)
        job_id = producer.enqueue_remove_device("pii-path@example.com", "device-secret-token")
        ledger = JobLedger(redis_client)
        deliverer = Deliverer(
            settings=s,
            ledger=ledger,
            dead_letters=DeadLetterStore(redis_client),
            limiter=Limiter(s, redis_client, sleep=lambda _: None),
            client=CustomerIoClient(
                s, transport=httpx.MockTransport(lambda _: httpx.Response(422, text="bad"))
            ),
            leases=LeaseKeeper(ledger, "paths"),
        )
        assert deliverer.run(job_id, Kind.REMOVE_DEVICE).state == "dead"
        letter = DeadLetterStore(redis_client).get(job_id)
        assert letter is not None
        assert "422 from DELETE track:/api/v1/customers/{id}/devices/{token}" in letter.reason
        for secret in ("pii-path", "example.com", "device-secret-token", "%40"):
            assert secret not in letter.reason
            assert secret not in str(letter.last_error)

    @pytest.mark.parametrize(
        ("path", "route"),
        [
            ("/api/v1/customers/events", "/api/v1/customers/{id}"),
            ("/api/v1/customers/merge_customers/events", "/api/v1/customers/{id}/events"),
            ("/v1/customers/a%40b/attributes?id_type=email", "/v1/customers/{id}/attributes"),
            ("/v1/messages/dlv-1", "/v1/messages/{delivery_id}"),
            ("/v1/customers?limit=10", "/v1/customers"),
            ("/v1/unknown/jane/customers", "/v1/{?}/{?}/customers"),
        ],
    )
    def test_route_of(self, path: str, route: str) -> None:
        """Literal routes win over templated ones; an unknown path keeps only known words."""
        assert route_of(path) == route

    def test_every_route_is_its_own_route(self) -> None:
        for template in ROUTES:
            assert route_of(template) == template


# -- a real server over loopback -------------------------------------------------------------------


@pytest.mark.integration
def test_the_sandbox_receives_each_id_literally() -> None:
    """Over loopback to the sandbox: each awkward id arrives as one raw segment, the sandbox
    decodes it once back to the id, and answers as for any person (200, not 404)."""
    with SandboxProcess() as sandbox:
        s = Settings.from_env({"CIO_WORKER_SANDBOX_URL": sandbox.url, "CIO_WORKER_BATCH": "off"})
        client = CustomerIoClient(s)
        try:
            sent: list[tuple[str, str]] = []
            for value in LITERAL_IDS:
                job = Job(
                    id="01ARZ3NDEKTSV4RRFFQ69G5FAV",
                    kind=Kind.REMOVE_DEVICE,
                    payload={"user_id": value, "device_id": value},
                    created_at=0.0,
                )
                op = build_operation(job, s)
                assert client.send(op).status_code == 200, value
                sent.append((value, op.path))
            with pytest.raises(RejectedError):
                client.send(HttpOperation("track", "track", "DELETE", "/api/v1/customers/v/.."))
            records: list[dict[str, Any]] = httpx.get(f"{sandbox.url}/_sandbox/requests").json()
        finally:
            client.close()
    assert [(r["method"], r["path"]) for r in records] == [("DELETE", p) for _, p in sent]
    for record, (value, _) in zip(records, sent, strict=True):
        parts = record["path"].split("/")
        assert (unquote(parts[4]), unquote(parts[6])) == (value, value)
        assert record["status"] == 200
