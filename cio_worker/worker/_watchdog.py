"""A consumer watchdog: a worker that is alive but no longer consuming exits, to be restarted.

After a Redis restart a Celery 5 worker usually reconnects, but users report workers that stay up
and stop consuming (celery#8030, #10205, #10302); a process supervisor cannot see that, since the
process is alive. The symptom is plain from outside Celery: this process has no task running and
has started none for `stall_after_s`, while a queue it consumes has had messages all that time.
Then the watchdog logs why and stops the process (SIGTERM, then a hard exit if Celery hangs),
and the supervisor (`cio-worker worker`, systemd, Kubernetes) starts a fresh one. Jobs are safe
meanwhile: the ledger holds them and the sweeper re-pushes any a dead worker held.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import redis

from cio_worker import logs

#: Idle with work waiting for this long means the consumer is stuck. A healthy idle worker takes
#: a waiting message within milliseconds, so a minute is far beyond any honest pause.
WATCHDOG_STALL_S = 60.0
#: Exit status that tells `cio-worker worker` to start the worker again.
EXIT_STALLED = 75
#: After SIGTERM, how long Celery gets to shut down before the process exits hard.
HARD_EXIT_AFTER_S = 30.0

log = logs.get_logger(__name__)


def _stop_process() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    timer = threading.Timer(HARD_EXIT_AFTER_S, os._exit, args=(EXIT_STALLED,))
    timer.daemon = True
    timer.start()


class ConsumerWatchdog:
    """Counts running tasks and notices when a consumed queue waits on an idle worker."""

    def __init__(
        self,
        *,
        stall_after_s: float = WATCHDOG_STALL_S,
        on_stall: Callable[[], None] = _stop_process,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stall_after_s = stall_after_s
        self.on_stall = on_stall
        self.clock = clock
        self._lock = threading.Lock()
        self._running = 0
        self._last_start = clock()
        self._waiting_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._redis: redis.Redis | None = None
        self._queues: list[str] = []

    def task_started(self) -> None:
        with self._lock:
            self._running += 1
            self._last_start = self.clock()

    def task_finished(self) -> None:
        with self._lock:
            self._running -= 1

    def check(self, waiting_messages: int) -> bool:
        """One observation; returns True (and calls `on_stall`) when the consumer is stuck."""
        now = self.clock()
        with self._lock:
            idle = self._running == 0
            last_start = self._last_start
        if waiting_messages == 0 or not idle:
            self._waiting_since = None
            return False
        if self._waiting_since is None:
            self._waiting_since = now
        stuck_for = min(now - self._waiting_since, now - last_start)
        if stuck_for < self.stall_after_s:
            return False
        log.error(
            "consumer_stalled",
            waiting_messages=waiting_messages,
            idle_for_s=round(now - last_start, 1),
            action="stopping this worker so its supervisor starts a fresh one",
        )
        self.on_stall()
        return True

    def start(self, redis_client: redis.Redis, queues: list[str]) -> None:
        self._redis, self._queues = redis_client, queues
        with self._lock:
            self._last_start = self.clock()
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="cio-watchdog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        interval = max(0.5, self.stall_after_s / 6)
        while not self._stop.wait(interval):
            assert self._redis is not None
            try:
                waiting = sum(int(self._redis.llen(queue)) for queue in self._queues)
            except redis.RedisError:
                continue  # Redis away: nothing to judge; Celery's reconnect loop is at work
            if self.check(waiting):
                return
