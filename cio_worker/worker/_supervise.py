"""`cio-worker worker`: run a Celery worker as a child process and start it again if it dies.

A worker can die (OOM, a crash inside kombu after a Redis restart) or stop itself because its
consumer stalled (_watchdog.py, exit status 75). Under systemd or Kubernetes the platform restarts
it; `cio-worker worker` does the same wherever it runs, so a laptop or a plain VM gets the same
behaviour. SIGTERM and SIGINT go to the child (a warm shutdown: running jobs finish), and then
the supervisor exits with the child's status instead of restarting it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

from cio_worker import logs
from cio_worker.worker._watchdog import EXIT_STALLED

#: Exit statuses that mean "do not try again": a configuration error (ops/_preflight.py exits 2) or
#: a usage error (64). Not 1: Celery exits 1 on crashes worth a restart (kombu after a Redis
#: restart: "Unrecoverable error: AttributeError ... 'hostname'").
FATAL_EXIT_CODES = frozenset({2, 64})
#: Restart delay doubles from the first to the cap, and resets once a child stays up a minute.
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
STABLE_AFTER_S = 60.0

log = logs.get_logger(__name__)


def worker_command(extra: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "cio_worker",
        "worker",
        "--task-events",
        "--loglevel",
        "INFO",
        *extra,
    ]


def supervise(
    command: Sequence[str],
    *,
    spawn: Callable[[Sequence[str]], subprocess.Popen[bytes]] = subprocess.Popen,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run `command` until it exits on request or with a fatal status; return that status."""
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    delay = FIRST_DELAY_S
    try:
        while True:
            started = time.monotonic()
            child = spawn(command)
            status = child.wait()
            if stopping:
                return 0 if status in (0, -signal.SIGTERM, -signal.SIGINT) else status
            if status in FATAL_EXIT_CODES:
                return status
            if time.monotonic() - started >= STABLE_AFTER_S:
                delay = FIRST_DELAY_S
            reason = "consumer stalled" if status == EXIT_STALLED else "worker exited"
            log.warning("worker_restarting", status=status, reason=reason, in_s=delay)
            sleep(delay)
            if stopping:
                return 0
            delay = min(delay * 2, MAX_DELAY_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
