"""Several processes sharing one bucket never exceed the limit at the server (real sandbox)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cio_worker.dev import RedisServer, SandboxProcess

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def sandbox_url() -> Iterator[str]:
    with SandboxProcess() as sandbox:
        yield sandbox.url


class TestFleet:
    def test_two_processes_stay_under_the_limit(
        self, sandbox_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two processes x three threads at full speed: no 429, never over 100 in any second."""
        # The benchmark's worker loop; spawned children inherit this sys.path.
        monkeypatch.syspath_prepend(str(BENCH))
        from limiter import _run_process

        with RedisServer(tmp_path / "redis") as server:
            # A wider margin than production's 0.97 keeps this test steady on a loaded CI box;
            # bench/limiter.py measures the default.
            env = {"CIO_WORKER_REDIS_URL": server.url, "CIO_WORKER_SANDBOX_URL": sandbox_url,
                   "CIO_WORKER_RATE_MARGIN": "0.9"}  # fmt: skip
            ctx = multiprocessing.get_context("spawn")
            queue = ctx.Queue()
            procs = [ctx.Process(target=_run_process, args=(env, "track", 3, 4.0, queue))
                     for _ in range(2)]  # fmt: skip
            for proc in procs:
                proc.start()
            results = [queue.get(timeout=60) for _ in procs]
            for proc in procs:
                proc.join(timeout=30)
        stats = httpx.get(f"{sandbox_url}/_sandbox/stats", timeout=5).json()["families"]["track"]
        records = httpx.get(f"{sandbox_url}/_sandbox/requests", timeout=30).json()
        arrivals = sorted(r["t"] for r in records if r["status"] == 200)
        rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
        assert stats["rate_limited"] == 0
        assert all(r["429"] == 0 for r in results)
        assert stats["max_in_window"] <= 100
        assert 75 <= rate <= 100  # close to 0.9 x 100, and never above the limit
        assert min(r["sent"] for r in results) > 0  # both processes were served


class TestCeleryFleet:
    def test_two_workers_send_1500_emails_and_3_broadcasts_within_every_limit(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Issue 4's acceptance run with real worker processes: all delivered, no 429, never more
        than 100 transactional arrivals in a second, broadcasts at least 10 s apart.

        Utilisation is a speed figure, measured by `bench/limiter.py --celery`, not asserted."""
        monkeypatch.syspath_prepend(str(BENCH))
        from celery_fleet import run_fleet

        # Margin 0.9 instead of 0.97: a CI box running other suites beside this one stalls
        # processes long enough that arrivals bunch past the default margin (measured here: one
        # 429 at 0.93 with a second test suite running). bench/limiter.py --celery measures 0.97.
        figures = run_fleet(tmp_path, transactional=1500, broadcasts=3, workers=2, margin="0.9")
        print(figures.report())
        assert figures.delivered == 1503
        assert figures.rate_limited == 0
        assert figures.max_in_window <= 100
        assert len(figures.broadcast_gaps_s) == 2
        assert min(figures.broadcast_gaps_s) >= 10.0
        assert min(figures.per_worker) > 0  # both workers took part
