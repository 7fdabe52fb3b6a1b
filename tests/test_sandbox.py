"""Tests for the sandbox: a local stand-in for Customer.io's Track, App and Pipelines APIs."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from cio_worker.cli import _main as cli
from cio_worker.config import (
    SANDBOX_APP_API_KEY,
    SANDBOX_PIPELINES_API_KEY,
    SANDBOX_SITE_ID,
    SANDBOX_TRACK_API_KEY,
)
from cio_worker.dev import SandboxProcess
from cio_worker.errors import ConfigError
from cio_worker.sandbox import SandboxConfig, checks_track, create_app, run_sandbox
from cio_worker.sandbox import server as sandbox_server
from cio_worker.sandbox.checks import Incoming, json_longer_than
from cio_worker.sandbox.faults import (
    FaultSpecError,
    InjectedDropError,
    parse_fault,
    quiet_dropped_connections,
)
from cio_worker.sandbox.limits import RollingWindow
from cio_worker.sandbox.recorder import max_in_window

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its test client and warns when it falls back to httpx.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TRACK = (SANDBOX_SITE_ID, SANDBOX_TRACK_API_KEY)
PIPELINES = (SANDBOX_PIPELINES_API_KEY, "")
APP = {"Authorization": f"Bearer {SANDBOX_APP_API_KEY}"}
STRICT = {"X-Strict-Mode": "1"}
ULID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"

RATE_LIMITED = {"meta": {"error": "rate limit exceeded"}}
UNAUTHORIZED = {"meta": {"error": "Unauthorized request"}}


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(clock: FakeClock) -> Iterator[Callable[..., TestClient]]:
    """Build TestClients on sandboxes with the fake clock and the given config; close them all."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        test_client = TestClient(create_app(SandboxConfig(clock=clock, **overrides)))
        clients.append(test_client)
        return test_client

    yield make
    for test_client in clients:
        test_client.close()


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def records(test_client: TestClient, **query: Any) -> list[dict[str, Any]]:
    response = test_client.get("/_sandbox/requests", params=query)
    assert response.status_code == 200
    result: list[dict[str, Any]] = response.json()
    return result


def last_record(test_client: TestClient) -> dict[str, Any]:
    return records(test_client)[-1]


def stats(test_client: TestClient) -> dict[str, Any]:
    result: dict[str, Any] = test_client.get("/_sandbox/stats").json()
    return result


