"""SandboxState: all one sandbox app remembers, kept on `app.state` so apps stay independent."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from cio_worker.sandbox.appdata import AppData
from cio_worker.sandbox.config import SandboxConfig
from cio_worker.sandbox.faults import FaultInjector
from cio_worker.sandbox.limits import FAMILIES, Limits
from cio_worker.sandbox.recorder import Recorder


@dataclass
class SandboxState:
    """The configuration plus the mutable parts: limits, the request log, faults, trigger ids,
    the workspace the App API's reads answer from, and the listing lag now in force (starts as
    `config.listing_lag_s`; `POST /_sandbox/config` changes it, a reset restores it)."""

    config: SandboxConfig
    limits: Limits
    recorder: Recorder
    faults: FaultInjector
    app_data: AppData
    last_trigger_id: int = 0
    listing_lag_s: float = 0.0

    @classmethod
    def create(cls, config: SandboxConfig) -> SandboxState:
        """Fresh state for `config`."""
        limits = Limits(config)
        windows_s = {family: limits.window_s(family) for family in FAMILIES}
        return cls(
            config,
            limits,
            Recorder(windows_s),
            FaultInjector(),
            AppData.generate(),
            listing_lag_s=config.listing_lag_s,
        )

    def new_trigger_id(self) -> int:
        """The next broadcast trigger id (never reused, not even after a reset)."""
        self.last_trigger_id += 1
        return self.last_trigger_id

    def reset(self) -> None:
        """Clear the log, stats, limits and faults and restore the configured listing lag (the
        workspace, with what was sent, stays: POST /_sandbox/app/seed replaces it)."""
        self.recorder.reset()
        self.limits.reset()
        self.faults.set(None)
        self.listing_lag_s = self.config.listing_lag_s


def sandbox_state(request: Request) -> SandboxState:
    """The state of the app serving `request`."""
    state = request.app.state.sandbox
    if not isinstance(state, SandboxState):  # pragma: no cover - only if someone replaced it
        raise TypeError("app.state.sandbox is not a SandboxState")
    return state
