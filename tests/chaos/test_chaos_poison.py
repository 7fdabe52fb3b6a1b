"""Chaos: a poison job, one whose processing kills the worker process every time.

Nothing in the product can crash on purpose, so the test plays the poison: it watches the
ledger and SIGKILLs whichever worker process takes the job, every time, until the job ends. The
job must be dead-lettered after CIO_WORKER_MAX_ATTEMPTS with a reason saying workers were lost,
not loop forever; and jobs that merely travelled with it must not share its fate.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from .harness import (
    ChaosStack,
    JobBook,
    StackFactory,
    check_every_job_ended,
    check_nothing_left,
    owner_pid,
    verdict,
)

pytestmark = pytest.mark.integration


def _kill_whoever_takes(
    stack: ChaosStack,
    job_id: str,
    holder: Callable[[], str | None],
    max_attempts: int,
    timeout_s: float,
) -> list[tuple[float, int]]:
    """SIGKILL the process named by `holder()` each time a new one holds `job_id`, while the
    job has attempts left; stop when the job leaves the ledger. Returns (seconds, attempts)."""
    kills: list[tuple[float, int]] = []
    killed: set[str] = set()
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        attempts = stack.attempts(job_id)
        if attempts is None:
            return kills  # the job left the ledger
        owner = holder()
        if owner and owner not in killed and attempts < max_attempts:
            killed.add(owner)
            os.kill(owner_pid(owner), signal.SIGKILL)
            kills.append((time.monotonic() - started, attempts))
        time.sleep(0.02)
    raise AssertionError(f"the poison job was still in the ledger after {timeout_s}s: {kills}")


@pytest.mark.timeout(240)
def test_poison_job_is_dead_lettered_after_max_attempts(chaos_stack: StackFactory) -> None:
    """A job (one Celery message per job: an anonymous event) that kills every worker taking
    it is dead-lettered after CIO_WORKER_MAX_ATTEMPTS=2, with a reason saying workers were lost;
    the workers (restarted by `cio-worker worker`) go on delivering."""
    max_attempts = 2  # each lost attempt costs a lease and a sweep; two show the limit works
    # An 8 s lease (20 s by default) makes each lost attempt cost about 13 s instead of 25 s.
    stack = chaos_stack(CIO_WORKER_MAX_ATTEMPTS=str(max_attempts), CIO_WORKER_LEASE_S="8")
    workers = [stack.start_worker(f"p{i}", supervised=True, concurrency=4) for i in range(2)]
    stack.wait_ready(*workers, timeout_s=60)
    book = JobBook(stack.producer())
    stack.wait_all_ended(book.anonymous(10), 30)

    stack.set_fault(delay_s=2)  # the poison's request is slow: its worker is caught holding it
    poison = book.anonymous(1)[0]

    def claimed_by() -> str | None:
        state, owner = stack.redis.hmget(f"cio:job:{poison}", "state", "owner")
        return str(owner) if state == "running" and owner else None

    started = time.monotonic()
    kills = _kill_whoever_takes(stack, poison, claimed_by, max_attempts, 200)
    ended_s = time.monotonic() - started
    stack.clear_fault()

    letter = stack.dead_letters().get(poison)
    print(f"\npoison job: worker processes killed at {[f'{t:.1f}s' for t, _ in kills]} "
          f"(attempts then {[a for _, a in kills]}); dead-lettered {ended_s:.1f}s after "
          f"enqueue: {letter.reason if letter else None!r}")  # fmt: skip
    assert letter is not None, f"the poison job did not end in the DLQ; kills: {kills}"
    assert len(kills) == max_attempts
    assert letter.attempts == max_attempts
    assert f"gave up after {max_attempts} attempts" in letter.reason
    assert "worker lost" in letter.reason

    # The fleet survived: new work is delivered by the restarted workers.
    healthy = [*book.anonymous(10), *book.track(10), *book.transactional(5)]
    stack.wait_all_ended(healthy, 60)
    result = verdict(stack, book)
    check_every_job_ended(stack, book, result, allowed_reasons={"track_anonymous": "gave up"})
    assert set(result.dead) == {poison}
    assert all(result.accepted[j] == 1 for j in healthy)
    assert sum(w.count("worker_restarting") for w in workers) == max_attempts
    check_nothing_left(stack)


@pytest.mark.timeout(180)
def test_batched_poison_job_takes_no_healthy_job_with_it(chaos_stack: StackFactory) -> None:
    """A batched event that kills every worker sending it, travelling in one batch with five
    healthy events of the same person (same shard). The poison is dead-lettered after
    CIO_WORKER_MAX_ATTEMPTS=3 as workers lost; the healthy events were only near it, so they
    must be delivered, not dead-lettered with it (three attempts leave room to isolate the
    poison by sending suspects alone, or by halving the batch)."""
    max_attempts = 3
    # HTTP timeout 1 s: a dead sender's batch lease (2 × timeout + 10 s) ends after 12 s.
    stack = chaos_stack(CIO_WORKER_MAX_ATTEMPTS=str(max_attempts), CIO_WORKER_HTTP_TIMEOUT_S="1")
    workers = [stack.start_worker(f"b{i}", supervised=True, concurrency=2) for i in range(2)]
    stack.wait_ready(*workers, timeout_s=60)
    stack.set_fault(delay_s=0.5)  # a batch stays in flight: its sender is caught holding it
    producer = stack.producer()
    book = JobBook(producer)
    poison = book.add(producer.enqueue_track("patient-0", "Poison", {}), "track")
    mates = [
        book.add(producer.enqueue_track("patient-0", "Healthy", {"n": i}), "track")
        for i in range(5)
    ]

    def sent_by() -> str | None:
        for batch in stack.inflight_batches():
            if poison in batch["ids"]:
                return str(batch["owner"])
        return None

    started = time.monotonic()
    kills = _kill_whoever_takes(stack, poison, sent_by, max_attempts, 150)
    ended_s = time.monotonic() - started
    stack.clear_fault()
    stack.wait_all_ended(book.ids, 60)

    result = verdict(stack, book)
    letter = result.dead.get(poison)
    print(f"\nbatched poison: senders killed at {[f'{t:.1f}s' for t, _ in kills]}; poison "
          f"dead-lettered {ended_s:.1f}s after enqueue: {letter.reason if letter else None!r}; "
          f"healthy batch-mates delivered {sum(1 for j in mates if result.accepted[j])} of 5, "
          f"dead-lettered {sum(1 for j in mates if j in result.dead)} of 5")  # fmt: skip
    assert letter is not None and "worker lost" in letter.reason
    assert len(kills) == max_attempts
    dead_mates = [j for j in mates if j in result.dead]
    assert dead_mates == [], (
        f"{len(dead_mates)} healthy events dead-lettered with the poison "
        f"({result.dead[dead_mates[0]].reason!r}): a batch whose sender died goes back whole, "
        f"every job in it is charged the lost attempt, and the same batch is taken again "
        f"(batch_scripts.POP), so the poison's batch-mates run out of attempts with it"
    )
    check_every_job_ended(stack, book, result, allowed_reasons={"track": "gave up"})
    check_nothing_left(stack)