def identify(test_client: TestClient, person: str = "u1", **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("auth", TRACK)
    kwargs.setdefault("json", {"email": "a@example.com"})
    return test_client.put(f"/api/v1/customers/{person}", **kwargs)


def set_fault(test_client: TestClient, spec: dict[str, Any]) -> None:
    response = test_client.post("/_sandbox/faults", json=spec)
    assert response.status_code == 200, response.text


def person_op(action: str = "identify", **fields: Any) -> dict[str, Any]:
    return {"type": "person", "action": action, "identifiers": {"id": "u1"}, **fields}


def email(**fields: Any) -> dict[str, Any]:
    return {
        "transactional_message_id": 3,
        "identifiers": {"id": "u1"},
        "to": "a@example.com",
        **fields,
    }


class TestPublicApi:
    def test_all_is_sorted_and_complete(self) -> None:
        """The package exports exactly SandboxConfig, create_app and run_sandbox, sorted."""
        import cio_worker.sandbox as package

        assert package.__all__ == sorted(package.__all__)
        assert set(package.__all__) == {"SandboxConfig", "create_app", "run_sandbox"}


class TestSandboxConfig:
    def test_defaults_use_the_shared_sandbox_credentials(self) -> None:
        """Default credentials are the SANDBOX_* constants from cio_worker.config."""
        config = SandboxConfig()
        assert (config.site_id, config.track_api_key) == TRACK
        assert config.app_api_key == SANDBOX_APP_API_KEY
        assert config.pipelines_api_key == SANDBOX_PIPELINES_API_KEY

    def test_repr_hides_keys_and_clock(self) -> None:
        """No API key and no clock appear in the repr."""
        text = repr(SandboxConfig())
        assert SANDBOX_TRACK_API_KEY not in text
        assert SANDBOX_APP_API_KEY not in text
        assert SANDBOX_PIPELINES_API_KEY not in text
        assert "clock" not in text

    def test_clock_is_not_compared(self) -> None:
        """Two configs differing only in their clock are equal."""
        assert SandboxConfig(clock=FakeClock()) == SandboxConfig()

    @pytest.mark.parametrize(
        "field", ["track_rps", "pipelines_rps", "app_rps", "transactional_rps"]
    )
    def test_rps_below_one_is_rejected(self, field: str) -> None:
        """A limit under 1/s could never admit anything, so it is a ConfigError naming the field."""
        with pytest.raises(ConfigError, match=field):
            SandboxConfig(**{field: 0.5})

    def test_broadcast_interval_must_be_positive(self) -> None:
        """A zero broadcast interval is a ConfigError."""
        with pytest.raises(ConfigError, match="broadcast_interval_s"):
            SandboxConfig(broadcast_interval_s=0)


class TestAuth:
    CALLS: dict[str, tuple[str, str, Any]] = {
        "track_v1": ("PUT", "/api/v1/customers/u1", {"email": "a@example.com"}),
        "track_v2": ("POST", "/api/v2/entity", person_op()),
        "app": ("POST", "/v1/send/email", email()),
    }

    def _send(self, client: TestClient, api: str, how: str) -> httpx.Response:
        method, path, body = self.CALLS[api]
        if how == "missing":
            return client.request(method, path, json=body)
        if api == "app":
            key = SANDBOX_APP_API_KEY if how == "ok" else "wrong"
            return client.request(
                method, path, json=body, headers={"Authorization": f"Bearer {key}"}
            )
        auth = TRACK if how == "ok" else (SANDBOX_SITE_ID, "wrong")
        return client.request(method, path, json=body, auth=auth)

    @pytest.mark.parametrize("api", ["track_v1", "track_v2", "app"])
    def test_good_credentials_pass(self, client: TestClient, api: str) -> None:
        """Correct credentials are answered 200 and recorded as auth ok."""
        assert self._send(client, api, "ok").status_code == 200
        assert last_record(client)["auth"] == "ok"

    @pytest.mark.parametrize("api", ["track_v1", "track_v2", "app"])
    @pytest.mark.parametrize("how", ["bad", "missing"])
    def test_wrong_or_missing_credentials_are_401(
        self, client: TestClient, api: str, how: str
    ) -> None:
        """Wrong or missing credentials answer 401 in the meta error shape, recorded as such."""
        response = self._send(client, api, how)
        assert response.status_code == 401
        assert response.json() == UNAUTHORIZED
        assert last_record(client)["auth"] == how

    def test_track_key_does_not_open_the_app_api(self, client: TestClient) -> None:
        """Each API checks its own key: the Track key as a Bearer token is refused."""
        headers = {"Authorization": f"Bearer {SANDBOX_TRACK_API_KEY}"}
        assert client.post("/v1/send/sms", json=email(), headers=headers).status_code == 401

    def test_basic_with_the_wrong_scheme_is_bad(self, client: TestClient) -> None:
        """A Bearer header on a Track endpoint is bad credentials, not missing ones."""
        response = identify(client, auth=None, headers=APP)
        assert response.status_code == 401
        assert last_record(client)["auth"] == "bad"

    def test_garbage_basic_header_is_bad(self, client: TestClient) -> None:
        """An undecodable Basic header is refused."""
        response = identify(client, auth=None, headers={"Authorization": "Basic !!!"})
        assert response.status_code == 401

    def test_region_lookup_needs_track_credentials(self, client: TestClient) -> None:
        """GET /api/v1/accounts/region answers this server's URL with Track credentials only."""
        assert client.get("/api/v1/accounts/region").status_code == 401
        response = client.get("/api/v1/accounts/region", auth=TRACK)
        assert response.json() == {"url": "http://testserver", "region": "us", "environment_id": 1}

    @pytest.mark.parametrize(
        ("auth", "recorded"),
        [(PIPELINES, "ok"), ((SANDBOX_PIPELINES_API_KEY, "pw"), "bad"), (None, "missing")],
    )
    def test_pipelines_strict_answers_401(
        self, client: TestClient, auth: tuple[str, str] | None, recorded: str
    ) -> None:
        """With X-Strict-Mode: 1, Pipelines needs `key:` exactly and answers 401 {"error"}."""
        response = client.post("/v1/identify", json={"userId": "u1"}, auth=auth, headers=STRICT)
        if recorded == "ok":
            assert response.status_code == 200
        else:
            assert response.status_code == 401
            assert set(response.json()) == {"error"}
        assert last_record(client)["auth"] == recorded

    def test_pipelines_lenient_accepts_bad_credentials_and_drops(self, client: TestClient) -> None:
        """Without strict mode, bad Pipelines credentials get 200 and are recorded as dropped."""
        response = client.post("/v1/identify", json={"userId": "u1"}, auth=("nope", ""))
        assert response.status_code == 200
        record = last_record(client)
        assert (record["auth"], record["dropped"], record["accepted"]) == ("bad", True, False)

    def test_no_key_is_ever_recorded(self, client: TestClient) -> None:
        """Records hold neither the Authorization header nor any key."""
        identify(client)
        client.post("/v1/send/push", json=email(), headers=APP)
        client.post("/v1/track", json={"userId": "u", "event": "e"}, auth=PIPELINES)
        text = json.dumps(records(client))
        for secret in (SANDBOX_TRACK_API_KEY, SANDBOX_APP_API_KEY, SANDBOX_PIPELINES_API_KEY):
            assert secret not in text
        assert "authorization" not in text.lower()


class TestTrackV1:
    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [
            ("PUT", "/api/v1/customers/u1", {"email": "a@example.com", "plan": "pro"}),
            ("DELETE", "/api/v1/customers/u1", None),
            ("POST", "/api/v1/customers/u1/events", {"name": "paid", "data": {"x": 1}}),
            ("POST", "/api/v1/events", {"name": "viewed", "anonymous_id": "anon-1"}),
            ("PUT", "/api/v1/customers/u1/devices", {"device": {"id": "tok", "platform": "ios"}}),
            ("DELETE", "/api/v1/customers/u1/devices/tok", None),
            ("POST", "/api/v1/customers/u1/suppress", None),
            ("POST", "/api/v1/customers/u1/unsuppress", None),
            (
                "POST",
                "/api/v1/merge_customers",
                {"primary": {"id": "a"}, "secondary": {"email": "b@x"}},
            ),
        ],
    )
    def test_happy_paths_answer_empty_object(
        self, client: TestClient, method: str, path: str, body: Any
    ) -> None:
        """Every Track v1 endpoint answers 200 {} to a valid call and records it as accepted."""
        response = client.request(method, path, json=body, auth=TRACK)
        assert response.status_code == 200, response.text
        assert response.json() == {}
        record = last_record(client)
        assert (record["api"], record["family"], record["accepted"]) == ("track_v1", "track", True)
        assert record["body"] == body

    def test_event_with_ulid_and_integer_timestamp(self, client: TestClient) -> None:
        """A ULID `id`, integer `timestamp` and `type` page are accepted."""
        body = {"name": "https://x/y", "type": "page", "id": ULID, "timestamp": 1700000000}
        response = client.post("/api/v1/customers/u1/events", json=body, auth=TRACK)
        assert response.status_code == 200

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "name"),
            ({"name": ""}, "name"),
            ({"name": "x" * 101}, "name"),
            ({"name": "e", "data": []}, "data"),
            ({"name": "e", "data": {"blob": "x" * 100_000}}, "data"),
            ({"name": "e", "id": "not-a-ulid"}, "id"),
            ({"name": "e", "id": ULID.lower()}, "id"),
            ({"name": "e", "id": "01ARZ3NDEKTSV4RRFFQ69G5FAU"}, "id"),
            ({"name": "e", "timestamp": "1700000000"}, "timestamp"),
            ({"name": "e", "timestamp": 1700000000.5}, "timestamp"),
            ({"name": "e", "timestamp": True}, "timestamp"),
            ({"name": "e", "type": "click"}, "type"),
        ],
    )
    def test_bad_events_are_400_naming_the_field(
        self, client: TestClient, body: dict[str, Any], field: str
    ) -> None:
        """Bad event name, data, id, timestamp or type answers 400 naming the field."""
        response = client.post("/api/v1/customers/u1/events", json=body, auth=TRACK)
        assert response.status_code == 400
        assert field in response.json()["meta"]["error"]

    def test_anonymous_event_checks_apply(self, client: TestClient) -> None:
        """Anonymous events follow the same rules, plus a non-empty anonymous_id if present."""
        bad = client.post("/api/v1/events", json={"name": "e", "anonymous_id": ""}, auth=TRACK)
        assert bad.status_code == 400
        assert "anonymous_id" in bad.json()["meta"]["error"]
        missing = client.post("/api/v1/events", json={"data": {}}, auth=TRACK)
        assert "name" in missing.json()["meta"]["error"]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({f"a{i}": i for i in range(301)}, "300"),
            ({"n" * 151: 1}, "n" * 151),
            ({"bio": "x" * 1001}, "bio"),
            ({"tags": ["x" * 500, "y" * 500]}, "tags"),
        ],
    )
    def test_bad_identify_is_400(
        self, client: TestClient, body: dict[str, Any], field: str
    ) -> None:
        """Identify allows 300 attributes, 150-byte names and 1000-byte values (JSON-encoded)."""
        response = identify(client, json=body)
        assert response.status_code == 400
        assert field in response.json()["meta"]["error"]

    def test_identify_limits_are_inclusive(self, client: TestClient) -> None:
        """Exactly 300 attributes, a 150-byte name and a 1000-byte value are fine."""
        body: dict[str, Any] = {f"a{i}": i for i in range(298)}
        body["n" * 150] = 1
        body["bio"] = "é" * 500  # 1000 bytes in UTF-8
        assert identify(client, json=body).status_code == 200

    @pytest.mark.parametrize(
        ("content", "reason"),
        [(b"[1, 2]", "JSON object"), (b"{not json", "invalid JSON"), (b"", "missing")],
    )
    def test_identify_needs_a_json_object(
        self, client: TestClient, content: bytes, reason: str
    ) -> None:
        """A body that is not a JSON object answers 400 saying so."""
        response = client.put(
            "/api/v1/customers/u1",
            content=content,
            auth=TRACK,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400
        assert reason in response.json()["meta"]["error"]
        expected_body = [1, 2] if content == b"[1, 2]" else None
        assert last_record(client)["body"] == expected_body

    @pytest.mark.parametrize(
        "body",
        [{}, {"device": {"platform": "ios"}}, {"device": {"id": "t", "platform": "windows"}}],
    )
    def test_bad_devices_are_400(self, client: TestClient, body: dict[str, Any]) -> None:
        """A device needs an id and platform ios or android."""
        response = client.put("/api/v1/customers/u1/devices", json=body, auth=TRACK)
        assert response.status_code == 400
        assert "device" in response.json()["meta"]["error"]

    @pytest.mark.parametrize(
        "body",
        [
            {"primary": {"id": "a"}},
            {"primary": {"id": "a", "email": "a@x"}, "secondary": {"id": "b"}},
            {"primary": {"phone": "+1"}, "secondary": {"id": "b"}},
            {"primary": "a", "secondary": {"id": "b"}},
        ],
    )
    def test_bad_merges_are_400(self, client: TestClient, body: dict[str, Any]) -> None:
        """primary and secondary each need exactly one of id, email, cio_id."""
        response = client.post("/api/v1/merge_customers", json=body, auth=TRACK)
        assert response.status_code == 400
        error = response.json()["meta"]["error"]
        assert "primary" in error or "secondary" in error

    def test_person_id_over_150_bytes_is_400(self, client: TestClient) -> None:
        """A path id longer than 150 bytes (after decoding) is refused."""
        assert identify(client, person="x" * 150).status_code == 200
        response = client.post(f"/api/v1/customers/{'é' * 76}/suppress", auth=TRACK)
        assert response.status_code == 400
        assert "150" in response.json()["meta"]["error"]

    def test_unknown_path_is_404_and_recorded(self, client: TestClient) -> None:
        """An unknown path answers 404 in the meta shape and is still recorded."""
        response = client.post("/api/v1/nope", json={}, auth=TRACK)
        assert response.status_code == 404
        assert "error" in response.json()["meta"]
        record = last_record(client)
        assert (record["status"], record["api"], record["path"]) == (404, None, "/api/v1/nope")

    def test_wrong_method_is_405(self, client: TestClient) -> None:
        """A known path with the wrong method answers 405 with Allow."""
        response = client.get("/api/v1/customers/u1", auth=TRACK)
        assert response.status_code == 405
        assert set(response.headers["allow"].split(", ")) == {"PUT", "DELETE"}


class TestPercentEncodedIds:
    def test_slash_in_id_stays_one_segment(self, client: TestClient) -> None:
        """`user%2F1` is one id: recorded raw in path and decoded in path_id."""
        assert identify(client, person="user%2F1").status_code == 200
        record = last_record(client)
        assert record["path"] == "/api/v1/customers/user%2F1"
        assert record["path_id"] == "user/1"
        assert record["endpoint"] == "identify"

    def test_encoded_slash_does_not_reach_another_endpoint(self, client: TestClient) -> None:
        """`a%2Fevents` is an identify of person "a/events", not an event for "a"."""
        identify(client, person="a%2Fevents")
        assert last_record(client)["endpoint"] == "identify"
        assert last_record(client)["path_id"] == "a/events"

    def test_email_and_unicode_ids_are_decoded(self, client: TestClient) -> None:
        """Encoded emails and UTF-8 ids decode to the original text."""
        identify(client, person="a%40example.com")
        assert last_record(client)["path_id"] == "a@example.com"
        client.delete("/api/v1/customers/J%C3%BCrgen/devices/tok%2B1", auth=TRACK)
        assert last_record(client)["path_id"] == "Jürgen"

    def test_broadcast_id_is_the_path_id(self, client: TestClient) -> None:
        """Broadcast triggers record the broadcast id as path_id."""
        client.post("/v1/campaigns/42/triggers", json={}, headers=APP)
        assert last_record(client)["path_id"] == "42"


class TestTrackV2:
    @pytest.mark.parametrize(
        "operation",
        [
            person_op(attributes={"plan": "pro"}),
            person_op("event", name="paid", id=ULID, timestamp=1, attributes={"x": 1}),
            person_op("page", name="https://x"),
            person_op("delete"),
            person_op("add_device", device={"token": "t", "platform": "android"}),
            person_op("delete_device", device={"token": "t"}),
            person_op("add_relationships", cio_relationships=[]),
            person_op("suppress"),
            {"type": "person", "action": "merge", "primary": {"id": "a"}, "secondary": {"id": "b"}},
            {"type": "person", "action": "identify", "identifiers": {"phone": "+15555550100"}},
            {
                "type": "object",
                "action": "identify",
                "identifiers": {"object_type_id": "1", "object_id": "acme"},
            },
            {"type": "object", "action": "delete", "identifiers": {"cio_object_id": "ob1"}},
            {"type": "delivery", "action": "event", "identifiers": {"id": "d1"}, "name": "opened"},
        ],
    )
    def test_valid_entity_operations_answer_200(
        self, client: TestClient, operation: dict[str, Any]
    ) -> None:
        """Each valid v2 operation answers 200 {} on /api/v2/entity."""
        response = client.post("/api/v2/entity", json=operation, auth=TRACK)
        assert response.status_code == 200, response.text
        assert response.json() == {}
        assert last_record(client)["api"] == "track_v2"

    @pytest.mark.parametrize(
        ("operation", "field"),
        [
            ({"action": "identify", "identifiers": {"id": "u"}}, "type"),
            ({"type": "person", "identifiers": {"id": "u"}}, "action"),
            ({"type": "person", "action": "fly", "identifiers": {"id": "u"}}, "action"),
            ({"type": "person", "action": "identify"}, "identifiers"),
            (
                {"type": "person", "action": "identify", "identifiers": {"id": "u", "email": "e"}},
                "identifiers",
            ),
            (
                {"type": "person", "action": "identify", "identifiers": {"id": "x" * 151}},
                "identifiers.id",
            ),
            (person_op("event"), "name"),
            (person_op("event", name="e", timestamp="1"), "timestamp"),
            (person_op("add_device", device={"token": "t"}), "device.platform"),
            (person_op("identify", attributes={"v": "x" * 1001}), "attributes.v"),
            ({"type": "person", "action": "merge", "primary": {"id": "a"}}, "secondary"),
            (
                {"type": "object", "action": "identify", "identifiers": {"object_id": "a"}},
                "identifiers",
            ),
        ],
    )
    def test_bad_entity_is_400_with_v2_errors(
        self, client: TestClient, operation: dict[str, Any], field: str
    ) -> None:
        """A bad entity operation answers 400 {"errors": [{reason, field, message}]}."""
        response = client.post("/api/v2/entity", json=operation, auth=TRACK)
        assert response.status_code == 400
        errors = response.json()["errors"]
        assert set(errors[0]) == {"reason", "field", "message"}
        assert field in [error["field"] for error in errors]

    def test_entity_over_32_kb_is_413(self, client: TestClient) -> None:
        """An entity request over 32 KB answers 413."""
        operation = person_op(attributes={f"a{i}": "x" * 900 for i in range(40)})
        response = client.post("/api/v2/entity", json=operation, auth=TRACK)
        assert response.status_code == 413
        assert response.json()["errors"][0]["reason"] == "too_large"

    def test_batch_of_good_operations_is_200(self, client: TestClient) -> None:
        """A batch whose operations are all valid answers 200 {}."""
        batch = [person_op(), person_op("event", name="e"), person_op("suppress")]
        response = client.post("/api/v2/batch", json={"batch": batch}, auth=TRACK)
        assert (response.status_code, response.json()) == (200, {})

    def test_batch_with_some_bad_operations_is_207(self, client: TestClient) -> None:
        """Bad operations are listed by batch_index with a 207; the rest are accepted."""
        big = person_op(attributes={f"a{i}": "x" * 900 for i in range(40)})
        batch = [person_op(), person_op("event"), person_op(), big, "nope"]
        response = client.post("/api/v2/batch", json={"batch": batch}, auth=TRACK)
        assert response.status_code == 207
        errors = response.json()["errors"]
        assert [error["batch_index"] for error in errors] == [1, 3, 4]
        assert set(errors[0]) == {"batch_index", "reason", "field", "message"}
        assert errors[0]["field"] == "name"
        assert errors[1]["reason"] == "too_large"

    @pytest.mark.parametrize("body", [{}, {"batch": []}, {"batch": {}}, [person_op()]])
    def test_batch_without_an_array_is_400(self, client: TestClient, body: Any) -> None:
        """A batch request needs a non-empty `batch` array: whole-request 400, v2 shape."""
        response = client.post("/api/v2/batch", json=body, auth=TRACK)
        assert response.status_code == 400
        assert set(response.json()["errors"][0]) == {"reason", "field", "message"}

    def test_batch_of_500_kb_is_413(self, client: TestClient) -> None:
        """A batch request of 500 KB or more answers 413."""
        operation = person_op(attributes={f"a{i}": "x" * 900 for i in range(30)})
        batch = [operation] * 20
        assert len(json.dumps({"batch": batch})) >= 500 * 1024
        response = client.post("/api/v2/batch", json={"batch": batch}, auth=TRACK)
        assert response.status_code == 413
        assert response.json()["errors"][0]["reason"] == "too_large"

    def test_a_batch_of_events_is_checked_as_each_operation_alone(self) -> None:
        """`check_batch` settles ordinary events quickly; on every edge (lengths in bytes that
        characters cannot tell, an int id, an id ending in a newline, a bool timestamp, floats
        that Python writes longer) it finds exactly what the per-operation checks find."""
        event = person_op("event", name="Viewed Page", id=ULID, attributes={"n": 1}, timestamp=1)
        variants: list[object] = [event, "nope", [event], {**event, "type": "object"}]
        for action in ("page", "screen", "identify", ["event"], None):
            variants.append({**event, "action": action})
        for name, value in [
            ("id", "u" * 37), ("id", "u" * 38), ("id", "u" * 150), ("id", "u" * 151),
            ("id", "\u20ac" * 50), ("id", "\u20ac" * 51), ("id", 42), ("id", True), ("id", ""),
            ("email", "a@b.co"), ("phone", "+15551234"), ("cio_id", "a1"), ("foo", "u1"),
        ]:  # fmt: skip
            variants.append({**event, "identifiers": {name: value}})
        variants.append({**event, "identifiers": {"id": "u1", "email": "a@b.co"}})
        for title in ["e" * 25, "e" * 26, "e" * 100, "e" * 101, "\u20ac" * 34, "", 7]:
            variants.append({**event, "name": title})
        for event_id in [ULID.lower(), ULID[:25], ULID + "\n", "I" + ULID[1:], 5]:
            variants.append({**event, "id": event_id})
        for stamp in [True, 1.5, "1", None, 2**70]:
            variants.append({**event, "timestamp": stamp})
        for attributes in [[], None, {"f": 1e300}, {"f": [1e22] * 900}, {"s": "x" * 33_000}]:
            variants.append({**event, "attributes": attributes})
        variants += [{k: v for k, v in event.items() if k != drop} for drop in event]
        config = SandboxConfig()
        found = checks_track.check_batch(Incoming({"batch": variants}, None, 1000, {}, config))
        expected = []
        for index, operation in enumerate(variants):
            if json_longer_than(operation, checks_track.MAX_OPERATION_BYTES):
                expected.append((index, "", "too_large"))
                continue
            for problem in checks_track.check_operation(operation):
                expected.append((index, problem.field, problem.reason))
        assert [(p.index, p.field, p.reason) for p in found] == expected
        assert 0 < len(expected) < len(variants)


class TestAppApi:
    @pytest.mark.parametrize("channel", ["email", "push", "sms"])
    def test_send_answers_a_unique_delivery(self, client: TestClient, channel: str) -> None:
        """Each send answers 200 with a fresh delivery_id and an integer queued_at."""
        first = client.post(f"/v1/send/{channel}", json=email(), headers=APP).json()
        second = client.post(f"/v1/send/{channel}", json=email(), headers=APP).json()
        assert isinstance(first["delivery_id"], str)
        assert first["delivery_id"] != second["delivery_id"]
        assert isinstance(first["queued_at"], int)
        assert abs(first["queued_at"] - time.time()) < 60
        record = last_record(client)
        assert (record["api"], record["family"]) == ("app", "transactional")

    def test_trigger_name_is_a_valid_message_id(self, client: TestClient) -> None:
        """transactional_message_id may be a non-empty string (a trigger name)."""
        body = email(transactional_message_id="welcome")
        assert client.post("/v1/send/email", json=body, headers=APP).status_code == 200

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            (email(transactional_message_id=None), "transactional_message_id"),
            (email(transactional_message_id=""), "transactional_message_id"),
            (email(transactional_message_id=True), "transactional_message_id"),
            (email(identifiers={"id": "u", "email": "a@x"}), "identifiers"),
            (email(identifiers={}), "identifiers"),
            (email(identifiers={"phone": "+1"}), "identifiers"),
            (email(to=None), "to"),
            (
                email(to=",".join(f"p{i}@x" for i in range(10)), bcc=[f"b{i}@x" for i in range(6)]),
                "15",
            ),
        ],
    )
    def test_bad_email_is_400(self, client: TestClient, body: dict[str, Any], field: str) -> None:
        """Send checks answer 400 {"meta": {"error"}} naming the field or limit."""
        response = client.post("/v1/send/email", json=body, headers=APP)
        assert response.status_code == 400
        assert field in response.json()["meta"]["error"]

    def test_fifteen_recipients_are_allowed(self, client: TestClient) -> None:
        """Exactly 15 recipients across to, cc and bcc are fine."""
        body = email(
            to="a@x, b@x, c@x", cc=[f"c{i}@x" for i in range(6)], bcc="d@x,e@x,f@x,g@x,h@x,i@x"
        )
        assert client.post("/v1/send/email", json=body, headers=APP).status_code == 200

    def test_push_needs_no_to(self, client: TestClient) -> None:
        """Push and SMS do not require `to`."""
        body = email()
        del body["to"]
        assert client.post("/v1/send/push", json=body, headers=APP).status_code == 200

    def test_broadcast_answers_increasing_trigger_ids(
        self, make_client: Callable[..., TestClient]
    ) -> None:
        """Triggers answer {"id": n} with a new integer each time."""
        client = make_client(broadcast_interval_s=1)
        clock: FakeClock = client.app.state.sandbox.config.clock
        first = client.post("/v1/campaigns/5/triggers", json={"ids": ["u1", 2]}, headers=APP)
        clock.advance(1)
        second = client.post("/v1/campaigns/5/triggers", headers=APP)
        assert first.status_code == second.status_code == 200
        assert second.json()["id"] > first.json()["id"]
        assert last_record(client)["family"] == "broadcast"

    @pytest.mark.parametrize(
        ("body", "pointer"),
        [
            ({"ids": ["a"], "emails": ["a@x"]}, ""),
            ({"recipients": {}}, "/recipients"),
            ({"ids": list(range(10_001))}, "/ids"),
            ({"per_user_data": [{"id": "a", "data": {}}] * 10_001}, "/per_user_data"),
            ({"per_user_data": [{"data": {}}]}, "/per_user_data/0"),
            ({"emails": ["nope"]}, "/emails/0"),
            ({"data_file_url": "ftp://x"}, "/data_file_url"),
        ],
    )
    def test_bad_audience_is_422(
        self, make_client: Callable[..., TestClient], body: dict[str, Any], pointer: str
    ) -> None:
        """Audience errors answer 422 {"errors": [{detail, source.pointer, status}]}."""
        client = make_client()
        response = client.post("/v1/campaigns/5/triggers", json=body, headers=APP)
        assert response.status_code == 422
        error = response.json()["errors"][0]
        assert error["source"] == {"pointer": pointer}
        assert error["status"] == "422"
        assert error["detail"]

    def test_ten_thousand_ids_are_allowed(self, client: TestClient) -> None:
        """Exactly 10,000 ids are fine."""
        body = {"ids": list(range(10_000)), "data": {"k": "v"}}
        assert client.post("/v1/campaigns/5/triggers", json=body, headers=APP).status_code == 200

    def test_missing_broadcast_is_404(self, make_client: Callable[..., TestClient]) -> None:
        """Broadcast ids listed in missing_broadcast_ids answer 404 in the meta shape."""
        client = make_client(missing_broadcast_ids=frozenset({13}))
        response = client.post("/v1/campaigns/13/triggers", json={}, headers=APP)
        assert response.status_code == 404
        assert "13" in response.json()["meta"]["error"]

    def test_non_numeric_broadcast_id_is_400(self, client: TestClient) -> None:
        """A broadcast id that is not digits answers 400 naming broadcast_id."""
        response = client.post("/v1/campaigns/abc/triggers", json={}, headers=APP)
        assert response.status_code == 400
        assert "broadcast_id" in response.json()["meta"]["error"]

    def test_broadcast_data_must_be_an_object(self, client: TestClient) -> None:
        """`data` that is not an object answers 400."""
        response = client.post("/v1/campaigns/5/triggers", json={"data": [1]}, headers=APP)
        assert response.status_code == 400


