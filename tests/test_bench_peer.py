"""bench/peer.py: the official `customerio` package against the real sandbox, and its figures
checked against the sandbox's own record."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from cio_worker.dev import SandboxProcess
from cio_worker.errors import ConfigError

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def peer(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """bench/peer.py, imported the way bench/throughput.py does (bench/ on sys.path)."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("peer")


@pytest.fixture
def sandbox_url() -> Iterator[str]:
    with SandboxProcess() as sandbox:
        yield sandbox.url


def _stats(url: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{url}/_sandbox/stats", timeout=10).json()
    return stats


class TestClient:
    def test_points_the_package_at_a_plain_http_sandbox(self, peer: ModuleType) -> None:
        client = peer.peer_client("http://127.0.0.1:8765")
        try:
            assert client.base_url == "http://127.0.0.1:8765/api/v1"
            # The package's own retry policy serves the http:// URL, unchanged.
            retry = client.http.get_adapter("http://127.0.0.1:8765/").max_retries
            assert (retry.total, retry.status_forcelist) == (3, [500, 502, 503, 504])
        finally:
            client.close()

    def test_an_https_sandbox_uses_the_package_unchanged(self, peer: ModuleType) -> None:
        client = peer.peer_client("https://localhost:9443")
        assert type(client).__module__ == "customerio.track"
        assert client.base_url == "https://localhost:9443/api/v1"

    @pytest.mark.parametrize(
        ("url", "words"),
        [
            ("https://track.customer.io", "loopback"),
            ("ftp://127.0.0.1:1", "loopback"),
            ("http://127.0.0.1:1/api", "no path"),
            ("http://127.0.0.1:99999", "not a valid URL"),
        ],
    )
    def test_refuses_anything_but_a_loopback_sandbox(
        self, peer: ModuleType, url: str, words: str
    ) -> None:
        with pytest.raises(ConfigError, match=f"sandbox_url: .*{words}"):
            peer.run_peer(url, 1)

    @pytest.mark.parametrize(
        ("events", "threads", "message"),
        [
            (0, 1, "events: must be a whole number of at least 1"),
            (1.5, 1, "events: must be a whole number"),
            (10, 0, "threads: must be a whole number of at least 1"),
            (10, 65, "threads: must be at most 64"),
        ],
    )
    def test_bad_counts_are_named(
        self, peer: ModuleType, events: Any, threads: int, message: str
    ) -> None:
        with pytest.raises(ConfigError, match=message):
            peer.run_peer("http://127.0.0.1:1", events, threads=threads)


class TestErrorKinds:
    def test_keeps_the_status_and_drops_the_event_data(self, peer: ModuleType) -> None:
        from customerio import CustomerIOException

        exc = CustomerIOException('429: http://127.0.0.1/x {"email": "a@example.com"} {}')
        assert peer._error_kind(exc) == "CustomerIOException (HTTP 429)"

    def test_names_the_cause(self, peer: ModuleType) -> None:
        from customerio import CustomerIOException
        from requests.exceptions import RetryError

        try:
            try:
                raise RetryError("too many 429 error responses")
            except RetryError as cause:
                raise CustomerIOException("Failed to receive valid response") from cause
        except CustomerIOException as exc:
            assert peer._error_kind(exc) == "CustomerIOException <- RetryError"


@pytest.mark.integration
class TestAgainstTheSandbox:
    @pytest.mark.parametrize("threads", [1, 4])
    def test_figures_match_the_sandboxs_record(
        self, peer: ModuleType, sandbox_url: str, threads: int
    ) -> None:
        """300 events at full speed through a 100/s limit: 429s, retried after Retry-After."""
        figures = peer.run_peer(sandbox_url, 300, threads=threads)
        stats = _stats(sandbox_url)
        track = stats["families"]["track"]

        assert figures.events == 300
        assert 0 < figures.accepted <= figures.events
        # Every event either reached the sandbox or surfaced as an exception from `track`.
        assert figures.lost == sum(figures.errors.values())
        assert figures.duplicates == 0
        # The figures are the sandbox's own: this run was its only traffic.
        assert figures.requests == stats["requests"]
        assert figures.rate_limited == track["rate_limited"] > 0
        assert figures.accepted == track["accepted"]
        assert figures.statuses == {int(k): v for k, v in stats["by_status"].items()}
        assert figures.requests == sum(figures.statuses.values())
        # Arrival times (figures) and the limiter's clock (stats) may place a request or two
        # in different windows.
        assert abs(figures.max_accepted_in_window - track["max_in_window"]) <= 2
        assert figures.max_requests_in_window >= figures.max_accepted_in_window
        assert figures.seconds > 0
        assert figures.events_per_s == pytest.approx(figures.accepted / figures.seconds)
        report = figures.report()
        assert f"accepted {figures.accepted} of 300" in report
        assert f"429s: {figures.rate_limited}" in report
        assert "customerio 3." in report

    def test_finds_the_end_of_the_log_without_reading_it(
        self, peer: ModuleType, sandbox_url: str
    ) -> None:
        auth = ("sandbox-site", "sandbox-track-key")
        with httpx.Client(base_url=sandbox_url, auth=auth) as client:
            assert peer._last_seq(client) == 0
            for n in range(37):
                client.put(f"/api/v1/customers/p{n}", json={"plan": "pro"})
                assert peer._last_seq(client) == n + 1

    def test_counts_only_its_own_run(self, peer: ModuleType, sandbox_url: str) -> None:
        """Traffic already in the sandbox (ours, another client's) is not the peer's."""
        auth = ("sandbox-site", "sandbox-track-key")
        for n in range(5):
            response = httpx.put(
                f"{sandbox_url}/api/v1/customers/other{n}", json={"plan": "pro"}, auth=auth
            )
            assert response.status_code == 200
        first = peer.run_peer(sandbox_url, 120)
        before = _stats(sandbox_url)["requests"]
        second = peer.run_peer(sandbox_url, 60)
        after = _stats(sandbox_url)

        assert first.requests == before - 5
        assert second.requests == after["requests"] - before
        assert first.accepted + second.accepted + 5 == after["families"]["track"]["accepted"]

    def test_without_retry_after_a_429_is_a_lost_event(self, peer: ModuleType) -> None:
        """The package retries a 429 only when Retry-After comes with it; otherwise it raises."""
        with peer.sandbox_url(retry_after=False) as url:
            figures = peer.run_peer(url, 300)
            track = _stats(url)["families"]["track"]

        assert figures.rate_limited == track["rate_limited"] > 0
        assert figures.requests == figures.events  # not one retry
        assert figures.lost == figures.rate_limited
        assert figures.errors == {"CustomerIOException (HTTP 429)": figures.lost}
        assert f"lost {figures.lost}" in figures.report()
