"""The acceptance run: 1,000 jobs through 503s, every fifth request 500, both kinds of dropped
connection (before the request is processed, and after: sent, answer lost), a SIGKILLed worker
and a SIGKILLed Redis restarted from its AOF, in one run.

It runs under two ambiguity policies at once, each on its own Redis, sandbox and pair of
`cio-worker worker` processes (the recovery waits overlap, which halves the wall time). With
`reconcile` (the default) a transactional send that may have been sent is looked up in the
sandbox's listings (which show a new delivery only after a lag) before it is sent again: every
job is delivered and none twice. With `dead` such a send is dead-lettered as ambiguous and never
sent twice.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from .harness import (
    ChaosStack,
    JobBook,
    Kill,
    StackFactory,
    Verdict,
    WorkerProcess,
    check_every_job_ended,
    check_nothing_left,
    check_supervisors_alive,
    kill_busy_worker,
    seconds_until_ended,
    verdict,
    wait_until,
)

pytestmark = pytest.mark.integration

RETURN_WITHIN_S = 60.0
POLICIES = ("reconcile", "dead")


@dataclass
class Run:
    policy: str
    stack: ChaosStack
    workers: list[WorkerProcess]
    book: JobBook
    kill: Kill
    ended: dict[str, float]
    timeline: list[str]
    result: Verdict

    def report(self) -> str:
        result, book = self.result, self.book
        ambiguous = [j for j, letter in result.dead.items() if "ambiguous" in letter.reason]
        why = Counter(
            result.dead[j].reason.split(";")[0].split(":")[1].strip()[:40] for j in ambiguous
        )
        duplicates = Counter(book.kinds[j] for j in result.duplicates())
        held = max((self.ended[j] for j in self.kill.held), default=0.0)
        return (
            f"acceptance ({self.policy}): {len(result.delivered())} of {len(book.ids)} "
            f"delivered, {len(result.dead)} dead-lettered ({len(ambiguous)} as ambiguous: "
            f"{dict(why)}; the sandbox in fact accepted "
            f"{sum(1 for j in ambiguous if result.accepted[j])} of them); accepted twice: "
            f"{dict(duplicates) or 0}; statuses {dict(result.statuses())}\n"
            f"  the killed worker's {len(self.kill.held)} jobs ended within {held:.1f}s of its "
            f"death; every job within {max(self.ended.values()):.1f}s of it; supervisor "
            f"restarts {sum(w.count('worker_restarting') for w in self.workers)}; watchdog "
            f"stalls {sum(w.count('consumer_stalled') for w in self.workers)}\n"
            f"  timeline: {'; '.join(self.timeline)}"
        )


def _run(stack: ChaosStack, policy: str) -> Run:
    stack.set_listing_lag(0.5)  # Customer.io's listings are not instantly consistent
    workers = [stack.start_worker(f"acc-{policy}-{i}", supervised=True) for i in range(2)]
    stack.wait_ready(*workers, timeout_s=90)
    book = JobBook(stack.producer())
    book.track(400)
    book.anonymous(200)
    book.transactional(400)
    started = time.monotonic()
    timeline: list[str] = []

    def mark(what: str) -> None:
        timeline.append(f"{time.monotonic() - started:.1f}s {what}")

    for what, fault in [
        ("503 storm (40)", {"status": 503, "count": 40}),
        ("every fifth request 500 (20)", {"status": 500, "every": 5, "count": 20}),
        ("connection drops before processing (20)", {"drop": True, "count": 20}),
        ("connection drops after processing (20)", {"drop_after": True, "count": 20}),
    ]:
        stack.set_fault(**fault)
        wait_until(lambda: stack.fault() is None, 60, f"{what} to run its course")
        mark(what)

    # Slow answers hold each request on the wire for a second, so the worker picked as busy still
    # holds its job when the signal lands (without them a fast run left nothing to catch: CI once
    # killed a worker whose last job had just finished).
    stack.set_fault(delay_s=1.0, count=20)
    kill = kill_busy_worker(stack, with_batch=False)
    stack.clear_fault()
    mark(f"worker pid {kill.pid} SIGKILLed holding {len(kill.held)} jobs")
    accepted = stack.accepted_count()
    wait_until(lambda: stack.accepted_count() >= accepted + 30, 30, "deliveries to go on")
    stack.kill_redis()
    mark("redis SIGKILLed")
    time.sleep(2)  # Redis stays down for a while: part of the scenario, not a measurement
    stack.restart_redis()
    mark("redis restarted from its AOF")

    ended = seconds_until_ended(stack, book.ids, kill.at, 180)
    mark("every job ended")
    assert set(ended) == set(book.ids), stack.describe()
    return Run(policy, stack, workers, book, kill, ended, timeline, verdict(stack, book))


@pytest.mark.timeout(300)
def test_thousand_jobs_through_every_fault(chaos_stack: StackFactory) -> None:
    """1,000 jobs (400 batched track events, 200 per-job anonymous events, 400 transactional
    sends) per policy: every job delivered or dead-lettered with a reason, duplicates only for
    events (one dedup id each), the killed worker's jobs back within 60 s, nothing left over."""
    # 40/s per family keeps each run going ~10 s, so every fault lands mid-flight; a 4 s HTTP
    # timeout makes a dead sender's batch lease 18 s (2 × timeout + 10 s) instead of 30 s.
    stacks = {
        policy: chaos_stack(
            CIO_WORKER_AMBIGUOUS_MESSAGES=policy,
            CIO_WORKER_TRACK_RPS="40",
            CIO_WORKER_TRANSACTIONAL_RPS="40",
            CIO_WORKER_HTTP_TIMEOUT_S="4",
            CIO_WORKER_RECONCILE_SETTLE_S="2",
        )
        for policy in POLICIES
    }
    with ThreadPoolExecutor(len(POLICIES)) as pool:
        futures = {policy: pool.submit(_run, stacks[policy], policy) for policy in POLICIES}
        runs = {policy: future.result() for policy, future in futures.items()}
    for run in runs.values():
        print(f"\n{run.report()}")

    for policy, run in runs.items():
        stack, book, result = run.stack, run.book, run.result
        assert run.kill.held, policy
        assert max(run.ended[j] for j in run.kill.held) <= RETURN_WITHIN_S, policy
        if policy == "dead":
            check_every_job_ended(
                stack, book, result, allowed_reasons={"transactional": "ambiguous"}
            )
        else:
            # Every job delivered, none in the dead-letter queue, no send accepted twice.
            check_every_job_ended(stack, book, result, allowed_reasons={})
            assert result.dead == {}
            assert len(result.delivered()) == len(book.ids) == 1000
            sends = book.of_kind("transactional")
            assert all(result.accepted[job_id] == 1 for job_id in sends)
        check_nothing_left(stack)
        check_supervisors_alive(run.workers)
