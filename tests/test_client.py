"""customerio/_http.py: credentials, headers and URLs of each API family; each answer mapped to one
outcome.

HTTP is faked only with `httpx.MockTransport`; no request leaves the process.
"""

from __future__ import annotations

import base64
import calendar
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime, formatdate

import httpx
import pytest

import cio_worker
from cio_worker.config import Settings
from cio_worker.customerio import Answer
from cio_worker.customerio._answers import BODY_EXCERPT_CHARS, parse_retry_after
from cio_worker.customerio._http import CustomerIoClient
from cio_worker.customerio._operations import HttpOperation
from cio_worker.errors import (
    AuthError,
    ConfigError,
    DeliveryError,
    PermanentError,
    RateLimitedError,
    RejectedError,
    RetryableError,
    ServerError,
    TransportError,
)

SITE_ID = "site-3141"
TRACK_KEY = "trk-key-SECRET-a1b2c3"
APP_KEY = "app-key-SECRET-d4e5f6"
PIPELINES_KEY = "cdp-key-SECRET-g7h8i9"
KEYS = (TRACK_KEY, APP_KEY, PIPELINES_KEY)

SETTINGS = Settings(
    site_id=SITE_ID,
    track_api_key=TRACK_KEY,
    app_api_key=APP_KEY,
    pipelines_api_key=PIPELINES_KEY,
    track_url="https://track.example.test",
    app_url="https://app.example.test:8443",
    pipelines_url="https://cdp.example.test",
)

OPS: dict[str, HttpOperation] = {
    "track": HttpOperation("track", "track", "PUT", "/api/v1/customers/u-1", {"plan": "pro"}),
    "app": HttpOperation(
        "app",
        "transactional",
        "POST",
        "/v1/send/email",
        {"transactional_message_id": 1, "identifiers": {"id": "u-1"}, "to": "a@example.test"},
    ),
    "pipelines": HttpOperation(
        "pipelines",
        "pipelines",
        "POST",
        "/v1/identify",
        {"userId": "u-1", "traits": {"plan": "pro"}},
        headers={"X-Strict-Mode": "1"},
    ),
}
APIS = list(OPS)

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that remembers every request and answers with `respond`."""

    def __init__(self, respond: Handler) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.respond(request)


@pytest.fixture
def make_client() -> Iterator[Callable[..., tuple[CustomerIoClient, Recorder]]]:
    """Factory: a client over a recording mock transport; every client is closed afterwards."""
    clients: list[CustomerIoClient] = []

    def make(
        respond: Handler | None = None, settings: Settings = SETTINGS
    ) -> tuple[CustomerIoClient, Recorder]:
        recorder = Recorder(respond or (lambda request: httpx.Response(200, json={})))
        client = CustomerIoClient(settings, transport=httpx.MockTransport(recorder))
        clients.append(client)
        return client, recorder

    yield make
    for client in clients:
        client.close()


def answer(status: int, **kwargs: object) -> Handler:
    return lambda request: httpx.Response(status, **kwargs)  # type: ignore[arg-type]


def raise_(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def assert_no_secret(exc: BaseException) -> None:
    """No key, nor a header built from one, appears anywhere in the error's text."""
    texts = [str(exc), repr(exc), repr(exc.args), str(getattr(exc, "body_excerpt", ""))]
    forms = [*KEYS, basic(SITE_ID, TRACK_KEY), basic(PIPELINES_KEY, ""), f"Bearer {APP_KEY}"]
    for text in texts:
        for secret in forms:
            assert secret not in text, f"{secret!r} leaked into {text!r}"
        for secret in (basic(SITE_ID, TRACK_KEY), basic(PIPELINES_KEY, "")):
            assert secret.removeprefix("Basic ") not in text


