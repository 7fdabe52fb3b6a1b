"""bench/batch_fill.py: a real redis-server, a backlog taken and built as a sender does it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cio_worker.customerio import REQUEST_LIMIT_BYTES

BENCH = Path(__file__).resolve().parents[1] / "bench" / "batch_fill.py"

pytestmark = pytest.mark.integration


def _figures(*args: str) -> dict[str, int]:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--events", "20000", "--people", "1", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    found = re.search(r"([\d,]+) events in (\d+) requests.*largest ([\d,]+)", result.stdout, re.S)
    assert found, result.stdout
    sent, requests, largest = (int(g.replace(",", "")) for g in found.groups())
    assert sent == 20_000  # every job taken, once
    return {"requests": requests, "largest": largest}


def test_track_counts_its_own_slack_and_needs_fewer_requests() -> None:
    """Track v2 counts 56 bytes an item, not the 96 Pipelines needs: fuller batches."""
    assert _figures()["requests"] < _figures("--slack", "96")["requests"]


def test_bodies_that_outgrow_the_take_are_trimmed_to_the_limit() -> None:
    """Pipelines pages copy their URL; counted with no slack at all, every body would pass the
    request limit, and each is trimmed to fit instead."""
    figures = _figures("--api", "pipelines", "--kind", "page", "--slack", "0")
    assert figures["largest"] <= REQUEST_LIMIT_BYTES