class TestPipelines:
    @pytest.mark.parametrize(
        ("call", "body"),
        [
            ("identify", {"userId": "u1", "traits": {"plan": "pro"}}),
            ("track", {"userId": "u1", "event": "Paid", "properties": {"x": 1}}),
            ("page", {"anonymousId": "a1", "name": "Home"}),
            ("screen", {"userId": "u1", "name": "Home", "timestamp": "2024-05-01T10:00:00Z"}),
            ("group", {"userId": "u1", "groupId": "g1"}),
            ("alias", {"userId": "u1", "previousId": "a1"}),
            (
                "batch",
                {
                    "batch": [
                        {"type": "identify", "userId": "u1"},
                        {"type": "track", "userId": "u", "event": "e"},
                    ]
                },
            ),
        ],
    )
    def test_valid_calls_answer_200_in_strict_mode(
        self, client: TestClient, call: str, body: dict[str, Any]
    ) -> None:
        """Valid calls answer 200 {} even in strict mode, and are not marked dropped."""
        response = client.post(f"/v1/{call}", json=body, auth=PIPELINES, headers=STRICT)
        assert (response.status_code, response.json()) == (200, {})
        record = last_record(client)
        assert (record["api"], record["dropped"]) == ("pipelines", False)
        assert record["headers"]["x-strict-mode"] == "1"

    @pytest.mark.parametrize(
        ("call", "body", "field"),
        [
            ("identify", {"traits": {}}, "userId"),
            ("identify", {"userId": ""}, "userId"),
            ("track", {"userId": "u"}, "event"),
            ("group", {"userId": "u"}, "groupId"),
            ("alias", {"userId": "u"}, "previousId"),
            ("identify", {"userId": "u", "timestamp": 1700000000}, "timestamp"),
            ("identify", {"userId": "u", "timestamp": "yesterday"}, "timestamp"),
            ("identify", {"userId": "u", "traits": []}, "traits"),
            (
                "batch",
                {"batch": [{"type": "identify", "userId": "u"}, {"type": "track", "userId": "u"}]},
                "batch[1].event",
            ),
            ("batch", {"batch": [{"type": "explode", "userId": "u"}]}, "batch[0].type"),
            ("batch", {"batch": []}, "batch"),
        ],
    )
    def test_bad_data_is_400_in_strict_mode(
        self, client: TestClient, call: str, body: dict[str, Any], field: str
    ) -> None:
        """Strict mode answers 400 {"meta": {"errors": [...]}} naming the field."""
        response = client.post(f"/v1/{call}", json=body, auth=PIPELINES, headers=STRICT)
        assert response.status_code == 400
        assert any(field in message for message in response.json()["meta"]["errors"])

    def test_bad_data_is_200_and_dropped_when_lenient(self, client: TestClient) -> None:
        """Without strict mode bad data answers 200 {} and is recorded as dropped."""
        response = client.post("/v1/track", json={"userId": "u"}, auth=PIPELINES)
        assert (response.status_code, response.json()) == (200, {})
        record = last_record(client)
        assert (record["dropped"], record["accepted"], record["status"]) == (True, True, 200)
        assert stats(client)["dropped"] == 1

    def test_strict_header_must_be_exactly_one(self, client: TestClient) -> None:
        """Any X-Strict-Mode value other than "1" is lenient."""
        headers = {"X-Strict-Mode": "true"}
        response = client.post("/v1/track", json={}, auth=PIPELINES, headers=headers)
        assert response.status_code == 200

    def test_call_over_32_kb_is_refused(self, client: TestClient) -> None:
        """A single call over 32 KB is 400 in strict mode and dropped otherwise."""
        body = {"userId": "u", "traits": {"blob": "x" * 33_000}}
        strict = client.post("/v1/identify", json=body, auth=PIPELINES, headers=STRICT)
        assert strict.status_code == 400
        lenient = client.post("/v1/identify", json=body, auth=PIPELINES)
        assert lenient.status_code == 200
        assert last_record(client)["dropped"] is True

    def test_batch_limits(self, client: TestClient) -> None:
        """A batch item over 32 KB or a batch over 500 KB is refused in strict mode."""
        item = {"type": "identify", "userId": "u", "traits": {"blob": "x" * 33_000}}
        response = client.post("/v1/batch", json={"batch": [item]}, auth=PIPELINES, headers=STRICT)
        assert response.status_code == 400
        item["traits"] = {"blob": "x" * 30_000}
        response = client.post(
            "/v1/batch", json={"batch": [item] * 18}, auth=PIPELINES, headers=STRICT
        )
        assert response.status_code == 400
        assert "larger" in response.json()["meta"]["errors"][0]