class TestAuthentication:
    def test_track_uses_basic_site_id_and_track_key(self, make_client: Callable) -> None:
        """Track requests carry HTTP Basic `site_id:track_key`."""
        client, seen = make_client()
        client.send(OPS["track"])
        assert seen.requests[0].headers["Authorization"] == basic(SITE_ID, TRACK_KEY)

    def test_app_uses_bearer_app_key(self, make_client: Callable) -> None:
        """App API requests carry `Bearer <app key>`."""
        client, seen = make_client()
        client.send(OPS["app"])
        assert seen.requests[0].headers["Authorization"] == f"Bearer {APP_KEY}"

    def test_pipelines_uses_basic_key_with_empty_password(self, make_client: Callable) -> None:
        """Pipelines requests carry HTTP Basic `<write key>:` with an empty password."""
        client, seen = make_client()
        client.send(OPS["pipelines"])
        scheme, _, token = seen.requests[0].headers["Authorization"].partition(" ")
        assert scheme == "Basic"
        assert base64.b64decode(token).decode() == f"{PIPELINES_KEY}:"

    @pytest.mark.parametrize(
        ("api", "missing", "variable"),
        [
            ("track", {"site_id": None}, "CUSTOMERIO_SITE_ID"),
            ("track", {"track_api_key": None}, "CUSTOMERIO_TRACK_API_KEY"),
            ("app", {"app_api_key": None}, "CUSTOMERIO_APP_API_KEY"),
            ("pipelines", {"pipelines_api_key": None}, "CUSTOMERIO_PIPELINES_API_KEY"),
        ],
    )
    def test_missing_credential_is_a_config_error_naming_the_variable(
        self, make_client: Callable, api: str, missing: dict[str, None], variable: str
    ) -> None:
        """A missing credential raises ConfigError naming the variable, and nothing is sent."""
        client, seen = make_client(settings=SETTINGS.replace(**missing))
        with pytest.raises(ConfigError, match=variable) as caught:
            client.send(OPS[api])
        assert seen.requests == []
        assert_no_secret(caught.value)

    def test_each_family_needs_only_its_own_credential(self, make_client: Callable) -> None:
        """A missing App key does not stop Track or Pipelines requests."""
        client, seen = make_client(settings=SETTINGS.replace(app_api_key=None))
        client.send(OPS["track"])
        client.send(OPS["pipelines"])
        assert len(seen.requests) == 2


class TestRequest:
    @pytest.mark.parametrize("api", APIS)
    def test_user_agent_names_cio_worker_and_its_version(
        self, make_client: Callable, api: str
    ) -> None:
        """Every request's User-Agent names cio-worker and the installed version."""
        client, seen = make_client()
        client.send(OPS[api])
        assert f"cio-worker/{cio_worker.__version__}" in seen.requests[0].headers["User-Agent"]

    @pytest.mark.parametrize(
        ("api", "url"),
        [
            ("track", "https://track.example.test/api/v1/customers/u-1"),
            ("app", "https://app.example.test:8443/v1/send/email"),
            ("pipelines", "https://cdp.example.test/v1/identify"),
        ],
    )
    def test_url_is_the_family_base_from_settings_plus_path(
        self, make_client: Callable, api: str, url: str
    ) -> None:
        """Each family goes to its own base URL from Settings, with the operation's method."""
        client, seen = make_client()
        client.send(OPS[api])
        request = seen.requests[0]
        assert str(request.url) == url
        assert request.method == OPS[api].method

    @pytest.mark.parametrize("api", APIS)
    def test_body_is_sent_as_json(self, make_client: Callable, api: str) -> None:
        """The operation's body is sent as JSON with a JSON content type."""
        client, seen = make_client()
        client.send(OPS[api])
        request = seen.requests[0]
        assert request.headers["Content-Type"] == "application/json"
        assert json.loads(request.content) == OPS[api].json

    def test_non_ascii_body_survives(self, make_client: Callable) -> None:
        """Unicode in the body arrives intact."""
        client, seen = make_client()
        op = HttpOperation("track", "track", "PUT", "/api/v1/customers/u", {"name": "Zoë 🙂"})
        client.send(op)
        assert json.loads(seen.requests[0].content) == {"name": "Zoë 🙂"}

    def test_bodiless_operation_sends_no_body(self, make_client: Callable) -> None:
        """An operation without a body (DELETE) sends an empty body."""
        client, seen = make_client()
        client.send(HttpOperation("track", "track", "DELETE", "/api/v1/customers/u-1"))
        assert seen.requests[0].method == "DELETE"
        assert seen.requests[0].content == b""

    def test_operation_headers_are_sent(self, make_client: Callable) -> None:
        """Headers of the operation (Pipelines' X-Strict-Mode) go out with the request."""
        client, seen = make_client()
        client.send(OPS["pipelines"])
        assert seen.requests[0].headers["X-Strict-Mode"] == "1"

    def test_operation_headers_cannot_replace_authorization(self, make_client: Callable) -> None:
        """The client's Authorization wins over any in the operation's headers."""
        client, seen = make_client()
        op = HttpOperation(
            "app", "app", "POST", "/v1/x", {}, headers={"Authorization": "Bearer other"}
        )
        client.send(op)
        assert seen.requests[0].headers["Authorization"] == f"Bearer {APP_KEY}"


