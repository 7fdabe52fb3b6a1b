"""Leases: how a worker says "I am still working on these jobs", and how its death is noticed.

A worker claims a job for `LEASE_S` (`_ledger_scripts.CLAIM`) and a daemon thread renews the leases
of every job this process holds every `LEASE_S / 3`. A worker that dies (SIGKILL, OOM, power)
stops renewing; once its leases expire the sweeper (_sweeper.py) puts its jobs back in their queues.
So a dead worker's jobs return within LEASE_S plus one sweep, whatever kombu's visibility timeout
is, and a slow but alive worker is never mistaken for a dead one.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid

from cio_worker import logs
from cio_worker.queue._ledger import JobLedger

#: How long a claim lasts without renewal. Short enough that a dead worker's jobs come back
#: well inside a minute; long enough that a renewal missed under load does not expire it.
LEASE_S = 20.0

log = logs.get_logger(__name__)


def new_owner_id() -> str:
    """Who holds a lease: host, pid and a random part (pids are reused after restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseKeeper:
    """The set of jobs this process holds, renewed in the background."""

    def __init__(self, ledger: JobLedger, owner: str, *, lease_s: float = LEASE_S) -> None:
        self.ledger = ledger
        self.owner = owner
        self.lease_s = lease_s
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, job_id: str) -> bool:
        """Start holding `job_id` for one delivery; False if a thread of this process already
        does.

        The ledger's claim tells processes apart (by owner id), not threads: without this
        check, two threads of one worker given duplicate messages of a job would both claim
        it, and a message would be sent twice.
        """
        with self._lock:
            if job_id in self._held:
                return False
            self._held.add(job_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._renew_forever, name="cio-lease-keeper", daemon=True
                )
                self._thread.start()
            return True

    def release(self, job_id: str) -> None:
        with self._lock:
            self._held.discard(job_id)

    def held(self) -> list[str]:
        with self._lock:
            return sorted(self._held)

    def renew(self) -> int:
        """Renew every lease held now; return how many Redis still credits to this owner."""
        return self.ledger.heartbeat(self.owner, self.held(), self.lease_s)

    def stop(self) -> None:
        self._stop.set()

    def _renew_forever(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.renew()
            except Exception as exc:  # Redis away: the next renewal tries again
                log.warning("lease_renewal_failed", error=f"{type(exc).__name__}: {exc}")
