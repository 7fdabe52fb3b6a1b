"""backoff.py: exponential backoff with full jitter, floored by Retry-After and capped at max."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cio_worker.backoff import compute_backoff_s


def top(low: float, high: float) -> float:
    """A `rand` that always draws the upper bound: the delay equals the ceiling."""
    return high


def bottom(low: float, high: float) -> float:
    """A `rand` that always draws zero."""
    return 0.0


class TestComputeBackoff:
    def test_ceiling_doubles_per_attempt_and_caps_at_max(self) -> None:
        """At the upper bound the delay is base * 2**(attempt-1), until it reaches max."""
        delays = [compute_backoff_s(n, base_s=1.0, max_s=300.0, rand=top) for n in range(1, 13)]
        assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]

    def test_ceiling_scales_with_base(self) -> None:
        """The base sets the first ceiling and every doubling after it."""
        delays = [compute_backoff_s(n, base_s=0.5, max_s=10.0, rand=top) for n in range(1, 7)]
        assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]

    def test_first_attempt_ceiling_is_base(self) -> None:
        """After attempt 1 the jitter is drawn from [0, base]."""
        calls: list[tuple[float, float]] = []

        def record(low: float, high: float) -> float:
            calls.append((low, high))
            return low

        compute_backoff_s(1, base_s=2.5, max_s=300.0, rand=record)
        assert calls == [(0.0, 2.5)]

    @pytest.mark.parametrize(("attempt", "ceiling"), [(1, 3.0), (3, 12.0), (5, 48.0), (8, 100.0)])
    def test_rand_draws_between_zero_and_the_ceiling(self, attempt: int, ceiling: float) -> None:
        """Each delay is one draw from [0, min(max, base * 2**(attempt-1))]."""
        calls: list[tuple[float, float]] = []

        def record(low: float, high: float) -> float:
            calls.append((low, high))
            return high / 2

        assert compute_backoff_s(attempt, base_s=3.0, max_s=100.0, rand=record) == ceiling / 2
        assert calls == [(0.0, ceiling)]

    def test_retry_after_is_the_floor(self) -> None:
        """A zero draw still waits as long as the server's Retry-After asks."""
        assert compute_backoff_s(1, base_s=1.0, max_s=300.0, retry_after_s=42.0, rand=bottom) == 42

    def test_longer_jitter_beats_a_shorter_retry_after(self) -> None:
        """Retry-After is a floor, not a replacement: a longer jittered delay stands."""
        assert compute_backoff_s(5, base_s=1.0, max_s=300.0, retry_after_s=3.0, rand=top) == 16

    @pytest.mark.parametrize("rand", [top, bottom])
    def test_never_above_max_even_with_larger_retry_after(
        self, rand: Callable[[float, float], float]
    ) -> None:
        """A Retry-After beyond max is cut to max."""
        delay = compute_backoff_s(3, base_s=1.0, max_s=60.0, retry_after_s=3600.0, rand=rand)
        assert delay == 60.0

    def test_zero_retry_after_changes_nothing(self) -> None:
        """Retry-After: 0 lets the jittered delay stand, even a zero one."""
        assert compute_backoff_s(4, base_s=1.0, max_s=300.0, retry_after_s=0.0, rand=bottom) == 0

    def test_full_jitter_with_the_real_random(self) -> None:
        """1,000 real draws for attempt 5 lie in [0, min(max, base*16)], spread from low to high."""
        base, maximum = 1.0, 300.0
        ceiling = min(maximum, base * 16)
        draws = [compute_backoff_s(5, base_s=base, max_s=maximum) for _ in range(1000)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert len(set(draws)) > 1
        # Full jitter starts at 0, not at half the ceiling ("equal jitter"); the chance that
        # 1,000 uniform draws all miss the lower half is 2**-1000.
        assert min(draws) < ceiling / 2 < max(draws)

    def test_real_random_respects_a_small_max(self) -> None:
        """With max below base*16, real draws for attempt 5 never exceed max."""
        draws = [compute_backoff_s(5, base_s=1.0, max_s=5.0) for _ in range(1000)]
        assert all(0.0 <= d <= 5.0 for d in draws)
        assert len(set(draws)) > 1