class TestSuccess:
    @pytest.mark.parametrize("status", [200, 201, 202])
    def test_2xx_is_delivered_with_parsed_body(self, make_client: Callable, status: int) -> None:
        """Any 2xx returns Answer with the status and the parsed JSON body."""
        client, _ = make_client(answer(status, json={"delivery_id": "d1", "queued_at": 1}))
        result = client.send(OPS["app"], job_id="J1")
        assert isinstance(result, Answer)
        assert result.status_code == status
        assert result.body == {"delivery_id": "d1", "queued_at": 1}
        assert result.elapsed_s >= 0

    def test_empty_body_is_none(self, make_client: Callable) -> None:
        """A 2xx without a body (204) has body None."""
        client, _ = make_client(answer(204))
        assert client.send(OPS["track"]).body is None

    def test_non_json_body_is_none(self, make_client: Callable) -> None:
        """A 2xx whose body is not JSON still counts as delivered, with body None."""
        client, _ = make_client(answer(200, text="OK"))
        result = client.send(OPS["track"])
        assert (result.status_code, result.body) == (200, None)


class TestRateLimited:
    def test_429_with_retry_after_seconds(self, make_client: Callable) -> None:
        """429 raises RateLimitedError carrying Retry-After seconds, status and job id."""
        client, _ = make_client(answer(429, headers={"Retry-After": "7"}, text="slow down"))
        with pytest.raises(RateLimitedError) as caught:
            client.send(OPS["app"], job_id="J1")
        exc = caught.value
        assert isinstance(exc, RetryableError)
        assert (exc.retry_after_seconds, exc.status_code, exc.job_id) == (7.0, 429, "J1")
        assert exc.body_excerpt == "slow down"

    def test_429_with_retry_after_http_date(self, make_client: Callable) -> None:
        """An HTTP-date Retry-After becomes the seconds from now until that date."""
        when = formatdate(time.time() + 120, usegmt=True)
        client, _ = make_client(answer(429, headers={"Retry-After": when}))
        with pytest.raises(RateLimitedError) as caught:
            client.send(OPS["track"])
        assert caught.value.retry_after_seconds is not None
        assert 100 < caught.value.retry_after_seconds <= 120

    def test_429_without_retry_after(self, make_client: Callable) -> None:
        """A 429 without Retry-After carries no hint (the caller picks the delay)."""
        client, _ = make_client(answer(429))
        with pytest.raises(RateLimitedError) as caught:
            client.send(OPS["track"])
        assert caught.value.retry_after_seconds is None


class TestServerErrors:
    @pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
    def test_408_and_5xx_are_retryable_server_errors(
        self, make_client: Callable, status: int
    ) -> None:
        """408 and 5xx raise ServerError, a RetryableError, with the status and job id."""
        client, _ = make_client(answer(status, text="oops"))
        with pytest.raises(ServerError) as caught:
            client.send(OPS["track"], job_id="J2")
        exc = caught.value
        assert isinstance(exc, RetryableError) and not isinstance(exc, PermanentError)
        assert (exc.status_code, exc.job_id, exc.body_excerpt) == (status, "J2", "oops")

    def test_503_retry_after_is_kept(self, make_client: Callable) -> None:
        """A 503's Retry-After is passed on as the retry hint."""
        client, _ = make_client(answer(503, headers={"Retry-After": "30"}))
        with pytest.raises(ServerError) as caught:
            client.send(OPS["pipelines"])
        assert caught.value.retry_after_seconds == 30.0