class TestRollingWindow:
    def test_admits_up_to_the_limit_then_says_how_long_to_wait(self) -> None:
        """A full window rejects, reporting when its oldest arrival leaves."""
        window = RollingWindow(limit=2, window_s=1.0)
        assert window.admit(10.0) is None
        assert window.admit(10.25) is None
        assert window.admit(10.5) == pytest.approx(0.5)
        assert window.admit(11.0) is None  # 10.0 left: the window is (10.0, 11.0]
        assert window.admit(11.1) == pytest.approx(0.15)

    def test_rejections_do_not_count(self) -> None:
        """Rejected arrivals do not extend the wait."""
        window = RollingWindow(limit=1, window_s=1.0)
        window.admit(0.0)
        for _ in range(5):
            assert window.admit(0.5) is not None
        assert window.admit(1.0) is None


class TestLimits:
    @pytest.mark.parametrize(
        ("setting", "send"),
        [
            ("track_rps", lambda c: identify(c)),
            ("track_rps", lambda c: c.post("/api/v2/entity", json=person_op(), auth=TRACK)),
            ("track_rps", lambda c: c.get("/api/v1/accounts/region", auth=TRACK)),
            ("transactional_rps", lambda c: c.post("/v1/send/sms", json=email(), headers=APP)),
            (
                "pipelines_rps",
                lambda c: c.post("/v1/identify", json={"userId": "u"}, auth=PIPELINES),
            ),
        ],
    )
    def test_one_over_the_limit_in_the_same_instant_is_429(
        self,
        make_client: Callable[..., TestClient],
        clock: FakeClock,
        setting: str,
        send: Callable[[TestClient], httpx.Response],
    ) -> None:
        """rps + 1 requests at one instant give exactly one 429; a second later all pass again."""
        client = make_client(**{setting: 5})
        statuses = [send(client).status_code for _ in range(6)]
        assert statuses.count(429) == 1
        assert statuses[-1] == 429
        clock.advance(1.0)
        assert [send(client).status_code for _ in range(5)] == [200] * 5

    def test_429_shape_and_retry_after(
        self, make_client: Callable[..., TestClient], clock: FakeClock
    ) -> None:
        """A 429 answers the meta error and Retry-After in whole seconds, rounded up."""
        client = make_client(track_rps=1)
        identify(client)
        clock.advance(0.3)
        response = identify(client)
        assert response.status_code == 429
        assert response.json() == RATE_LIMITED
        assert response.headers["retry-after"] == "1"
        record = last_record(client)
        assert (record["status"], record["accepted"]) == (429, False)

    def test_retry_after_can_be_switched_off(self, make_client: Callable[..., TestClient]) -> None:
        """With retry_after=False a 429 carries no Retry-After."""
        client = make_client(track_rps=1, retry_after=False)
        identify(client)
        response = identify(client)
        assert response.status_code == 429
        assert "retry-after" not in response.headers

    def test_window_is_rolling_not_fixed(
        self, make_client: Callable[..., TestClient], clock: FakeClock
    ) -> None:
        """Requests spread over a second boundary still count against the same rolling second."""
        client = make_client(track_rps=4)
        for _ in range(4):
            assert identify(client).status_code == 200
            clock.advance(0.2)  # arrivals at 0, .2, .4, .6; now 0.8
        clock.advance(0.3)  # now 1.1: the arrival at 0 has left, three remain
        assert identify(client).status_code == 200
        assert identify(client).status_code == 429

    def test_rejected_and_unauthorized_requests_do_not_count(
        self, make_client: Callable[..., TestClient], clock: FakeClock
    ) -> None:
        """429s and 401s are not accepted arrivals, so they never use up the window."""
        client = make_client(track_rps=2)
        for _ in range(5):
            identify(client, auth=None)
        assert identify(client).status_code == 200
        clock.advance(0.5)
        assert identify(client).status_code == 200
        assert identify(client).status_code == 429
        clock.advance(0.5)  # the first accepted arrival leaves; the 429 at 0.5 never counted
        assert identify(client).status_code == 200

    def test_families_are_independent(self, make_client: Callable[..., TestClient]) -> None:
        """A full Track window does not block transactional sends."""
        client = make_client(track_rps=1, transactional_rps=1)
        identify(client)
        assert identify(client).status_code == 429
        assert client.post("/v1/send/email", json=email(), headers=APP).status_code == 200

    def test_body_check_failures_count_as_arrivals(
        self, make_client: Callable[..., TestClient]
    ) -> None:
        """A request refused for its body still passed the limiter, so it uses a slot."""
        client = make_client(track_rps=1)
        assert identify(client, json=[]).status_code == 400
        assert identify(client).status_code == 429

    def test_broadcast_interval(self, client: TestClient, clock: FakeClock) -> None:
        """One trigger per 10 s across all broadcasts; the 429 says how long to wait."""
        assert client.post("/v1/campaigns/1/triggers", headers=APP).status_code == 200
        clock.advance(2)
        refused = client.post("/v1/campaigns/2/triggers", headers=APP)
        assert refused.status_code == 429
        assert refused.json() == RATE_LIMITED
        assert refused.headers["retry-after"] == "8"
        clock.advance(7.9)
        assert client.post("/v1/campaigns/2/triggers", headers=APP).status_code == 429
        clock.advance(0.1)
        assert client.post("/v1/campaigns/2/triggers", headers=APP).status_code == 200

    def test_default_limit_is_100_per_second(self, client: TestClient) -> None:
        """With the default config the 101st Track request in one instant is the only 429."""
        statuses = [identify(client).status_code for _ in range(101)]
        assert statuses.count(429) == 1
        assert statuses[-1] == 429


