"""Batched delivery: worker threads that send Track-family jobs many to a request.

Each thread takes a whole batch from a shard (queue/_shards.py), asks the family's circuit
(limiter/_circuit.py) whether it may send, takes ONE limiter slot, sends `{"batch":[...]}` to Track
v2 `/api/v2/batch` (or Pipelines `/v1/batch`), and then:

- 200: forgets every job of the batch (Customer.io has them);
- 207: dead-letters only the items Customer.io listed (`batch_index`), forgets the rest;
- any failure: _fate.py decides, this module carries it out. In short: a 429 pauses every worker
  and puts the batch back with no attempt; a transient failure while the family is healthy puts
  it back, held for the backoff, to be sent one job per request (where a failure is the job's
  own attempt); while the family's circuit is open the batch goes back untouched and nobody
  takes from the shards until a probe succeeds; 400/401/403/413/422 for the whole request
  dead-letters every job of the batch (a wrong key names its credential).

A batch always goes back to the front of its shard, and the shard is held while it waits, so a
person's later jobs cannot overtake it. Events carry their job id as the dedup id, so a batch
resent after an ambiguous failure (or a worker's death) does not count its events twice;
identify, device and suppression updates are idempotent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis

from cio_worker import logs
from cio_worker.config import Settings
from cio_worker.customerio import (
    ITEM_SLACK_BYTES,
    MAX_BATCH_BYTES,
    PIPELINES_BATCH_PATH,
    STRICT_HEADERS,
    TRACK_BATCH_PATH,
    CustomerIoClient,
    HttpOperation,
    refused_items,
)
from cio_worker.errors import DeliveryError
from cio_worker.ids import new_ulid, ulid_time_ms
from cio_worker.kinds import Family
from cio_worker.limiter import Circuit, Gate, Limiter
from cio_worker.ops import record_delivery
from cio_worker.queue import (
    IDLE_WAIT_S,
    SHARDS,
    BatchItem,
    BatchQueue,
    DeadLetterStore,
    Doorbell,
    ErrorRecord,
    JobLedger,
    TakenBatch,
    batch_api,
    batch_bell,
    wait_for_work,
)
from cio_worker.worker._batch_fit import body_within_limit
from cio_worker.worker._batch_letters import BatchLetters
from cio_worker.worker._deliverer import complete_despite_outage
from cio_worker.worker._fate import FailureJudge, Fate, classify

log = logs.get_logger(__name__)

#: Sender threads per worker process. Two keep the pipe full (one builds while one waits on
#: HTTP) without starving the process's per-job threads of the GIL.
DEFAULT_THREADS = 2
#: The task name Flower shows for one batch request.
BATCH_TASK_NAME = "cio_worker.track_batch"
#: A partial batch this big goes at once instead of lingering (CIO_WORKER_BATCH_LINGER_MS is for
#: a trickle: a request carrying a quarter of the body limit, hundreds of events, is already
#: cheap). Requests stay within the limit: at the Track limit of 100 requests a second such
#: batches carry over 50,000 events a second, and beyond that senders wait on the limiter while
#: the shards fill, so batches grow to the full size.
EAGER_BATCH_BYTES = MAX_BATCH_BYTES // 4
#: Waits shorter than this (a batch lingering for more events) are slept out; longer ones wait
#: on the doorbell, so work arriving meanwhile in another shard is taken at once.
SHORT_WAIT_S = 0.25


class Pause(NamedTuple):
    """What a sender thread does before its next take: wait `seconds`, and whether a ring of the
    doorbell (work arrived) ends the wait early."""

    seconds: float
    wake_on_ring: bool = True


@dataclass
class Batcher:
    settings: Settings
    redis: redis.Redis
    client: CustomerIoClient
    limiter: Limiter
    dead_letters: DeadLetterStore
    owner: str
    threads: int = DEFAULT_THREADS
    #: Sends Celery task events (`send(event_type, **fields)`), so Flower lists each batch.
    events: Callable[..., None] | None = None
    #: Where idle threads wait for a producer's ring (queue/_bells.py); made by `start`.
    doorbell: Doorbell | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.api = batch_api(self.settings)
        self.queue = BatchQueue(self.redis, self.api)
        self.ledger = JobLedger(self.redis)
        self.path = PIPELINES_BATCH_PATH if self.api == "pipelines" else TRACK_BATCH_PATH
        self.headers = dict(STRICT_HEADERS) if self.api == "pipelines" else {}
        self.circuit = Circuit(self.settings, self.redis)
        self.judge = FailureJudge(self.settings, self.limiter, self.circuit)
        self.letters = BatchLetters(self.settings, self.redis, self.queue, self.dead_letters)

    # -- threads ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        if self.doorbell is None:
            self.doorbell = Doorbell(self.settings, batch_bell(self.api), owner=self.owner)
        try:
            self.queue.adopt_legacy()  # before any take: older jobs first
        except redis.RedisError as exc:  # Redis away: the sweeper adopts them later
            log.warning("legacy_shards_not_adopted", error=f"{type(exc).__name__}: {exc}")
        for index in range(self.threads):
            thread = threading.Thread(
                target=self._run, args=(index,), name=f"cio-batcher-{index}", daemon=True
            )
            thread.start()
            self._workers.append(thread)

    def request_stop(self) -> None:
        """Take no new batch; a batch in hand still finishes."""
        self._stop.set()

    def stop(self, timeout: float = 15.0) -> None:
        """Finish the batch in hand (a warm shutdown), then stop."""
        self._stop.set()
        if self.doorbell is not None:
            self.doorbell.wake(len(self._workers))  # idle threads wait in Redis: wake them
        for thread in self._workers:
            thread.join(timeout)
        self._workers.clear()

    def _run(self, index: int) -> None:
        start = index * SHARDS // max(1, self.threads)
        while not self._stop.is_set():
            try:
                pause = self.step(start)
            except redis.RedisError as exc:  # Redis away: the jobs are safe in it; wait
                log.warning("batch_take_failed", error=f"{type(exc).__name__}: {exc}")
                pause = Pause(1.0, wake_on_ring=False)
            except Exception:  # a bug must not kill the thread; the batch's lease protects it
                log.exception("batcher_crashed")
                pause = Pause(1.0, wake_on_ring=False)
            start = (start + 1) % SHARDS
            if pause.seconds > 0:
                bell = self.doorbell if pause.wake_on_ring else None
                wait_for_work(bell, pause.seconds, self._stop, short_s=SHORT_WAIT_S)

    def step(self, start: int = 0) -> Pause:
        """Take and deliver one batch if one is ready; return how long to wait before the next
        (IDLE_WAIT_S when nothing is queued: the doorbell ends that wait when work arrives)."""
        taken = self.queue.take(
            self.owner,
            max_bytes=MAX_BATCH_BYTES,
            linger_ms=self.settings.batch_linger_ms,
            start=start,
            lease_s=2 * self.settings.http_timeout_s + 10,
            item_slack=ITEM_SLACK_BYTES[self.api],
            eager_bytes=EAGER_BATCH_BYTES,
        )
        if taken is None:
            return Pause(IDLE_WAIT_S)
        if isinstance(taken, float):
            return Pause(min(max(taken, 0.005), IDLE_WAIT_S))
        gate = self.circuit.admit(self.api)
        if not gate.may_send:
            # The family is down and another caller probes: leave the jobs where they were,
            # spend nothing, and look again when the next probe may start.
            # New work does not change that: rings do not cut this wait short.
            self.queue.restore(taken, self.owner, hold_s=0, attempt=False)
            return Pause(min(max(gate.wait_s, 0.05), 1.0), wake_on_ring=False)
        self.deliver(taken, gate)
        return Pause(0.0)

    # -- one batch -------------------------------------------------------------------------------
    def deliver(self, batch: TakenBatch, gate: Gate | None = None) -> None:
        gate = gate or Gate("closed")
        limit = self.settings.max_attempts
        sendable = []
        for item in batch.items:
            if not item.record:
                continue  # its record is gone (dead-lettered meanwhile): nothing to send
            if item.attempts >= limit:
                self.letters.exhausted(batch.shard, item.job_id, item.attempts)
            else:
                sendable.append(item)
        if not sendable:
            self.circuit.abandon(gate, self.api)
            self.queue.complete(batch, self.owner)
            return
        try:
            built = body_within_limit(self.queue, self.owner, batch, sendable)
        except BaseException:
            self.circuit.abandon(gate, self.api)
            raise  # the batch's lease brings it back
        if built is None:
            self.circuit.abandon(gate, self.api)
            return  # the lease ran out meanwhile: the shard's next sender has these jobs
        batch, sendable, content = built
        op = HttpOperation(
            self.api,  # type: ignore[arg-type]
            self.api,
            "POST",
            self.path,
            headers=self.headers,
            content=content,
        )
        fields = {"shard": batch.shard, "jobs": len(sendable), "bytes": len(op.content or b"")}
        task_id = new_ulid()
        self._event(
            "task-received",
            uuid=task_id,
            name=BATCH_TASK_NAME,
            # Only counts: Flower must never show an event, an id or an attribute.
            args=f"({len(sendable)} job{'' if len(sendable) == 1 else 's'}, shard {batch.shard})",
            kwargs="{}",
            retries=0,
            root_id=task_id,
            parent_id=None,
        )
        self._event("task-started", uuid=task_id)
        started = time.monotonic()
        try:
            waited = self.limiter.acquire(op.bucket)
            result = self.client.send(op)
        except DeliveryError as exc:
            self._failed(batch, sendable, gate, exc, task_id, fields)
            return
        except BaseException:
            self.circuit.abandon(gate, self.api)
            raise  # the batch's lease brings it back
        self.circuit.success(self.api)
        rejected = refused_items(result.status_code, result.body)
        for index, reason in rejected.items():
            if index < len(sendable):
                self.letters.dead_letter(
                    batch.shard, sendable[index].job_id, sendable[index].attempts + 1, reason, 207
                )
        delivered = complete_despite_outage(
            lambda: self.queue.complete(batch, self.owner), job_id=f"batch of {len(sendable)}"
        )
        if delivered < 0:
            log.warning("batch_lease_lost", **fields)  # resent later; events dedup by id
            return
        oldest_ms = ulid_time_ms(min(item.job_id for item in sendable))  # ULIDs sort by time
        record_delivery(
            self.redis,
            family="track",
            kind="track",
            outcome="delivered",
            latency_s=max(0.0, time.time() - oldest_ms / 1000),
            limiter_wait_s=waited,
            count=delivered,
        )
        self._event(
            "task-succeeded",
            uuid=task_id,
            result=f"'{delivered} delivered, {len(rejected)} refused'",
            runtime=time.monotonic() - started,
        )
        log.info(
            "batch_delivered",
            status=result.status_code,
            delivered=delivered,
            rejected=len(rejected),
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            limiter_wait_ms=round(waited * 1000, 1),
            **fields,
        )

    def _failed(
        self,
        batch: TakenBatch,
        sendable: list[BatchItem],
        gate: Gate,
        exc: DeliveryError,
        task_id: str,
        fields: dict[str, Any],
    ) -> None:
        """Carry out what _fate.py decides for a batch that was not accepted."""
        if classify(exc) == "transient":
            sendable = self.letters.out_of_time(batch, sendable, exc)
        since = self.queue.enqueued_at_s(batch.shard, [item.job_id for item in sendable])
        fate = self.judge.judge(
            exc,
            bucket=self.api,
            gate=gate,
            attempts_before=max((item.attempts for item in sendable), default=0),
            enqueued_at_s=min(since, default=time.time()),
            jobs=len(sendable),
        )
        failed = f"{type(exc).__name__}({exc.status_code})"
        if fate.action == "dead":
            attempts = max((item.attempts for item in sendable), default=0) + 1
            for item in sendable:
                self.letters.dead_letter(
                    batch.shard, item.job_id, attempts, fate.reason, fate.status
                )
            self.queue.complete(batch, self.owner)
            self._event("task-failed", uuid=task_id, exception=failed, traceback="")
            return
        if fate.rate_limited:
            self.ledger.count(Family.TRACK, "rate_limited")
            record_delivery(self.redis, family="track", kind="track", outcome="rate_limited",
                            latency_s=None, limiter_wait_s=None)  # fmt: skip
            log.warning("rate_limited", status=429, retry_after_s=getattr(
                exc, "retry_after_seconds", None), **fields)  # fmt: skip
        error_json = "" if fate.rate_limited else json.dumps(_error(exc, fate).to_dict())
        if fate.action == "park":
            # The family is down: back untouched (no hold: the circuit holds every shard).
            self.queue.restore(batch, self.owner, hold_s=0, attempt=False, error_json=error_json)
            self.ledger.count(Family.TRACK, "parked", len(sendable))
            log.warning("batch_parked", status=fate.status, error=fate.reason, **fields)
        elif not fate.attempt and not fate.split:
            self.queue.restore(batch, self.owner, hold_s=fate.delay_s, attempt=False)
            return  # the limiter's own wait: not worth a task event
        else:
            self.queue.restore(batch, self.owner, hold_s=fate.delay_s, attempt=fate.attempt,
                               error_json=error_json, split=fate.split)  # fmt: skip
            self.ledger.count(Family.TRACK, "retried", len(sendable))
            log.warning("batch_retry_scheduled", status=fate.status, error=fate.reason,
                        delay_s=round(fate.delay_s, 3), split=fate.split,
                        attempt=max(item.attempts for item in sendable) + 1, **fields)  # fmt: skip
        self._event("task-retried", uuid=task_id, exception=failed)

    def _event(self, event_type: str, **fields: Any) -> None:
        if self.events is not None:
            self.events(event_type, **fields)


def _error(exc: DeliveryError, fate: Fate) -> ErrorRecord:
    return ErrorRecord(
        reason=fate.reason or str(exc),
        status=exc.status_code,
        body_excerpt=exc.body_excerpt,
        at=time.time(),
    )