class TestAuthErrors:
    @pytest.mark.parametrize("status", [401, 403])
    @pytest.mark.parametrize(
        ("api", "variables"),
        [
            ("track", ["CUSTOMERIO_SITE_ID", "CUSTOMERIO_TRACK_API_KEY"]),
            ("app", ["CUSTOMERIO_APP_API_KEY"]),
            ("pipelines", ["CUSTOMERIO_PIPELINES_API_KEY"]),
        ],
    )
    def test_401_403_name_the_family_and_variables_not_the_key(
        self, make_client: Callable, status: int, api: str, variables: list[str]
    ) -> None:
        """401/403 raise a permanent AuthError naming the family and variables, never the key."""
        client, _ = make_client(answer(status, json={"meta": {"error": "Unauthorized"}}))
        with pytest.raises(AuthError) as caught:
            client.send(OPS[api], job_id="J3")
        exc = caught.value
        assert isinstance(exc, PermanentError)
        assert (exc.credential, exc.status_code, exc.job_id) == (api, status, "J3")
        for variable in variables:
            assert variable in str(exc)
        assert_no_secret(exc)


class TestRejected:
    @pytest.mark.parametrize("status", [400, 404, 413, 422])
    def test_other_4xx_are_rejected_with_the_body(self, make_client: Callable, status: int) -> None:
        """400/404/413/422 raise a permanent RejectedError quoting the response body."""
        body = '{"meta":{"error":"name is required"}}'
        client, _ = make_client(answer(status, text=body))
        with pytest.raises(RejectedError) as caught:
            client.send(OPS["track"], job_id="J4")
        exc = caught.value
        assert isinstance(exc, PermanentError)
        assert (exc.status_code, exc.job_id, exc.body_excerpt) == (status, "J4", body)
        assert "name is required" in str(exc)

    def test_body_excerpt_is_truncated_to_500_chars(self, make_client: Callable) -> None:
        """A long error body is cut to 500 characters, in the attribute and in the message."""
        body = "x" * BODY_EXCERPT_CHARS + "TAIL-NOT-KEPT"
        client, _ = make_client(answer(400, text=body))
        with pytest.raises(RejectedError) as caught:
            client.send(OPS["app"])
        assert BODY_EXCERPT_CHARS == 500
        assert caught.value.body_excerpt == "x" * 500
        assert "TAIL" not in str(caught.value)


class TestTransportErrors:
    @pytest.mark.parametrize(
        ("exc", "sent"),
        [
            (httpx.ConnectError("connection refused"), False),
            (httpx.ConnectTimeout("connect timed out"), False),
            (httpx.PoolTimeout("no free connection"), False),
            (httpx.ReadTimeout("read timed out"), True),
            (httpx.WriteTimeout("write timed out"), True),
            (httpx.RemoteProtocolError("server hung up"), True),
        ],
    )
    def test_failures_say_whether_the_request_may_have_been_sent(
        self, make_client: Callable, exc: Exception, sent: bool
    ) -> None:
        """Connect-phase failures mean nothing was sent; later ones leave the outcome unknown."""
        client, _ = make_client(raise_(exc))
        with pytest.raises(TransportError) as caught:
            client.send(OPS["app"], job_id="J5")
        assert caught.value.request_sent is sent
        assert caught.value.job_id == "J5"
        assert caught.value.__cause__ is exc
        assert isinstance(caught.value, RetryableError)


class TestRedirects:
    def test_redirect_is_not_followed(self, make_client: Callable) -> None:
        """A 301 to another host is not followed, so our Authorization never reaches it."""

        def respond(request: httpx.Request) -> httpx.Response:
            if request.url.host != "track.example.test":
                return httpx.Response(200, json={})
            return httpx.Response(301, headers={"Location": "https://evil.example.test/steal"})

        client, seen = make_client(respond)
        with pytest.raises(DeliveryError) as caught:
            client.send(OPS["track"])
        assert len(seen.requests) == 1
        assert seen.requests[0].url.host == "track.example.test"
        assert caught.value.status_code == 301
        assert isinstance(caught.value, PermanentError)