class TestStats:
    def test_max_in_window_uses_half_open_windows(self) -> None:
        """Arrivals exactly one window apart never share a window."""
        assert max_in_window([], 1.0) == 0
        assert max_in_window([0.0, 1.0, 2.0], 1.0) == 1
        assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.2], 1.0) == 4
        assert max_in_window([3.0, 0.0, 0.1], 1.0) == 2

    def test_stats_count_requests_statuses_and_families(
        self, make_client: Callable[..., TestClient], clock: FakeClock
    ) -> None:
        """Stats give totals, counts per status, and per family: accepted, 429s, busiest window."""
        client = make_client(track_rps=3)
        for _ in range(4):
            identify(client)  # 3 accepted at t=0, one 429
        clock.advance(0.5)
        identify(client, auth=None)  # 401, not accepted
        clock.advance(0.6)  # t=1.1: the three from t=0 are gone
        identify(client)
        identify(client)
        result = stats(client)
        assert result["requests"] == 7
        assert result["accepted"] == 5
        assert result["by_status"] == {"200": 5, "401": 1, "429": 1}
        track = result["families"]["track"]
        assert track == {"accepted": 5, "rate_limited": 1, "max_in_window": 3, "window_s": 1.0}
        assert result["families"]["broadcast"]["window_s"] == 10
        assert set(result["families"]) == {
            "track",
            "pipelines",
            "transactional",
            "broadcast",
            "app",
        }

    def test_max_in_window_reflects_bursts(
        self, make_client: Callable[..., TestClient], clock: FakeClock
    ) -> None:
        """max_in_window is the most accepted arrivals in any rolling second."""
        client = make_client()
        for step in (0.0, 0.0, 0.0, 0.5, 0.5, 0.7, 0.1):  # times 0,0,0,.5,1.0,1.7,1.8
            clock.advance(step)
            identify(client)
        assert stats(client)["families"]["track"]["max_in_window"] == 4

    def test_requests_query_filters(self, client: TestClient) -> None:
        """since, limit, api and family select records, oldest first."""
        identify(client)
        client.post("/v1/send/sms", json=email(), headers=APP)
        client.post("/v1/identify", json={"userId": "u"}, auth=PIPELINES)
        identify(client)
        all_records = records(client)
        assert [record["seq"] for record in all_records] == [1, 2, 3, 4]
        assert [r["seq"] for r in records(client, since=2)] == [3, 4]
        assert [r["seq"] for r in records(client, since=1, limit=2)] == [2, 3]
        assert [r["seq"] for r in records(client, api="track_v1")] == [1, 4]
        assert [r["seq"] for r in records(client, family="transactional")] == [2]

    def test_record_fields(self, client: TestClient) -> None:
        """A record has arrival time, api, family, method, path, status, auth, UA, headers, body."""
        before = time.time()
        identify(client, headers={"User-Agent": "cio-test/1"})
        record = records(client)[0]
        assert before <= record["t"] <= time.time()
        assert record["user_agent"] == "cio-test/1"
        assert record["headers"] == {"content-type": "application/json", "x-strict-mode": None}
        expected = {"api": "track_v1", "family": "track", "method": "PUT", "status": 200}
        assert {key: record[key] for key in expected} == expected
        assert record["body"] == {"email": "a@example.com"}
        assert record["dropped"] is False

    def test_bad_query_is_400(self, client: TestClient) -> None:
        """A non-integer since or limit answers 400."""
        assert client.get("/_sandbox/requests", params={"since": "x"}).status_code == 400
        assert client.get("/_sandbox/requests", params={"limit": "-1"}).status_code == 400

    def test_control_requests_are_not_recorded(self, client: TestClient) -> None:
        """Health, stats and request listings leave the log alone."""
        assert client.get("/_sandbox/health").json() == {"ok": True}
        stats(client)
        assert records(client) == []


