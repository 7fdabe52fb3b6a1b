"""Chaos: Customer.io unavailable for longer than a job's whole retry budget
(docs/design.md rule 7).

Real Redis, two real worker processes and the sandbox; the application keeps producing
throughout (batched track events, anonymous events, transactional sends, a broadcast). Settings
are scaled down: 10 attempts with backoff from 0.2 s capped at 2 s spend a job's whole budget in
about 10 s, so each outage below (18-22 s) outlasts it about twice. Every test asserts every
job delivered (the sandbox's log), nothing dead-lettered, and nothing left in Redis; the 503
tests also bound the requests the fleet sends into the dead API (the circuit breaker sends one
probe per interval per family, limiter/_circuit.py) and how soon the backlog drains after recovery.

Scenarios: every API answers 503; a network partition (connections refused, partition.py); a
flapping API (5 s down, 5 s up); one family down (transactional) while track keeps delivering.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import pytest

from cio_worker.sandbox.recorder import max_in_window

from .harness import (
    ChaosStack,
    JobBook,
    StackFactory,
    check_every_job_ended,
    check_nothing_left,
    seconds_until_ended,
    verdict,
    wait_until,
)
from .partition import Partition

pytestmark = pytest.mark.integration

PROBE_MIN_S = 1.0
PROBE_MAX_S = 2.0
THRESHOLD = 5
WORKERS = 2
CONCURRENCY = 4
OUTAGE_SETTINGS = {
    "CIO_WORKER_MAX_ATTEMPTS": "10",
    "CIO_WORKER_BACKOFF_BASE_S": "0.2",
    "CIO_WORKER_BACKOFF_MAX_S": "2",
    "CIO_WORKER_CIRCUIT_THRESHOLD": str(THRESHOLD),
    "CIO_WORKER_CIRCUIT_PROBE_MIN_S": f"{PROBE_MIN_S:g}",
    "CIO_WORKER_CIRCUIT_PROBE_MAX_S": f"{PROBE_MAX_S:g}",
}
#: Requests that may fail before a family's circuit opens: the threshold, plus one request per
#: thread that can be on its way when it opens (each worker's task threads and its two batch
#: senders), plus a margin.
OPENING_BURST = THRESHOLD + WORKERS * (CONCURRENCY + 2) + 8
#: After the opening burst a dead family sees one probe per interval (1 s doubling to 2 s).
#: Requests counted from this long after a family's first failure are "steady state".
SETTLE_S = 6.0
#: Seconds from recovery until the last job queued before it is delivered: a probe interval
#: to notice, the sweeper's release, the drain at the limiter's rate; generous for a busy box.
DRAIN_BOUND_S = 20.0
#: The one job of each cycle of the application's steady production (8 jobs per second).
MIX = ("track", "transactional", "track", "anonymous", "track", "transactional", "track",
       "transactional")  # fmt: skip


class OutageBook(JobBook):
    """JobBook plus broadcasts, found in the log by a `tag` in their `data`."""

    def broadcast(self) -> str:
        tag = f"bc-{len(self.kinds)}"
        job_id = self.producer.enqueue_broadcast(9, data={"tag": tag})
        return self.add(job_id, "broadcast", tag)

    def jobs_of(self, record: dict[str, Any]) -> list[str | None]:  # type: ignore[override]
        body = record.get("body")
        if record.get("family") == "broadcast" and isinstance(body, dict):
            data = body.get("data")
            return [self.tag_to_job.get(str(data.get("tag"))) if isinstance(data, dict) else None]
        return super().jobs_of(record)


class Producing:
    """The application: a thread enqueueing MIX at `rate` jobs/s until stopped, plus one-off
    jobs handed to `also` (the book is only ever written from this thread)."""

    def __init__(self, book: OutageBook, rate: float = 8.0, mix: tuple[str, ...] = MIX) -> None:
        self.book = book
        self.rate = rate
        self.mix = mix
        self._stop = threading.Event()
        self._extra: queue.Queue[Callable[[OutageBook], object]] = queue.Queue()
        self._error: BaseException | None = None
        self._enqueued_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="producing", daemon=True)

    def __enter__(self) -> Producing:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def also(self, enqueue: Callable[[OutageBook], object]) -> None:
        self._extra.put(enqueue)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        if self._error is not None:
            raise AssertionError(f"the application failed to enqueue: {self._error!r}")

    def enqueued_before(self, moment: float) -> list[str]:
        """Jobs enqueued before `moment` (time.time())."""
        with self._lock:
            return [job_id for job_id, at in self._enqueued_at.items() if at < moment]

    def enqueued_at(self, job_id: str) -> float:
        with self._lock:
            return self._enqueued_at[job_id]

    def count(self) -> int:
        with self._lock:
            return len(self._enqueued_at)

    def _run(self) -> None:
        book = self.book
        kinds: dict[str, Callable[[], list[str]]] = {
            "track": lambda: book.track(1),
            "anonymous": lambda: book.anonymous(1),
            "transactional": lambda: book.transactional(1),
        }
        started = time.monotonic()
        n = 0
        try:
            while not self._stop.is_set():
                ids = kinds[self.mix[n % len(self.mix)]]()
                while not self._extra.empty():
                    made = self._extra.get_nowait()(book)
                    ids += [made] if isinstance(made, str) else []
                now = time.time()
                with self._lock:
                    self._enqueued_at.update(dict.fromkeys(ids, now))
                n += 1
                # A steady schedule; a late tick is made up at once, not skipped.
                self._stop.wait(max(0.0, started + n / self.rate - time.monotonic()))
        except BaseException as exc:  # reported by stop()
            self._error = exc


def _start(chaos_stack: StackFactory, **extra: str) -> tuple[ChaosStack, OutageBook]:
    stack = chaos_stack(**OUTAGE_SETTINGS, **extra)
    return stack, OutageBook(stack.producer())


def _start_workers(stack: ChaosStack) -> None:
    workers = [stack.start_worker(f"out{i}", concurrency=CONCURRENCY) for i in range(WORKERS)]
    stack.wait_ready(*workers)


def _hold(stack: ChaosStack, seconds: float) -> None:
    """Let the scenario run for `seconds` (not a proof of anything: the test's timeline)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        stack.check_some_worker_alive()
        time.sleep(min(0.5, max(0.0, until - time.monotonic())))


def _warm_up(stack: ChaosStack, producing: Producing) -> None:
    """Wait until the application's first jobs are delivered: the fleet is up and sending."""
    wait_until(lambda: producing.count() >= 16, 30, "the first jobs enqueued")
    first = producing.enqueued_before(time.time())
    stack.wait_all_ended(first, 30)


def _parked_left(stack: ChaosStack) -> int:
    """Jobs still parked behind a circuit (`cio:parked:<bucket>` sorted sets)."""
    return sum(int(stack.redis.zcard(name)) for name in stack.redis.scan_iter(match="cio:parked:*"))


def _check_all_delivered(stack: ChaosStack, book: OutageBook) -> None:
    result = verdict(stack, book)
    check_every_job_ended(stack, book, result, allowed_reasons={})
    assert result.dead == {}
    assert all(result.accepted[job_id] >= 1 for job_id in book.ids)
    check_nothing_left(stack)
    wait_until(lambda: _parked_left(stack) == 0, 15, "no job parked behind a circuit")


def _circuit_logs(stack: ChaosStack) -> tuple[int, int]:
    opened = sum(worker.count('"circuit_opened"') for worker in stack.workers)
    closed = sum(worker.count('"circuit_closed"') for worker in stack.workers)
    return opened, closed


def _fault_times(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Arrival times of the requests a sandbox fault answered, per family."""
    found: dict[str, list[float]] = defaultdict(list)
    for record in records:
        if record["fault"] is not None:
            found[str(record["family"])].append(float(record["t"]))
    return {family: sorted(times) for family, times in found.items()}


def _probe_bound(seconds: float) -> int:
    """Most requests one family may send into a dead API over `seconds` after its circuit
    opened: one per PROBE_MIN_S (twice the rate once the interval reaches PROBE_MAX_S) plus 2."""
    return int(seconds / PROBE_MIN_S) + 2


def _check_dead_api_rates(
    records: list[dict[str, Any]], down: float, up: float, families: tuple[str, ...]
) -> dict[str, str]:
    """The fleet probes instead of hammering: per family, few requests reach the dead API."""
    report = {}
    for family, times in _fault_times(records).items():
        in_outage = [t for t in times if down <= t <= up]
        start = in_outage[0] if in_outage else down
        steady = [t for t in in_outage if t >= start + SETTLE_S]
        most_1s = max_in_window(steady, 1.0)
        report[family] = f"{len(in_outage)} requests, {len(steady)} steady, max {most_1s}/s"
        if family not in families:
            continue
        total_bound = OPENING_BURST + _probe_bound(up - start)
        assert len(in_outage) <= total_bound, (family, len(in_outage), total_bound)
        steady_bound = _probe_bound(max(0.0, up - start - SETTLE_S))
        assert len(steady) <= steady_bound, (family, len(steady), steady_bound)
        assert most_1s <= 3, (family, "requests in one second of steady outage", most_1s)
    return report


@contextmanager
def _outage(stack: ChaosStack, **fault: object) -> Iterator[dict[str, float]]:
    """A sandbox fault from entry to exit; yields {"down", "up"} (time.time())."""
    times = {"down": time.time()}
    stack.set_fault(**fault)
    try:
        yield times
    finally:
        stack.clear_fault()
        times["up"] = time.time()
        times["up_monotonic"] = time.monotonic()


def _drain_s(stack: ChaosStack, backlog: list[str], since_monotonic: float) -> float:
    """Seconds from recovery until the last job queued before it ended."""
    ended = seconds_until_ended(stack, backlog, since_monotonic, timeout_s=90)
    missing = set(backlog) - set(ended)
    assert not missing, f"{len(missing)} jobs of the backlog still queued 90 s after recovery"
    return max(ended.values(), default=0.0)


@pytest.mark.timeout(180)
def test_all_apis_down_longer_than_the_retry_budget(chaos_stack: StackFactory) -> None:
    """22 s of 503 from every API while the application keeps producing: nothing is
    dead-lettered, the fleet sends about one probe per interval per family, and the backlog
    drains within seconds of recovery."""
    outage_s = 22.0
    stack, book = _start(chaos_stack)
    _start_workers(stack)
    with Producing(book) as producing:
        _warm_up(stack, producing)
        with _outage(stack, status=503) as times:
            _hold(stack, outage_s / 2)
            producing.also(lambda b: b.broadcast())
            _hold(stack, outage_s / 2)
        backlog = producing.enqueued_before(times["up"])
        drain = _drain_s(stack, backlog, times["up_monotonic"])
        _hold(stack, max(0.0, times["up_monotonic"] + 4 - time.monotonic()))
    took = stack.wait_all_ended(book.ids, 60)

    result = verdict(stack, book)
    rates = _check_dead_api_rates(
        result.records, times["down"], times["up"], ("track", "transactional")
    )
    opened, closed = _circuit_logs(stack)
    print(f"\nall APIs down {times['up'] - times['down']:.1f}s: {len(book.ids)} jobs "
          f"({len(backlog)} queued before recovery), dead-lettered {len(result.dead)}; into the "
          f"dead API: {rates}; backlog drained {drain:.1f}s after recovery, all ended "
          f"{took:.1f}s later; circuit_opened {opened}, circuit_closed {closed}")  # fmt: skip
    _check_all_delivered(stack, book)
    assert drain <= DRAIN_BOUND_S, f"backlog took {drain:.1f}s to drain after recovery"
    assert opened >= 2 and closed >= 2, "track and transactional circuits open and close"


@pytest.mark.timeout(180)
def test_network_partition_longer_than_the_retry_budget(chaos_stack: StackFactory) -> None:
    """Workers reach Customer.io through a forwarder that is cut for 20 s (connections
    refused, pooled connections reset): nothing is dead-lettered, all delivered after it heals.

    The cut comes while nothing is in flight: a request caught mid-way by a partition is
    ambiguous (it may have been acted on) and a transactional send then goes to the DLQ under
    CIO_WORKER_AMBIGUOUS_MESSAGES=dead, as it should; this test is about refused connections.
    """
    outage_s = 20.0
    stack, book = _start(chaos_stack)
    with Partition("127.0.0.1", stack.sandbox.port) as link:
        for name in ("TRACK", "APP", "PIPELINES"):
            stack.env[f"CUSTOMERIO_{name}_URL"] = link.url
        _start_workers(stack)
        book.track(8)
        book.transactional(4)
        stack.wait_all_ended(book.ids, 30)
        link.cut()
        down = time.time()
        with Producing(book) as producing:
            _hold(stack, outage_s / 2)
            producing.also(lambda b: b.broadcast())
            _hold(stack, outage_s / 2)
            assert max(r["t"] for r in stack.records()) < down, "a request got through the cut"
            link.heal()
            up, up_monotonic = time.time(), time.monotonic()
            backlog = producing.enqueued_before(up)
            drain = _drain_s(stack, backlog, up_monotonic)
            _hold(stack, max(0.0, up_monotonic + 4 - time.monotonic()))
        took = stack.wait_all_ended(book.ids, 60)
        result = verdict(stack, book)
        opened, closed = _circuit_logs(stack)
        print(f"\npartition {up - down:.1f}s: {len(book.ids)} jobs ({len(backlog)} queued "
              f"during it), dead-lettered {len(result.dead)}; backlog drained {drain:.1f}s "
              f"after the heal, all ended {took:.1f}s later; circuit_opened {opened}, "
              f"circuit_closed {closed}")  # fmt: skip
        _check_all_delivered(stack, book)
    assert drain <= DRAIN_BOUND_S, f"backlog took {drain:.1f}s to drain after the heal"
    assert opened >= 2 and closed >= 2, "track and transactional circuits open and close"


@pytest.mark.timeout(180)
def test_flapping_api(chaos_stack: StackFactory) -> None:
    """Every API 5 s down, 5 s up, three times, while the application produces: all delivered,
    none dead-lettered, and each down spell sees an opening burst and probes, not a hammering."""
    stack, book = _start(chaos_stack)
    _start_workers(stack)
    spells: list[dict[str, float]] = []
    # More transactional sends than usual (5 of every 8 jobs, 10 jobs/s): per-job deliveries are
    # the ones that would each retry on their own without a circuit.
    mix = ("transactional", "track", "transactional", "anonymous", "transactional", "track",
           "transactional", "transactional")  # fmt: skip
    with Producing(book, rate=10.0, mix=mix) as producing:
        _warm_up(stack, producing)
        for spell in range(3):
            with _outage(stack, status=503) as times:
                if spell == 1:
                    producing.also(lambda b: b.broadcast())
                _hold(stack, 5)
            spells.append(times)
            _hold(stack, 5)
    took = stack.wait_all_ended(book.ids, 60)

    result = verdict(stack, book)
    per_spell = [
        _check_dead_api_rates(result.records, s["down"], s["up"], ("track", "transactional"))
        for s in spells
    ]
    opened, closed = _circuit_logs(stack)
    print(f"\nflapping: {len(book.ids)} jobs, dead-lettered {len(result.dead)}, all ended "
          f"{took:.1f}s after the last spell; per down spell: {per_spell}; circuit_opened "
          f"{opened}, circuit_closed {closed}")  # fmt: skip
    _check_all_delivered(stack, book)
    assert closed >= 1


@pytest.mark.timeout(150)
def test_one_family_down(chaos_stack: StackFactory) -> None:
    """Transactional sends answer 503 for 18 s (a fault scoped to the family): track events go
    on being delivered meanwhile; every transactional send is delivered after, none DLQ'd."""
    outage_s = 18.0
    stack, book = _start(chaos_stack)
    _start_workers(stack)
    with Producing(book) as producing:
        _warm_up(stack, producing)
        with _outage(stack, status=503, family="transactional") as times:
            _hold(stack, outage_s)
        backlog = producing.enqueued_before(times["up"])
        drain = _drain_s(stack, backlog, times["up_monotonic"])
        _hold(stack, max(0.0, times["up_monotonic"] + 3 - time.monotonic()))
    stack.wait_all_ended(book.ids, 60)

    result = verdict(stack, book)
    down, up = times["down"], times["up"]
    # Track events enqueued in the outage (5 s before its end at the latest) were delivered
    # during it: the family next door did not stop.
    during = [
        job_id
        for job_id in book.of_kind("track", "track_anonymous")
        if down <= producing.enqueued_at(job_id) <= up - 5
    ]
    late = [
        job_id
        for job_id in during
        if min((r["t"] for r in result.requests[job_id] if r["accepted"]), default=up + 1) > up
    ]
    faulted = {str(r["family"]) for r in result.records if r["fault"] is not None}
    rates = _check_dead_api_rates(result.records, down, up, ("transactional",))
    print(f"\ntransactional down {up - down:.1f}s: {len(book.ids)} jobs, {len(during)} track "
          f"events enqueued during it, {len(late)} of them delivered only after; into the dead "
          f"family: {rates}; backlog drained {drain:.1f}s after recovery")  # fmt: skip
    _check_all_delivered(stack, book)
    assert faulted == {"transactional"}
    assert len(during) >= 50 and late == [], f"{len(late)} track events waited for the outage"
    assert drain <= DRAIN_BOUND_S