ERROR_ANSWERS: list[tuple[str, Handler]] = [
    ("429", answer(429, headers={"Retry-After": "1"}, text="rate")),
    ("500", answer(500, text="boom")),
    ("401", answer(401, text="no")),
    ("403", answer(403, text="no")),
    ("400", answer(400, text="bad")),
    ("404", answer(404, text="missing")),
    ("301", answer(301, headers={"Location": "https://elsewhere.test/"})),
    ("connect", raise_(httpx.ConnectError("refused"))),
    ("read-timeout", raise_(httpx.ReadTimeout("timed out"))),
    ("connect-timeout", raise_(httpx.ConnectTimeout("timed out"))),
]


class TestSecrets:
    @pytest.mark.parametrize("api", APIS)
    @pytest.mark.parametrize(("case", "respond"), ERROR_ANSWERS, ids=[c for c, _ in ERROR_ANSWERS])
    def test_no_error_message_contains_a_key(
        self, make_client: Callable, api: str, case: str, respond: Handler
    ) -> None:
        """Whatever goes wrong, no credential appears in the raised error."""
        client, _ = make_client(respond)
        with pytest.raises(DeliveryError) as caught:
            client.send(OPS[api], job_id="J6")
        assert_no_secret(caught.value)


class TestParseRetryAfter:
    NOW = calendar.timegm((2015, 10, 21, 7, 28, 0))

    def headers(self, value: str | None) -> httpx.Headers:
        return httpx.Headers({} if value is None else {"Retry-After": value})

    @pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("120", 120.0), (" 5 ", 5.0)])
    def test_delta_seconds(self, value: str, seconds: float) -> None:
        """Delta-seconds are returned as float seconds."""
        assert parse_retry_after(self.headers(value), now=self.NOW) == seconds

    @pytest.mark.parametrize(
        "value",
        [
            "Wed, 21 Oct 2015 07:28:30 GMT",  # IMF-fixdate
            "Wednesday, 21-Oct-15 07:28:30 GMT",  # RFC 850
        ],
    )
    def test_http_date_is_seconds_from_now(self, value: str) -> None:
        """An HTTP-date is the time from `now` until then."""
        assert parse_retry_after(self.headers(value), now=self.NOW) == 30.0

    def test_http_date_from_datetime(self) -> None:
        """A date produced by the stdlib's HTTP formatter round-trips."""
        when = format_datetime(datetime(2015, 10, 21, 7, 30, 0, tzinfo=UTC), usegmt=True)
        assert parse_retry_after(self.headers(when), now=self.NOW) == 120.0

    def test_past_date_is_zero(self) -> None:
        """A date already past means retry now: 0, never negative."""
        past = "Wed, 21 Oct 2015 07:00:00 GMT"
        assert parse_retry_after(self.headers(past), now=self.NOW) == 0.0

    @pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5", "Wed, 99 Foo 2015"])
    def test_absent_or_invalid_is_none(self, value: str | None) -> None:
        """No header, or one that is neither delta-seconds nor an HTTP-date, gives None."""
        assert parse_retry_after(self.headers(value), now=self.NOW) is None

    @pytest.fixture
    def local_time_five_hours_behind_utc(self) -> Iterator[None]:
        """The process's local zone is UTC-5 (POSIX TZ, no tz database needed) for one test."""
        saved = os.environ.get("TZ")
        os.environ["TZ"] = "EST+05"
        time.tzset()
        try:
            yield
        finally:
            if saved is None:
                del os.environ["TZ"]
            else:
                os.environ["TZ"] = saved
            time.tzset()

    @pytest.mark.usefixtures("local_time_five_hours_behind_utc")
    def test_asctime_date_is_utc_whatever_the_local_zone(self) -> None:
        """The obsolete asctime form, which HTTP recipients must accept, is read as UTC."""
        assert parse_retry_after(self.headers("Wed Oct 21 07:28:30 2015"), now=self.NOW) == 30.0