class TestFaults:
    def test_status_for_the_next_n_requests(self, client: TestClient) -> None:
        """{"status", "count", "retry_after"} answers that status N times, then normally."""
        set_fault(client, {"status": 503, "count": 2, "retry_after": 7})
        expected = {"status": 503, "count": 2, "retry_after": 7}
        assert client.get("/_sandbox/faults").json() == {"fault": expected}
        first = identify(client)
        assert first.status_code == 503
        assert first.headers["retry-after"] == "7"
        assert "error" in first.json()["meta"]
        assert identify(client).status_code == 503
        assert identify(client).status_code == 200
        assert [r["status"] for r in records(client)] == [503, 503, 200]
        assert [r["fault"] for r in records(client)] == ["status", "status", None]
        assert client.get("/_sandbox/faults").json() == {"fault": None}

    def test_every_nth_request(self, client: TestClient) -> None:
        """{"every": 3, "status": 500} fails the third, sixth, ... request."""
        set_fault(client, {"every": 3, "status": 500})
        statuses = [identify(client).status_code for _ in range(7)]
        assert statuses == [200, 200, 500, 200, 200, 500, 200]

    def test_faulted_requests_do_not_use_the_limit(
        self, make_client: Callable[..., TestClient]
    ) -> None:
        """Faults apply before limits, so faulted requests are not accepted arrivals."""
        client = make_client(track_rps=1)
        set_fault(client, {"status": 502, "count": 3})
        assert [identify(client).status_code for _ in range(4)] == [502, 502, 502, 200]
        assert stats(client)["families"]["track"]["accepted"] == 1

    def test_faults_apply_after_auth(self, client: TestClient) -> None:
        """A request with bad credentials gets 401 and does not use up the fault."""
        set_fault(client, {"status": 500, "count": 1})
        assert identify(client, auth=None).status_code == 401
        assert identify(client).status_code == 500

    def test_faults_apply_before_body_checks(self, client: TestClient) -> None:
        """A bad body still gets the injected status."""
        set_fault(client, {"status": 500, "count": 1})
        assert identify(client, json=[]).status_code == 500

    def test_pipelines_fault_uses_the_pipelines_shape(self, client: TestClient) -> None:
        """An injected error on Pipelines answers {"error": ...}."""
        set_fault(client, {"status": 500, "count": 1})
        response = client.post("/v1/identify", json={"userId": "u"}, auth=PIPELINES)
        assert response.status_code == 500
        assert set(response.json()) == {"error"}

    def test_delay(self, client: TestClient) -> None:
        """{"delay_s", "count"} answers normally but late, for count requests."""
        set_fault(client, {"delay_s": 0.05, "count": 1})
        started = time.monotonic()
        assert identify(client).status_code == 200
        assert time.monotonic() - started >= 0.05
        assert last_record(client)["fault"] == "delay"
        assert last_record(client)["status"] == 200
        assert client.get("/_sandbox/faults").json() == {"fault": None}

    def test_drop_raises_through_the_test_client(self, client: TestClient) -> None:
        """{"drop": true} aborts the response; it is recorded with no status."""
        set_fault(client, {"drop": True, "count": 1})
        with pytest.raises(InjectedDropError):
            identify(client)
        record = last_record(client)
        assert (record["status"], record["fault"]) == (None, "drop")
        assert stats(client)["connections_dropped"] == 1
        assert identify(client).status_code == 200

    @pytest.mark.parametrize("clear", ["post_empty", "delete"])
    def test_clearing(self, client: TestClient, clear: str) -> None:
        """POST {} and DELETE /_sandbox/faults both clear the fault."""
        set_fault(client, {"status": 500})
        assert client.get("/_sandbox/faults").json() == {"fault": {"status": 500}}
        if clear == "delete":
            client.delete("/_sandbox/faults")
        else:
            set_fault(client, {})
        assert identify(client).status_code == 200

    def test_family_scope_leaves_other_families_alone(self, client: TestClient) -> None:
        """{"family": "transactional"} fails transactional sends only; Track, broadcasts and App
        reads answer normally meanwhile, and the scope is part of the description."""
        set_fault(client, {"status": 503, "family": "transactional"})
        expected = {"status": 503, "family": "transactional"}
        assert client.get("/_sandbox/faults").json() == {"fault": expected}
        send = client.post("/v1/send/email", json=email(), headers=APP)
        assert send.status_code == 503
        assert identify(client).status_code == 200
        trigger = client.post("/v1/campaigns/9/triggers", json={"data": {}}, headers=APP)
        assert trigger.status_code == 200
        assert client.get("/v1/segments", headers=APP).status_code == 200
        assert client.post("/v1/send/email", json=email(), headers=APP).status_code == 503
        logged = [(r["family"], r["status"], r["fault"]) for r in records(client)]
        assert logged == [
            ("transactional", 503, "status"),
            ("track", 200, None),
            ("broadcast", 200, None),
            ("app", 200, None),
            ("transactional", 503, "status"),
        ]

    def test_other_families_count_neither_every_nor_count(self, client: TestClient) -> None:
        """Out-of-scope requests neither fire nor advance `every`/`count`."""
        set_fault(client, {"status": 500, "family": "track", "every": 2, "count": 2})
        sends = [
            client.post("/v1/send/email", json=email(), headers=APP).status_code for _ in range(3)
        ]
        assert sends == [200, 200, 200]
        assert [identify(client).status_code for _ in range(6)] == [200, 500, 200, 500, 200, 200]
        assert client.get("/_sandbox/faults").json() == {"fault": None}

    def test_family_list_and_pipelines(self, client: TestClient) -> None:
        """A list names several families; Pipelines is a family of its own."""
        set_fault(client, {"drop": True, "family": ["pipelines", "broadcast"]})
        assert client.get("/_sandbox/faults").json() == {
            "fault": {"drop": True, "family": ["pipelines", "broadcast"]}
        }
        assert identify(client).status_code == 200
        with pytest.raises(InjectedDropError):
            client.post("/v1/identify", json={"userId": "u"}, auth=PIPELINES)
        assert last_record(client)["fault"] == "drop"

    @pytest.mark.parametrize(
        ("family", "message"),
        [
            ("email", "unknown family 'email': must be one of track, pipelines, transactional"),
            ("Track", "unknown family 'Track'"),
            ([], "family must be a family name or a non-empty list of them"),
            (7, "family must be a family name or a non-empty list of them"),
            (["app", 1], "family must be a family name or a non-empty list of them"),
            (["app", "app"], "family lists a name twice"),
        ],
    )
    def test_invalid_family_names_the_problem(
        self, client: TestClient, family: Any, message: str
    ) -> None:
        """A bad `family` answers 400 with a message saying what is accepted."""
        response = client.post("/_sandbox/faults", json={"status": 503, "family": family})
        assert response.status_code == 400
        assert message in response.json()["error"]
        assert client.get("/_sandbox/faults").json() == {"fault": None}

    def test_parse_fault_raises_fault_spec_error(self) -> None:
        """parse_fault raises FaultSpecError (a ValueError) for a bad scope."""
        with pytest.raises(FaultSpecError, match="unknown family 'trackk'"):
            parse_fault({"status": 503, "family": "trackk"})
        fault = parse_fault({"status": 503, "family": ["track", "pipelines"]})
        assert fault is not None and fault.hits("pipelines") and not fault.hits("app")

    @pytest.mark.parametrize(
        "spec",
        [
            {"count": 2},
            {"family": "track"},
            {"status": "500"},
            {"status": 99},
            {"status": 500, "drop": True},
            {"drop": "yes"},
            {"drop_after": "yes"},
            {"drop": True, "drop_after": True},
            {"status": 503, "drop_after": True},
            {"delay_s": -1},
            {"every": 0, "status": 500},
            {"retry_after": 3},
            {"status": 500, "explode": 1},
            [1],
        ],
    )
    def test_invalid_specs_are_400(self, client: TestClient, spec: Any) -> None:
        """An invalid fault description answers 400 and changes nothing."""
        response = client.post("/_sandbox/faults", json=spec)
        assert response.status_code == 400
        assert "error" in response.json()
        assert client.get("/_sandbox/faults").json() == {"fault": None}


class TestReset:
    def test_reset_clears_log_stats_limits_and_faults(
        self, make_client: Callable[..., TestClient]
    ) -> None:
        """After a reset the log and stats are empty, the window is free and no fault is active."""
        client = make_client(track_rps=1)
        identify(client)
        assert identify(client).status_code == 429
        set_fault(client, {"status": 500})
        assert client.post("/_sandbox/reset").json() == {"ok": True}
        assert records(client) == []
        assert stats(client)["requests"] == 0
        assert stats(client)["families"]["track"]["rate_limited"] == 0
        assert identify(client).status_code == 200

    def test_seq_keeps_counting_after_reset(self, client: TestClient) -> None:
        """Sequence numbers are never reused, so a poller's `since` stays valid."""
        identify(client)
        identify(client)
        client.post("/_sandbox/reset")
        identify(client)
        assert [record["seq"] for record in records(client, since=2)] == [3]

    def test_apps_do_not_share_state(self, make_client: Callable[..., TestClient]) -> None:
        """Two apps keep separate logs and limits."""
        first = make_client(track_rps=1)
        second = make_client(track_rps=1)
        identify(first)
        assert identify(second).status_code == 200
        assert len(records(first)) == len(records(second)) == 1


@pytest.fixture
def live_server() -> Iterator[Callable[..., str]]:
    """Start sandboxes under a real uvicorn on free ports; stop them at the end."""
    running: list[tuple[uvicorn.Server, threading.Thread, socket.socket]] = []
    quiet_dropped_connections()

    def start(config: SandboxConfig | None = None) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(config), log_level="warning", access_log=False, lifespan="off", ws="none"
            )
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread, sock))
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread, sock in running:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


class TestLiveServer:
    def test_percent_encoded_id_survives_a_real_server(
        self, live_server: Callable[..., str]
    ) -> None:
        """Through uvicorn, `user%2F1` still reaches identify with path_id "user/1"."""
        base_url = live_server()
        with httpx.Client(base_url=base_url, auth=TRACK) as http:
            assert http.put("/api/v1/customers/user%2F1", json={}).status_code == 200
            record = http.get("/_sandbox/requests").json()[-1]
            region = http.get("/api/v1/accounts/region").json()
        assert (record["path"], record["path_id"]) == ("/api/v1/customers/user%2F1", "user/1")
        assert region["url"] == base_url

    def test_drop_is_a_connection_error_for_httpx(self, live_server: Callable[..., str]) -> None:
        """A drop fault makes httpx raise RemoteProtocolError; the next request works."""
        base_url = live_server()
        with httpx.Client(base_url=base_url, auth=TRACK) as http:
            http.post("/_sandbox/faults", json={"drop": True, "count": 1})
            with pytest.raises(httpx.RemoteProtocolError):
                http.put("/api/v1/customers/u1", json={})
            assert http.put("/api/v1/customers/u1", json={}).status_code == 200
            statuses = [record["status"] for record in http.get("/_sandbox/requests").json()]
        assert statuses == [None, 200]


