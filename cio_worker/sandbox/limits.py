"""Rate limits per API family, as strict rolling windows over accepted requests."""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

from cio_worker.sandbox.config import SandboxConfig

Family = Literal["track", "pipelines", "transactional", "broadcast", "app"]

#: Every family, in the order stats list them.
FAMILIES: tuple[Family, ...] = ("track", "pipelines", "transactional", "broadcast", "app")

#: Length of the rolling window for every per-second limit, seconds.
SECOND_WINDOW_S = 1.0


class RollingWindow:
    """A sliding-log limiter: admit an arrival only if fewer than `limit` were admitted in
    `(now - window_s, now]`.

    Exact, unlike a fixed window, which lets twice the limit through around a boundary; the cost
    is one float per admitted arrival still inside the window. Rejected arrivals are not logged,
    so a client hammering a full window does not extend its own ban.
    """

    def __init__(self, *, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._admitted: deque[float] = deque()

    def admit(self, now: float) -> float | None:
        """Admit an arrival at `now`; None if admitted, else seconds until one would be."""
        horizon = now - self.window_s
        while self._admitted and self._admitted[0] <= horizon:
            self._admitted.popleft()
        if len(self._admitted) < self.limit:
            self._admitted.append(now)
            return None
        # The arrival that must leave the window before one more fits.
        blocking = self._admitted[len(self._admitted) - self.limit]
        return blocking + self.window_s - now

    def clear(self) -> None:
        """Forget every admitted arrival."""
        self._admitted.clear()


def family_windows(config: SandboxConfig) -> dict[Family, tuple[int, float]]:
    """(most accepted requests, window length in seconds) per family."""
    return {
        "track": (math.floor(config.track_rps), SECOND_WINDOW_S),
        "pipelines": (math.floor(config.pipelines_rps), SECOND_WINDOW_S),
        "transactional": (math.floor(config.transactional_rps), SECOND_WINDOW_S),
        "broadcast": (1, config.broadcast_interval_s),
        "app": (math.floor(config.app_rps), SECOND_WINDOW_S),
    }


class Limits:
    """One rolling window per family."""

    def __init__(self, config: SandboxConfig) -> None:
        self._windows = {
            family: RollingWindow(limit=limit, window_s=window_s)
            for family, (limit, window_s) in family_windows(config).items()
        }

    def window_s(self, family: Family) -> float:
        """The family's window length, seconds."""
        return self._windows[family].window_s

    def admit(self, family: Family, now: float) -> float | None:
        """Admit a request of `family` at `now`; None if admitted, else seconds to wait."""
        return self._windows[family].admit(now)

    def reset(self) -> None:
        """Forget all admitted arrivals."""
        for window in self._windows.values():
            window.clear()
