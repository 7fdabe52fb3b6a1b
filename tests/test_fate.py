"""fate.decide: the one decision "exception -> fate", as a pure function of the family's health."""

from __future__ import annotations

import time

import pytest

from cio_worker.config import Settings
from cio_worker.errors import (
    AuthError,
    RateLimitedError,
    RejectedError,
    ServerError,
    TransportError,
)
from cio_worker.limiter._circuit import Health
from cio_worker.worker._fate import (
    classify,
    decide,
    out_of_time,
    settle_finding,
    settle_unfinished,
)

SETTINGS = Settings(max_attempts=3, backoff_base_s=1, backoff_max_s=8, retry_for_s=3600)
HEALTHY = Health(healthy=True)
DOWN = Health(healthy=False)
NOW = 1_800_000_000.0


def fate_of(exc: Exception, **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "settings": SETTINGS,
        "attempts_before": 0,
        "enqueued_at_s": NOW - 10,
        "health": HEALTHY,
        "now_s": NOW,
    }
    args.update(kw)
    return decide(classify(exc), exc, **args)  # type: ignore[arg-type]


def server_error(status: int = 503) -> ServerError:
    return ServerError(f"{status} from POST", status_code=status)


class TestClassify:
    @pytest.mark.parametrize(
        ("exc", "kind"),
        [
            (RateLimitedError("busy"), "rate_limited"),
            (server_error(), "transient"),
            (TransportError("refused", request_sent=False), "transient"),
            (RejectedError("400", status_code=400), "permanent"),
            (AuthError("401", credential="track", status_code=401), "permanent"),
            (KeyError("bug"), "crash"),
        ],
    )
    def test_each_error_class_has_one_kind(self, exc: Exception, kind: str) -> None:
        assert classify(exc) == kind


class TestTransient:
    def test_healthy_family_counts_an_attempt_and_backs_off(self) -> None:
        fate = fate_of(server_error(), attempts_before=1)
        assert fate.action == "retry" and fate.attempt and not fate.split
        assert 0 <= fate.delay_s <= 2  # full jitter under base * 2 ** (2 - 1)
        assert fate.status == 503

    def test_healthy_family_dead_letters_when_attempts_run_out(self) -> None:
        fate = fate_of(server_error(500), attempts_before=2)
        assert fate.action == "dead" and fate.attempt
        assert fate.reason.startswith("gave up after 3 attempts: 500")

    def test_an_outage_parks_without_an_attempt(self) -> None:
        """However many attempts were spent, an open circuit never dead-letters the job."""
        fate = fate_of(server_error(), attempts_before=2, health=DOWN)
        assert fate.action == "park" and not fate.attempt

    def test_a_partition_is_an_outage_too(self) -> None:
        refused = TransportError("connection refused", request_sent=False)
        assert fate_of(refused, health=DOWN).action == "park"

    def test_a_batch_failure_is_no_single_jobs_attempt(self) -> None:
        fate = fate_of(server_error(), attempts_before=9, jobs=50)
        assert fate.action == "retry" and not fate.attempt and fate.split

    def test_the_retry_budget_ends_it_whatever_the_health(self) -> None:
        for health in (HEALTHY, DOWN):
            fate = fate_of(server_error(), enqueued_at_s=NOW - 3600, health=health)
            assert fate.action == "dead"
            assert "not delivered within 3600 s of its enqueue (CIO_WORKER_RETRY_FOR_S)" in (
                fate.reason
            )
            assert "503" in fate.reason

    def test_budget_in_days_reads_as_days(self) -> None:
        fate = fate_of(
            server_error(),
            settings=SETTINGS.replace(retry_for_s=259_200),
            enqueued_at_s=NOW - 259_200,
        )
        assert "within 3 days" in fate.reason

    def test_an_ambiguous_message_follows_its_policy(self) -> None:
        timeout = TransportError("read timeout", request_sent=True)
        dead = fate_of(timeout, message=True, settings=SETTINGS.replace(ambiguous_messages="dead"))
        assert dead.action == "dead" and dead.reason.startswith("ambiguous: ")
        retry = fate_of(
            timeout, message=True, settings=SETTINGS.replace(ambiguous_messages="retry")
        )
        assert retry.action == "retry"
        assert fate_of(timeout, message=False).action == "retry"  # events have a dedup id


class TestOthers:
    def test_rate_limited_waits_without_an_attempt(self) -> None:
        fate = fate_of(RateLimitedError("429", retry_after_seconds=3, status_code=429))
        assert fate.action == "retry" and not fate.attempt and fate.delay_s == 3
        assert fate.rate_limited
        busy = fate_of(RateLimitedError("bucket busy", retry_after_seconds=0.4))
        assert busy.action == "retry" and not busy.rate_limited and busy.delay_s == 0.4

    def test_permanent_and_crash_dead_letter_at_once(self) -> None:
        assert fate_of(RejectedError("400 bad", status_code=400)).action == "dead"
        crash = fate_of(KeyError("x"))
        assert crash.action == "dead" and crash.reason.startswith("delivery crashed")


def test_out_of_time_uses_the_clock_when_not_given() -> None:
    assert out_of_time(time.time() - 3601, SETTINGS)
    assert not out_of_time(time.time() - 10, SETTINGS)


class TestSettleAnUnfinishedSend:
    """A message claimed again while an earlier attempt may have reached Customer.io: the
    policy is decided here, the deliverer only carries it out."""

    def test_retry_sends_again_and_dead_dead_letters(self) -> None:
        assert settle_unfinished(SETTINGS.replace(ambiguous_messages="retry"), 0.0).action == "send"
        dead = settle_unfinished(SETTINGS.replace(ambiguous_messages="dead"), 0.0)
        assert dead.action == "dead"
        assert "CIO_WORKER_AMBIGUOUS_MESSAGES=dead" in dead.reason

    def test_reconcile_waits_for_the_listings_then_asks(self) -> None:
        settings = SETTINGS.replace(ambiguous_messages="reconcile", reconcile_settle_s=60.0)
        early = settle_unfinished(settings, since_s=1_000.0, now_s=1_015.0)
        assert (early.action, early.delay_s) == ("wait", 45.0)
        assert settle_unfinished(settings, since_s=1_000.0, now_s=1_060.0).action == "ask"

    def test_what_customerio_answered_decides(self) -> None:
        settings = SETTINGS.replace(ambiguous_messages="reconcile", reconcile_settle_s=5.0)
        now = time.time()

        def settle(verdict, remote_id=None, enqueued=now):  # type: ignore[no-untyped-def]
            return settle_finding(settings, verdict, "two unknown deliveries", remote_id, enqueued)

        assert settle("found", "dlv-1").action == "delivered"
        assert settle("found", None).action == "dead"  # found, but no id to record: never guess
        assert settle("not_found").action == "send"
        assert settle("unavailable").action == "wait"
        assert settle("unavailable", enqueued=now - settings.retry_for_s - 1).action == "dead"
        unclear = settle("unclear")
        assert unclear.action == "dead"
        assert unclear.reason.startswith("ambiguous: two unknown deliveries; not sent again")