class TestRunSandbox:
    def test_runs_uvicorn_quietly(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """run_sandbox serves a sandbox app with uvicorn at warning level and no access log,
        after quieting the cycle collector (it keeps every body it parses: gc_tuning.py)."""
        calls: list[dict[str, Any]] = []

        def fake_run(app: Any, **kwargs: Any) -> None:
            calls.append({"app": app, **kwargs})

        monkeypatch.setattr(sandbox_server.uvicorn, "run", fake_run)
        # Not the real one here: it would freeze this test process's objects.
        monkeypatch.setattr(sandbox_server, "quiet_collector", lambda: calls.append({}))
        run_sandbox(port=9999, config=SandboxConfig(track_rps=5))
        quieted, call = calls
        assert quieted == {}, "the collector is quieted before uvicorn runs"
        assert (call["host"], call["port"]) == ("127.0.0.1", 9999)
        assert (call["log_level"], call["access_log"]) == ("warning", False)
        assert call["app"].state.sandbox.config.track_rps == 5


# -- What was sent: delivery and trigger listings, the listing lag, drop vs drop_after -------------
MESSAGE_KEYS = {
    "id",
    "deduplicate_id",
    "message_template_id",
    "customer_id",
    "customer_identifiers",
    "recipient",
    "subject",
    "metrics",
    "created",
    "failure_message",
    "campaign_id",
    "action_id",
    "newsletter_id",
    "content_id",
    "broadcast_id",
    "type",
    "forgotten",
}
USER_4 = {"id": "user-4", "email": "person4@example.com", "cio_id": "a3000004"}


def send(test_client: TestClient, channel: str = "email", **fields: Any) -> str:
    """POST /v1/send/{channel} (template 7 to user-4 unless told otherwise); the delivery id."""
    body = {"transactional_message_id": 7, "identifiers": {"id": "user-4"}, **fields}
    if channel == "email":
        body.setdefault("to", "person4@example.com")
    response = test_client.post(f"/v1/send/{channel}", json=body, headers=APP)
    assert response.status_code == 200, response.text
    delivery_id: str = response.json()["delivery_id"]
    return delivery_id


def listed(test_client: TestClient, path: str, **query: Any) -> list[str]:
    """The delivery ids one page of a messages listing answers."""
    response = test_client.get(path, params=query, headers=APP)
    assert response.status_code == 200, response.text
    return [message["id"] for message in response.json()["messages"]]


class TestDeliveryListings:
    def test_transactional_listing_shape_and_order(self, client: TestClient) -> None:
        """Deliveries of one transactional message, every channel, newest first, in Customer.io's
        MessageObject shape; other templates are left out."""
        first = send(client, subject="Your receipt")
        push = send(client, "push", to="all")
        send(client, transactional_message_id=8)
        sms = send(client, "sms", to="+14155550100", identifiers={"email": "PERSON4@example.com"})
        body = client.get("/v1/transactional/7/messages", headers=APP).json()
        assert set(body) == {"messages", "next"} and body["next"] == ""
        assert [m["id"] for m in body["messages"]] == [sms, push, first]
        assert all(set(m) == MESSAGE_KEYS for m in body["messages"])
        assert [m["type"] for m in body["messages"]] == ["twilio", "push", "email"]
        email_message = body["messages"][2]
        assert email_message["message_template_id"] == 7
        assert email_message["subject"] == "Your receipt"
        assert email_message["recipient"] == "person4@example.com"
        assert email_message["customer_id"] == "user-4"
        # The person's identifiers are completed from the workspace, whichever one the send named.
        assert all(m["customer_identifiers"] == USER_4 for m in body["messages"])
        assert list(email_message["metrics"]) == ["sent"]
        assert email_message["metrics"]["sent"] == email_message["created"]
        assert email_message["deduplicate_id"] == f"{first}:{email_message['created']}"
        parents = ("campaign_id", "action_id", "newsletter_id", "content_id", "broadcast_id")
        assert all(email_message[key] is None for key in parents)
        assert listed(client, "/v1/transactional/99/messages") == []

    def test_pages_follow_next(self, client: TestClient) -> None:
        """`limit` and `start`: the cursor walks the newest-first list; an empty `next` ends it."""
        sent = [send(client) for _ in range(5)]
        page = client.get("/v1/transactional/7/messages?limit=2", headers=APP).json()
        seen = [m["id"] for m in page["messages"]]
        while page["next"]:
            query = {"limit": 2, "start": page["next"]}
            page = client.get("/v1/transactional/7/messages", params=query, headers=APP).json()
            seen += [m["id"] for m in page["messages"]]
        assert seen == sent[::-1]

    def test_time_window_is_inclusive_on_created(self, client: TestClient) -> None:
        """start_ts and end_ts bound `created`, both inclusive."""
        delivery_id = send(client)
        message = client.get(f"/v1/messages/{delivery_id}", headers=APP).json()["message"]
        created = message["created"]
        path = "/v1/transactional/7/messages"
        assert listed(client, path, start_ts=created, end_ts=created) == [delivery_id]
        assert listed(client, path, start_ts=created + 1) == []
        assert listed(client, path, end_ts=created - 1) == []
        assert listed(client, path, start_ts=created - 60) == [delivery_id]

    def test_metric_and_state_filters(self, client: TestClient) -> None:
        """`metric` keeps deliveries that reached it; `state` keeps those in that state."""
        delivery_id = send(client)
        path = "/v1/transactional/7/messages"
        assert listed(client, path, metric="sent") == [delivery_id]
        assert listed(client, path, metric="opened") == []
        assert listed(client, path, state="sent") == [delivery_id]
        assert listed(client, path, state="failed") == []

    @pytest.mark.parametrize(
        ("path", "message"),
        [
            ("/v1/transactional/abc/messages", "transactional_id must be a number"),
            ("/v1/transactional/7/messages?metric=read", "metric must be one of attempted"),
            ("/v1/transactional/7/messages?state=done", "state must be one of failed"),
            ("/v1/transactional/7/messages?limit=0", "limit must be an integer from 1 to 1000"),
            ("/v1/transactional/7/messages?limit=1001", "limit must be an integer from 1 to"),
            ("/v1/transactional/7/messages?start=nope", "start is not a valid page token"),
            ("/v1/transactional/7/messages?start_ts=10&end_ts=9", "end_ts must not be before"),
            ("/v1/customers/user-4/messages?id_type=phone", "phone is not an identifier"),
            ("/v1/customers/user-4/messages?id_type=name", "id_type must be one of id, email"),
            ("/v1/customers/user-4/messages?start_ts=x", "start_ts must be an integer"),
        ],
    )
    def test_bad_parameters_are_400(self, client: TestClient, path: str, message: str) -> None:
        response = client.get(path, headers=APP)
        assert response.status_code == 400
        assert message in response.json()["meta"]["error"]

    @pytest.mark.parametrize(
        ("customer", "id_type"),
        [("user-4", None), ("Person4@Example.com", "email"), ("a3000004", "cio_id")],
    )
    def test_person_listing_by_each_identifier(
        self, client: TestClient, customer: str, id_type: str | None
    ) -> None:
        """A person's deliveries, found by id, email (any case) or cio_id; the generated
        delivery to that person is older than the new ones."""
        first = send(client)
        second = send(client, "push", transactional_message_id=8)
        send(client, identifiers={"id": "user-5"}, to="person5@example.com")
        query = {} if id_type is None else {"id_type": id_type}
        found = listed(client, f"/v1/customers/{customer}/messages", **query)
        assert found == [second, first, "sandbox-delivery-4"]

    def test_unknown_person_has_no_deliveries(self, client: TestClient) -> None:
        """A person the workspace does not know is listed by the identifier the send named."""
        delivery_id = send(client, identifiers={"id": "u/1"}, to="x@example.com")
        message = client.get(f"/v1/messages/{delivery_id}", headers=APP).json()["message"]
        assert message["customer_identifiers"] == {"id": "u/1", "email": None, "cio_id": None}
        assert listed(client, "/v1/customers/u%2F1/messages") == [delivery_id]
        assert listed(client, "/v1/customers/nobody/messages") == []

    def test_send_by_trigger_name_has_no_template_id(self, client: TestClient) -> None:
        """A send naming its template by trigger name is listed under the person only."""
        delivery_id = send(client, transactional_message_id="welcome")
        message = client.get(f"/v1/messages/{delivery_id}", headers=APP).json()["message"]
        assert message["message_template_id"] is None
        assert listed(client, "/v1/transactional/7/messages") == []
        assert listed(client, "/v1/customers/user-4/messages")[0] == delivery_id

    def test_listings_are_app_reads(self, client: TestClient) -> None:
        """Bearer auth and the 10/s `app` limit, like every App API read."""
        assert client.get("/v1/transactional/7/messages").status_code == 401
        statuses = [
            client.get("/v1/customers/user-4/messages", headers=APP).status_code for _ in range(11)
        ]
        assert statuses == [200] * 10 + [429]
        assert {r["family"] for r in records(client)} == {"app"}


class TestTriggerListings:
    def test_triggers_are_listed_and_found(self, client: TestClient, clock: FakeClock) -> None:
        """Accepted triggers list under their broadcast, newest first; each is found alone."""
        first = client.post("/v1/campaigns/2/triggers", json={"ids": ["user-1"]}, headers=APP)
        clock.advance(10)
        other = client.post("/v1/campaigns/3/triggers", headers=APP).json()["id"]
        clock.advance(10)
        second = client.post("/v1/campaigns/2/triggers", headers=APP).json()["id"]
        body = client.get("/v1/broadcasts/2/triggers", headers=APP).json()
        assert [t["id"] for t in body["triggers"]] == [second, first.json()["id"]]
        trigger = body["triggers"][0]
        assert set(trigger) == {"id", "broadcast_id", "created_at", "processed_at"}
        assert trigger["broadcast_id"] == 2 and trigger["processed_at"] >= trigger["created_at"]
        one = client.get(f"/v1/campaigns/2/triggers/{second}", headers=APP)
        assert one.status_code == 200 and one.json() == trigger
        assert client.get(f"/v1/campaigns/2/triggers/{other}", headers=APP).status_code == 404
        assert client.get("/v1/campaigns/2/triggers/999", headers=APP).status_code == 404
        assert client.get("/v1/broadcasts/5/triggers", headers=APP).json() == {"triggers": []}
        assert client.get("/v1/broadcasts/x/triggers", headers=APP).status_code == 400
        assert client.get("/v1/campaigns/2/triggers/x", headers=APP).status_code == 400

    def test_missing_broadcast_is_404(self, make_client: Callable[..., TestClient]) -> None:
        client = make_client(missing_broadcast_ids=frozenset({13}))
        assert client.get("/v1/broadcasts/13/triggers", headers=APP).status_code == 404
        assert client.get("/v1/campaigns/13/triggers/1", headers=APP).status_code == 404


class TestListingLag:
    def test_config_validates_the_lag(self) -> None:
        assert SandboxConfig().listing_lag_s == 0
        for bad in (-1, 3601, float("nan"), True):
            with pytest.raises(ConfigError, match="listing_lag_s"):
                SandboxConfig(listing_lag_s=bad)

    def test_new_sends_and_triggers_show_only_after_the_lag(
        self, make_client: Callable[..., TestClient], clock: FakeClock
    ) -> None:
        """With a 2 s lag a delivery and a trigger are invisible to every read for 2 s."""
        client = make_client(listing_lag_s=2, app_rps=100)
        delivery_id = send(client)
        trigger_id = client.post("/v1/campaigns/2/triggers", headers=APP).json()["id"]

        def shown() -> tuple[bool, bool, bool, bool, bool]:
            return (
                client.get(f"/v1/messages/{delivery_id}", headers=APP).status_code == 200,
                delivery_id in listed(client, "/v1/transactional/7/messages"),
                delivery_id in listed(client, "/v1/customers/user-4/messages"),
                bool(client.get("/v1/broadcasts/2/triggers", headers=APP).json()["triggers"]),
                client.get(f"/v1/campaigns/2/triggers/{trigger_id}", headers=APP).status_code
                == 200,
            )

        assert shown() == (False,) * 5
        clock.advance(1.9)
        assert shown() == (False,) * 5
        clock.advance(0.1)
        assert shown() == (True,) * 5
        # The generated deliveries were never hidden.
        assert client.get("/v1/messages/sandbox-delivery-3", headers=APP).status_code == 200

    def test_lag_is_set_at_runtime_and_reset_restores_it(
        self, make_client: Callable[..., TestClient], clock: FakeClock
    ) -> None:
        client = make_client(listing_lag_s=1)
        assert client.get("/_sandbox/config").json() == {"listing_lag_s": 1}
        response = client.post("/_sandbox/config", json={"listing_lag_s": 5})
        assert response.json() == {"listing_lag_s": 5}
        delivery_id = send(client)
        clock.advance(4)
        assert listed(client, "/v1/transactional/7/messages") == []
        # The lag in force when reading decides: lowering it shows what is old enough.
        client.post("/_sandbox/config", json={"listing_lag_s": 0})
        assert listed(client, "/v1/transactional/7/messages") == [delivery_id]
        client.post("/_sandbox/reset")
        assert client.get("/_sandbox/config").json() == {"listing_lag_s": 1}

    @pytest.mark.parametrize(
        "body",
        [{}, {"listing_lag_s": -1}, {"listing_lag_s": "2"}, {"listing_lag_s": 1, "x": 1}, [1]],
    )
    def test_bad_config_is_400(self, client: TestClient, body: Any) -> None:
        response = client.post("/_sandbox/config", json=body)
        assert response.status_code == 400 and "error" in response.json()
        assert client.get("/_sandbox/config").json() == {"listing_lag_s": 0}

    def test_cli_flag_sets_the_lag(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """`cio-worker sandbox --listing-lag-s 2.5` starts the sandbox with that lag."""
        configs: list[SandboxConfig] = []

        def fake_run(*, host: str, port: int, config: SandboxConfig) -> None:
            configs.append(config)

        monkeypatch.setattr("cio_worker.sandbox.run_sandbox", fake_run)
        assert cli.main(["sandbox", "--port", "9999", "--listing-lag-s", "2.5"]) == 0
        assert configs[0].listing_lag_s == 2.5


class TestDropAfter:
    def test_drop_after_processes_then_drops(self, client: TestClient) -> None:
        """{"drop_after": true}: the send is accepted and becomes a delivery, then the answer is
        lost; {"drop": true} loses the request before anything happens."""
        set_fault(client, {"drop": True, "count": 1, "family": "transactional"})
        with pytest.raises(InjectedDropError):
            send(client)
        set_fault(client, {"drop_after": True, "count": 1, "family": "transactional"})
        assert client.get("/_sandbox/faults").json() == {
            "fault": {"drop_after": True, "count": 1, "family": "transactional"}
        }
        with pytest.raises(InjectedDropError):
            send(client)
        dropped, dropped_after = records(client)
        assert (dropped["fault"], dropped["status"], dropped["accepted"]) == ("drop", None, False)
        assert (dropped_after["fault"], dropped_after["status"]) == ("drop_after", None)
        assert (dropped_after["accepted"], dropped_after["answered"]) == (True, 200)
        assert dropped["answered"] is None
        figures = stats(client)
        assert figures["connections_dropped"] == 2
        assert figures["families"]["transactional"]["accepted"] == 1
        (message,) = client.get("/v1/transactional/7/messages", headers=APP).json()["messages"]
        assert message["customer_identifiers"] == USER_4
        assert client.get("/_sandbox/faults").json() == {"fault": None}

    def test_drop_after_a_trigger_records_it(self, client: TestClient) -> None:
        set_fault(client, {"drop_after": True, "count": 1})
        with pytest.raises(InjectedDropError):
            client.post("/v1/campaigns/2/triggers", headers=APP)
        (trigger,) = client.get("/v1/broadcasts/2/triggers", headers=APP).json()["triggers"]
        assert last_record(client)["fault"] is None  # the listing itself is answered
        assert trigger["broadcast_id"] == 2

    def test_drop_after_with_every_and_delay(self, client: TestClient) -> None:
        """Every other send is processed and its answer dropped, after a delay."""
        set_fault(client, {"drop_after": True, "every": 2, "delay_s": 0.01})
        outcomes = []
        for _ in range(4):
            try:
                send(client)
                outcomes.append("answered")
            except InjectedDropError:
                outcomes.append("dropped")
        assert outcomes == ["answered", "dropped"] * 2
        assert [r["fault"] for r in records(client)] == [None, "drop_after"] * 2
        assert len(listed(client, "/v1/transactional/7/messages")) == 4

    def test_drop_after_a_refusal_records_what_it_would_have_answered(
        self, make_client: Callable[..., TestClient]
    ) -> None:
        """A request processed into a 429 or 400 under drop_after is dropped all the same; the
        log says what it would have answered, and nothing was sent."""
        client = make_client(transactional_rps=1)
        send(client)
        set_fault(client, {"drop_after": True, "family": "transactional"})
        with pytest.raises(InjectedDropError):
            send(client)
        assert (last_record(client)["answered"], last_record(client)["accepted"]) == (429, False)
        assert len(listed(client, "/v1/transactional/7/messages")) == 1


class TestDropsOverHttp:
    def test_drop_and_drop_after_differ_only_in_what_the_listings_show(self) -> None:
        """Against a real `cio-worker sandbox` process: both faults look the same to httpx
        (RemoteProtocolError, no answer); only the listings, once the lag has passed, tell
        whether the send or the trigger happened."""
        lag_s = 0.5
        with SandboxProcess() as sandbox, httpx.Client(base_url=sandbox.url, timeout=10) as http:
            assert http.post("/_sandbox/config", json={"listing_lag_s": lag_s}).status_code == 200
            body = {"transactional_message_id": 7, "identifiers": {"id": "user-4"}, "to": "a@x.io"}
            seen: dict[str, tuple[type[Exception], list[str], list[int]]] = {}
            for fault in ("drop", "drop_after"):
                http.post("/_sandbox/faults", json={fault: True, "count": 2})
                with pytest.raises(httpx.RemoteProtocolError) as send_error:
                    http.post("/v1/send/email", json=body, headers=APP)
                with pytest.raises(httpx.RemoteProtocolError):
                    http.post("/v1/campaigns/2/triggers", headers=APP)
                # Right after the failure nothing is listed either way: the lag hides it.
                assert self._deliveries(http) == [] and self._triggers(http) == []
                time.sleep(lag_s + 0.1)
                seen[fault] = (send_error.type, self._deliveries(http), self._triggers(http))
                log = http.get("/_sandbox/requests", params={"family": "transactional"}).json()
                assert log[-1]["fault"] == fault and log[-1]["status"] is None
            assert seen["drop"][0] is seen["drop_after"][0] is httpx.RemoteProtocolError
            assert seen["drop"][1:] == ([], [])
            (delivery,) = seen["drop_after"][1]
            (trigger,) = seen["drop_after"][2]
            accepted = [r for r in http.get("/_sandbox/requests").json() if r["accepted"]]
            assert {r["fault"] for r in accepted if r["method"] == "POST"} == {"drop_after"}
            assert http.get(f"/v1/messages/{delivery}", headers=APP).status_code == 200
            assert http.get(f"/v1/campaigns/2/triggers/{trigger}", headers=APP).status_code == 200

    @staticmethod
    def _deliveries(http: httpx.Client) -> list[str]:
        response = http.get("/v1/transactional/7/messages", headers=APP)
        assert response.status_code == 200, response.text
        return [message["id"] for message in response.json()["messages"]]

    @staticmethod
    def _triggers(http: httpx.Client) -> list[int]:
        response = http.get("/v1/broadcasts/2/triggers", headers=APP)
        assert response.status_code == 200, response.text
        return [trigger["id"] for trigger in response.json()["triggers"]]


# -- the fast paths (orjson parsing and measuring) give the stdlib's answers at their edges ----
class TestSameAnswersAsTheStdlib:
    def test_integer_beyond_64_bits_stays_an_integer(self, client: TestClient) -> None:
        """A 30-digit timestamp is an integer, as json.loads reads it (orjson would make it a
        float and the check would refuse it), and is logged as that integer."""
        body = (
            '{"batch":[{"type":"person","identifiers":{"id":"u1"},"action":"event","name":"e",'
            f'"timestamp":{10**29}}}]}}'
        )
        response = client.post("/api/v2/batch", content=body, auth=TRACK)
        assert (response.status_code, response.json()) == (200, {})
        logged = client.get("/_sandbox/requests").json()[-1]["body"]["batch"][0]["timestamp"]
        assert logged == 10**29 and isinstance(logged, int)

    def test_nan_is_taken_as_before(self, client: TestClient) -> None:
        """NaN is not JSON, but the stdlib takes it: the check sees a float, not invalid JSON."""
        body = (
            '{"batch":[{"type":"person","identifiers":{"id":"u1"},"action":"event","name":"e",'
            '"timestamp":NaN}]}'
        )
        response = client.post("/api/v2/batch", content=body, auth=TRACK)
        assert response.status_code == 207
        assert response.json()["errors"][0]["field"] == "timestamp"

    def test_float_values_are_measured_as_python_writes_them(self, client: TestClient) -> None:
        """An attribute value is measured as Python's compact JSON: 1e-07 takes 5 bytes there
        (orjson writes 1e-7, 4). A list exactly at 1000 bytes passes, one byte more fails."""
        for pad, status in ((96, 200), (97, 207)):
            value = [1e-07] * 150 + ["x" * pad]  # 6 * 150 + pad + 4 bytes: 1000, then 1001
            assert len(json.dumps(value, separators=(",", ":"))) == 904 + pad
            op = person_op(attributes={"v": value})
            response = client.post("/api/v2/batch", json={"batch": [op]}, auth=TRACK)
            assert response.status_code == status

    def test_request_log_of_floats_reads_back_the_same(self, client: TestClient) -> None:
        """The request log, rendered by orjson, holds the very floats that were sent."""
        values = [3.5608238039453e-05, 1e16, -0.0, 0.1, 1.7976931348623157e308, 5e-324]
        op = person_op("event", name="e", id=ULID, attributes={"f": values})
        client.post("/api/v2/batch", json={"batch": [op]}, auth=TRACK)
        logged = client.get("/_sandbox/requests").json()[-1]["body"]["batch"][0]["attributes"]["f"]
        assert [repr(v) for v in logged] == [repr(v) for v in values]
        assert not any(math.isnan(v) for v in logged)
