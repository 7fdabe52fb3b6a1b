"""How long to wait before the next attempt: one pure function (dramatiq's compute_backoff idea).

delay = uniform(0, min(max, base * 2 ** (attempt - 1)))   -- "full jitter" (AWS architecture blog)
and never less than the server's Retry-After, and never more than `max` either way.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def compute_backoff_s(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    rand: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempt - 1))
    delay = rand(0.0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(delay, max_s)
