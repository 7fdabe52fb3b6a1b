"""`cio-worker worker`'s supervisor: restart a dead or stalled worker, stop on request."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from cio_worker.worker._supervise import supervise
from cio_worker.worker._watchdog import EXIT_STALLED


def script(code: str) -> list[str]:
    return [sys.executable, "-c", code]


class TestSupervise:
    def test_a_stalled_or_crashed_worker_is_started_again(self) -> None:
        """Exit 75 (stalled) and a SIGKILL both lead to a new child; a fatal status ends it."""
        statuses = iter(
            [
                f"raise SystemExit({EXIT_STALLED})",
                "import os; os.kill(os.getpid(), 9)",
                "raise SystemExit(1)",
                "raise SystemExit(2)",
            ]
        )
        spawned: list[Sequence[str]] = []
        delays: list[float] = []

        def spawn(_command: Sequence[str]) -> subprocess.Popen[bytes]:
            command = script(next(statuses))
            spawned.append(command)
            return subprocess.Popen(command)

        assert supervise(["ignored"], spawn=spawn, sleep=delays.append) == 2
        assert len(spawned) == 4  # exit 1 (Celery's crash after a Redis restart) is restarted
        assert delays == [1.0, 2.0, 4.0]

    def test_sigterm_is_forwarded_and_ends_the_loop(self, tmp_path) -> None:
        """SIGTERM reaches the child (a warm shutdown) and the supervisor does not restart it."""
        marker = tmp_path / "got-term"
        child_code = (
            "import signal, sys, time, pathlib\n"
            f"def on_term(*_):\n    pathlib.Path({str(marker)!r}).write_text('1'); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, on_term)\n"
            "time.sleep(30)\n"
        )
        supervisor = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from cio_worker.worker._supervise import supervise; "
                f"sys.exit(supervise({script(child_code)!r}))",
            ],
        )
        time.sleep(1.5)
        os.kill(supervisor.pid, signal.SIGTERM)
        assert supervisor.wait(timeout=20) == 0
        assert marker.read_text() == "1"
