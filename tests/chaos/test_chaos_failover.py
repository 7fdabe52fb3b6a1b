"""Redis Sentinel failover under load (docs/design.md rule 8): the master is SIGKILLed while a
producer enqueues steadily and two Procfile workers deliver; no acknowledged job is lost.

Reported against kombu 5.7: both workers exited within a second of the kill with `TypeError:
Connection._init_params() got an unexpected keyword argument 'master_name'` (kombu's failover
switch to the next sentinel URL, connection.broker_url), and 738 of 2,082 acknowledged jobs were
delivered in the two minutes after.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cio_worker.produce._producer import Producer

from .failover_harness import FailoverStack, SteadyProducer, check_failover_verdict
from .harness import JobBook, seconds_until_ended, wait_until

#: Delivery must resume this soon after the sentinels promote the replica.
RESUME_WITHIN_S = 30.0


@pytest.fixture
def failover_stack(tmp_path: Path) -> Iterator[FailoverStack]:
    stack = FailoverStack.start_cluster(tmp_path / "stack", {})
    try:
        yield stack
    finally:
        stack.close()


def test_master_killed_during_steady_enqueue_loses_no_acknowledged_job(
    failover_stack: FailoverStack,
) -> None:
    stack = failover_stack
    cluster = stack.cluster
    assert cluster is not None
    workers = [stack.start_procfile_worker(f"w{i}") for i in range(2)]
    stack.wait_ready(*workers, timeout_s=60)

    book = JobBook(Producer(stack.settings()))
    steady = SteadyProducer(book.producer, book).start()
    try:
        # Load before the kill: deliveries flow and the replica confirms each enqueue.
        wait_until(lambda: len(steady.acked) >= 250, 30, "250 enqueues before the kill")
        wait_until(lambda: stack.accepted_count() > 50, 30, "deliveries before the kill")
        old = cluster.kill_master()
        killed_at = time.monotonic()
        new = cluster.wait_for_failover(old, timeout_s=30)
        promoted_at = time.monotonic()
        # Keep enqueuing on the new master for a while.
        wait_until(
            lambda: len(steady.acked_after(promoted_at)) >= 300, 40, "300 enqueues after failover"
        )
    finally:
        steady.stop()
    assert steady.producer.replicas.unconfirmed <= len(steady.acked_after(killed_at))

    # Delivery resumes within RESUME_WITHIN_S of the promotion: the first jobs enqueued on the
    # new master are delivered by then.
    first_after = steady.acked_after(promoted_at)[:10]
    ended = seconds_until_ended(stack, first_after, promoted_at, RESUME_WITHIN_S)
    assert ended, f"nothing enqueued after the failover was delivered\n{stack.describe()}"

    stack.wait_all_ended(book.ids, timeout_s=90)
    counts = check_failover_verdict(stack, book, steady.failed)
    for worker in workers:
        assert worker.count("Unrecoverable error") == 0, f"{worker.name}\n{stack.describe()}"
        assert worker.alive(), f"{worker.name} exited\n{stack.describe()}"
    print(
        f"failover: new master {new.port} {promoted_at - killed_at:.1f}s after the kill; "
        f"first delivery {min(ended.values()):.1f}s after promotion; enqueue errors "
        f"{len(steady.failed)}; {counts}"
    )
