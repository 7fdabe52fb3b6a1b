"""Was it sent? Ask Customer.io, after an ambiguous send, instead of guessing.

Transactional sends and broadcast triggers carry no idempotency key: a resent `POST
/v1/send/email` is a second email. When a request timed out after it was written, the
connection dropped before the answer, or a worker died with the request on the wire, nobody knows
whether Customer.io accepted it. With `CIO_WORKER_AMBIGUOUS_MESSAGES=reconcile` (the default) the
job waits `CIO_WORKER_RECONCILE_SETTLE_S` (Customer.io's listings are not instantly consistent)
and then this module looks, through the shared `app` bucket:

- a transactional send: the person's deliveries (`GET /v1/customers/{id}/messages`, by the
  identifier the send used) created since the attempt began (less `CLOCK_SKEW_S`), of the send's
  channel (`email`, `push`, `sms`) and template, that no other job's receipt claims
  (queue/_receipts.py);
- a broadcast trigger: the broadcast's triggers (`GET /v1/broadcasts/{id}/triggers`) created
  since the attempt began that no other job's receipt claims.

The verdict:
- **found** (exactly one such delivery or trigger): the job ends delivered, with that id;
- **not_found**: it is sent again (and that attempt is reconciled the same way if it fails
  ambiguously);
- **unclear** (two or more unknown candidates, or a key that may not read them): dead-lettered
  with what was seen, for an operator to decide; never resent blindly;
- **unavailable** (the App API or Redis is away, or the bucket is busy): the job waits and asks
  again later; never resent blindly.

What it cannot see: a delivery Customer.io does not list within the settle delay (it is then sent
again), or one it lists under other identifiers than the send used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import redis

from cio_worker import logs
from cio_worker.app_api import AppClient
from cio_worker.config import Settings
from cio_worker.customerio import CustomerIoClient
from cio_worker.errors import AuthError, DeliveryError, RejectedError, RetryableError
from cio_worker.job import Job
from cio_worker.kinds import Kind
from cio_worker.queue import ReceiptBook

log = logs.get_logger(__name__)

Verdict = Literal["found", "not_found", "unclear", "unavailable"]

#: Clocks differ between this host and Customer.io: a delivery created up to this long before
#: the attempt began (by our clock) still counts as the attempt's.
CLOCK_SKEW_S = 10
#: How long one look-up may wait for App bucket slots and pages, seconds: a worker thread is
#: not held longer; past it the verdict is `unavailable` and the job asks again later.
LOOKUP_MAX_WAIT_S = 5.0
#: Customer.io's names for each transactional channel's deliveries (MessageObject.type: email,
#: push, twilio, ...; an SMS is a `twilio` delivery).
CHANNEL_TYPES = {
    Kind.SEND_EMAIL: frozenset({"email"}),
    Kind.SEND_PUSH: frozenset({"push"}),
    Kind.SEND_SMS: frozenset({"twilio", "sms"}),
}
#: Listed candidates named in a verdict's detail, at most.
SHOWN = 5


@dataclass(frozen=True, slots=True)
class Finding:
    verdict: Verdict
    #: found: Customer.io's id of the delivery or trigger.
    remote_id: str | None = None
    #: What was seen, in words (for the log line and a dead letter's reason).
    detail: str = ""


class Reconciler:
    """Looks up whether an ambiguous message was accepted. One per worker process."""

    def __init__(
        self,
        settings: Settings,
        redis_client: redis.Redis,
        http_client: CustomerIoClient,
        *,
        app: AppClient | None = None,
    ) -> None:
        self.settings = settings
        self.receipts = ReceiptBook(redis_client, retention_days=settings.receipt_retention_days)
        self._redis = redis_client
        self._http = http_client
        self._app = app

    @property
    def app(self) -> AppClient:
        if self._app is None:
            self._app = AppClient(
                self.settings,
                redis_client=self._redis,
                http_client=self._http,
                max_wait_s=LOOKUP_MAX_WAIT_S,
                max_attempts=1,
            )
        return self._app

    def check(self, job: Job, since_s: float) -> Finding:
        """Did Customer.io accept `job`'s message in an attempt that began at `since_s`?"""
        try:
            ids = self._candidates(job, int(since_s) - CLOCK_SKEW_S)
        except AuthError as exc:
            return Finding(
                "unclear",
                detail=f"could not look it up: {exc.status_code} (the App API key may not read "
                "deliveries or triggers)",
            )
        except RejectedError as exc:
            if exc.status_code == 404:  # no such person or broadcast: nothing was sent to them
                ids = []
            else:
                return Finding("unclear", detail=f"could not look it up: {exc.status_code}")
        except (RetryableError, redis.RedisError) as exc:
            return Finding("unavailable", detail=f"look-up failed: {_describe(exc)}")
        try:
            claimed = self.receipts.owners(job.family.value, ids)
        except redis.RedisError as exc:
            return Finding("unavailable", detail=f"receipts unreadable: {_describe(exc)}")
        mine = [remote for remote in ids if claimed.get(remote) == job.id]
        if mine:
            return Finding("found", mine[0], "already recorded for this job")
        unknown = [remote for remote in ids if remote not in claimed]
        what, whats = (
            ("trigger", "triggers") if job.kind is Kind.BROADCAST else ("delivery", "deliveries")
        )
        if not unknown:
            others = f" ({len(ids)} listed, each recorded for another job)" if ids else ""
            return Finding("not_found", detail=f"no {what} since the attempt began{others}")
        if len(unknown) == 1:
            return Finding("found", unknown[0], f"{what} {unknown[0]} since the attempt began")
        shown = ", ".join(unknown[:SHOWN]) + (", ..." if len(unknown) > SHOWN else "")
        return Finding(
            "unclear",
            detail=f"{len(unknown)} {whats} since the attempt began that no job recorded "
            f"({shown}): cannot tell which, if any, is this job's",
        )

    def _candidates(self, job: Job, start_ts: int) -> list[str]:
        """Ids of the deliveries (or triggers) that could be this job's."""
        payload = job.payload
        if job.kind is Kind.BROADCAST:
            triggers = self.app.list_broadcast_triggers(int(payload["broadcast_id"]))
            return [t.id for t in triggers if t.created_at is None or t.created_at >= start_ts]
        id_type, person = next(iter(payload["identifiers"].items()))
        deliveries = self.app.list_person_messages(str(person), id_type=id_type, start_ts=start_ts)
        template = payload.get("transactional_message_id")
        channel = CHANNEL_TYPES.get(job.kind)
        return [
            d.id
            for d in deliveries
            if (d.created is None or d.created >= start_ts)
            and (d.type is None or channel is None or d.type in channel)
            and (not isinstance(template, int) or d.template_id in (None, template))
        ]


def _describe(exc: BaseException) -> str:
    status = exc.status_code if isinstance(exc, DeliveryError) else None
    return f"{type(exc).__name__}({status})" if status else f"{type(exc).__name__}: {exc}"
