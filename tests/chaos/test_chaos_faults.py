"""Chaos: Customer.io misbehaving (503 storms, every fifth 500, dropped connections, answers
slower than the HTTP timeout, 400s) against real workers, a real Redis and the sandbox.

Each test asserts every job ends delivered or dead-lettered with the right reason, that nothing
is lost or left behind in the ledger, and that a job accepted twice is only ever a track event
carrying one dedup id.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .harness import (
    JobBook,
    StackFactory,
    check_every_job_ended,
    check_nothing_left,
    verdict,
    wait_until,
)

pytestmark = pytest.mark.integration

AMBIGUOUS = "ambiguous"


def test_503_storm_then_recovery(chaos_stack: StackFactory) -> None:
    """40 × 503 in a row: the circuit opens, probes until the storm ends, and every job is
    delivered exactly once; each 503 a job met was either its own retry (before the circuit
    opened) or parked it without an attempt."""
    storm = 40
    stack = chaos_stack()
    stack.set_fault(status=503, count=storm)
    book = JobBook(stack.producer())
    book.track(30)
    book.anonymous(20)
    book.transactional(20)
    stack.start_worker("storm")
    took = stack.wait_all_ended(book.ids, 90)

    result = verdict(stack, book)
    met = {job_id: result.met(job_id, status=503) for job_id in book.ids}
    counters = {k: int(v) for k, v in stack.redis.hgetall("cio:stats").items()}
    print(f"\n503 storm: {storm} × 503 then recovery; {len(book.ids)} jobs ended in "
          f"{took:.1f}s; statuses {dict(result.statuses())}; "
          f"most 503s met by one job: {max(met.values())}; counters {counters}")  # fmt: skip
    assert stack.fault() is None, "the storm did not run its course"
    assert result.statuses()[503] == storm
    check_every_job_ended(stack, book, result, allowed_reasons={})
    assert all(result.accepted[job_id] == 1 for job_id in book.ids)
    families = ("track", "transactional")
    retried = sum(counters.get(f"{family}:retried", 0) for family in families)
    parked = sum(counters.get(f"{family}:parked", 0) for family in families)
    assert retried + parked == sum(met.values())
    assert (
        counters.get("circuit:transactional:opened", 0) + counters.get("circuit:track:opened", 0)
        >= 1
    )
    assert retried < storm // 2, "the outage spent attempts instead of parking"
    check_nothing_left(stack)


def test_every_fifth_request_500(chaos_stack: StackFactory) -> None:
    """Every fifth request answers 500: those jobs are retried, all delivered exactly once."""
    stack = chaos_stack()
    stack.set_fault(status=500, every=5)
    book = JobBook(stack.producer())
    book.track(40)
    book.anonymous(40)
    book.transactional(40)
    stack.start_worker("fifth")
    took = stack.wait_all_ended(book.ids, 60)
    stack.clear_fault()

    result = verdict(stack, book)
    statuses = result.statuses()
    hit = sum(1 for job_id in book.ids if result.met(job_id, status=500))
    print(f"\nevery fifth 500: {len(result.records)} requests, statuses {dict(statuses)}; "
          f"{hit} jobs met a 500; {len(book.ids)} jobs ended in {took:.1f}s")  # fmt: skip
    # The fault counts every request it sees, so exactly one in five failed.
    assert statuses[500] == len(result.records) // 5 >= 15
    check_every_job_ended(stack, book, result, allowed_reasons={})
    assert all(result.accepted[job_id] == 1 for job_id in book.ids)
    check_nothing_left(stack)


@pytest.mark.parametrize("policy", ["dead", "retry"])
def test_connection_drops_for_a_while(chaos_stack: StackFactory, policy: str) -> None:
    """Every connection drops mid-response until 40 have (the circuit opens after a few and
    probes): events are retried; a transactional send that met a drop may have been sent, so
    under the default policy it is dead-lettered as ambiguous (and only those), under `retry` it
    is sent again."""
    stack = chaos_stack(CIO_WORKER_AMBIGUOUS_MESSAGES=policy)
    stack.set_fault(drop=True)
    book = JobBook(stack.producer())
    book.track(30)
    book.anonymous(30)
    sends = book.transactional(20)
    stack.start_worker("drops")

    def drops() -> int:
        return sum(1 for record in stack.records() if record["fault"] == "drop")

    wait_until(lambda: drops() >= 40, 45, "40 dropped connections")
    stack.clear_fault()
    took = stack.wait_all_ended(book.ids, 60)

    result = verdict(stack, book)
    dropped = {job_id for job_id in book.ids if result.met(job_id, fault="drop")}
    tx_dropped = dropped & set(sends)
    print(f"\nconnection drops ({policy}): {drops()} dropped; {len(dropped)} jobs met a drop "
          f"({len(tx_dropped)} transactional); {len(result.dead)} dead-lettered; "
          f"all ended {took:.1f}s after the drops stopped")  # fmt: skip
    assert not any(r["accepted"] for r in result.records if r["fault"] == "drop")
    assert tx_dropped, "no transactional send met a drop: the scenario did not happen"
    assert dropped - tx_dropped, "no event met a drop: the scenario did not happen"
    if policy == "dead":
        check_every_job_ended(stack, book, result, allowed_reasons={"transactional": AMBIGUOUS})
        assert set(result.dead) == tx_dropped
        assert all("RemoteProtocolError" in result.dead[j].reason for j in tx_dropped)
        assert all(result.accepted[j] == 0 for j in tx_dropped)
    else:
        check_every_job_ended(stack, book, result, allowed_reasons={})
        assert result.dead == {}
    assert all(result.accepted[j] == 1 for j in book.ids if j not in result.dead)
    check_nothing_left(stack)


@pytest.mark.parametrize("policy", ["reconcile", "dead"])
def test_slow_responses_past_the_http_timeout(chaos_stack: StackFactory, policy: str) -> None:
    """Answers 2 s late with a 1 s client timeout: the late request still lands, so an event
    may be accepted twice, always with its one dedup id. A transactional send that timed out is
    never sent twice: under `reconcile` (the default) the worker asks the sandbox, finds the
    delivery and ends the job delivered; under `dead` it is dead-lettered as ambiguous."""
    stack = chaos_stack(
        CIO_WORKER_HTTP_TIMEOUT_S="1",
        CIO_WORKER_AMBIGUOUS_MESSAGES=policy,
        CIO_WORKER_RECONCILE_SETTLE_S="3",
    )
    book = JobBook(stack.producer())
    stack.start_worker("slow")

    stack.set_fault(delay_s=2, count=6)
    events = book.track(10) + book.anonymous(10)
    stack.wait_all_ended(events, 60)
    stack.set_fault(delay_s=2, count=4)
    sends = book.transactional(8)
    stack.wait_all_ended(sends, 60)

    def delayed() -> bool:
        return sum(1 for record in stack.records() if record["fault"] == "delay") == 10

    wait_until(delayed, 15, "the 10 delayed requests to be answered")
    result = verdict(stack, book)
    slow = {job_id for job_id in book.ids if result.met(job_id, fault="delay")}
    slow_tx = slow & set(sends)
    duplicates = result.duplicates()
    sent_anyway = [j for j in slow_tx if result.accepted[j] == 1]
    print(f"\nslow responses ({policy}): {len(slow)} jobs timed out; events accepted twice: "
          f"{len(duplicates)} (one dedup id each); transactional dead-lettered: "
          f"{len(result.dead)}; timed-out sends the sandbox accepted: {len(sent_anyway)} "
          f"of {len(slow_tx)}")  # fmt: skip
    assert slow_tx and slow - slow_tx, "both events and sends must have met the delay"
    if policy == "reconcile":
        check_every_job_ended(stack, book, result, allowed_reasons={})
        assert result.dead == {}
        assert all(result.accepted[j] == 1 for j in sends)  # found, not sent again
        assert sum(w.count('"reconciled"') for w in stack.workers) >= len(slow_tx)
    else:
        check_every_job_ended(stack, book, result, allowed_reasons={"transactional": AMBIGUOUS})
        assert set(result.dead) == slow_tx
        for job_id in slow_tx:
            reason = result.dead[job_id].reason
            assert "ReadTimeout" in reason and "CIO_WORKER_AMBIGUOUS_MESSAGES=dead" in reason
    # Each late event request was still accepted: the event arrived twice, with one dedup id.
    assert set(duplicates) == slow - slow_tx
    assert all(result.accepted[j] <= 1 for j in sends)
    check_nothing_left(stack)


def _cio_worker() -> list[str]:
    """The `cio-worker` console script of this environment (as an operator runs it)."""
    script = Path(sys.executable).with_name("cio-worker")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cio_worker"]


def test_400s_are_dead_lettered_then_replayed(chaos_stack: StackFactory) -> None:
    """30 transactional sends meet a 400: all dead-lettered with the status in the reason;
    after the cause is fixed, `cio-worker dlq replay --all` delivers all 30 and empties the DLQ."""
    stack = chaos_stack()
    stack.set_fault(status=400, count=30)
    book = JobBook(stack.producer())
    sends = book.transactional(30)
    stack.start_worker("rejects")
    stack.wait_all_ended(sends, 60)

    def dlq(*args: str) -> str:
        done = subprocess.run([*_cio_worker(), "dlq", *args], env=stack.env,
                              capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        return done.stdout

    letters = json.loads(dlq("list", "--json"))
    assert sorted(letter["id"] for letter in letters) == sorted(sends)
    for letter in letters:
        assert letter["status"] == 400 and "400" in letter["reason"], letter
        assert letter["kind"] == "send_email" and letter["attempts"] == 1
    assert verdict(stack, book).delivered() == set()

    stack.clear_fault()  # the cause is fixed
    replayed = dlq("replay", "--all", "--yes")
    took = stack.wait_all_ended(sends, 60)
    result = verdict(stack, book)
    print(f"\n400s: 30 dead-lettered with status 400; replay --all said {replayed.strip()!r}; "
          f"all 30 delivered {took:.1f}s later")  # fmt: skip
    assert all(result.accepted[j] == 1 for j in sends)
    assert json.loads(dlq("list", "--json")) == []
    check_nothing_left(stack)
