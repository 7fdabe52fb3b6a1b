"""The consumer watchdog: an idle worker with messages waiting is stuck and must be restarted."""

from __future__ import annotations

from cio_worker.worker._watchdog import ConsumerWatchdog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[ConsumerWatchdog, Clock, list[str]]:
    clock, calls = Clock(), []
    dog = ConsumerWatchdog(stall_after_s=60, on_stall=lambda: calls.append("stop"), clock=clock)
    return dog, clock, calls


class TestStall:
    def test_idle_with_messages_waiting_for_the_whole_window_is_a_stall(self) -> None:
        """Messages waiting for 60 s while no task started: the process is stopped."""
        dog, clock, calls = make()
        assert not dog.check(5)
        clock.now += 59
        assert not dog.check(5)
        clock.now += 2
        assert dog.check(5)
        assert calls == ["stop"]

    def test_a_busy_worker_is_not_stalled(self) -> None:
        """A task still running (e.g. a slow request) is work, not a stall."""
        dog, clock, calls = make()
        dog.task_started()
        clock.now += 600
        assert not dog.check(5)
        assert calls == []

    def test_an_empty_queue_resets_the_window(self) -> None:
        """Waiting must be continuous: an empty moment means the worker kept up."""
        dog, clock, calls = make()
        dog.check(5)
        clock.now += 50
        dog.check(0)
        clock.now += 50
        assert not dog.check(5)
        assert calls == []

    def test_a_recent_task_start_means_the_consumer_works(self) -> None:
        """A task started 10 s ago: the queue is being drained, just not empty."""
        dog, clock, calls = make()
        dog.check(5)
        clock.now += 55
        dog.task_started()
        dog.task_finished()
        clock.now += 10
        assert not dog.check(5)
        assert calls == []
