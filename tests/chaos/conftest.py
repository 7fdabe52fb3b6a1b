"""Fixtures for the chaos suite: a factory of private stacks, each stopped when its test ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from .harness import ChaosStack, StackFactory


@pytest.fixture
def chaos_stack(tmp_path: Path) -> Iterator[StackFactory]:
    """`chaos_stack(CIO_WORKER_X="1", ...)` starts a private Redis (AOF on) and the sandbox with
    the worker settings given (on top of harness.BASE_SETTINGS); the test starts workers with
    `stack.start_worker`. Every process of every stack is stopped at the end, pass or fail."""
    with ExitStack() as cleanup:
        count = 0

        def start(**settings: str) -> ChaosStack:
            nonlocal count
            stack = ChaosStack.start(tmp_path / f"stack{count}", settings)
            count += 1
            cleanup.callback(stack.close)  # each close runs even if another one raised
            return stack

        yield start
