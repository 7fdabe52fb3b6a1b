"""A read of reads.py as a method of a client: `AppClient`'s, or `AsyncAppClient`'s coroutine.

`get_person = as_method(_one, reads.get_person)` in a client's body gives it `get_person` with
the read's parameters (mypy sees them exactly, through ParamSpec), name and docstring; calling it
builds the read's description, then hands it to the client's `_one`, which does the I/O.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

P = ParamSpec("P")
C = TypeVar("C")
R = TypeVar("R")
S = TypeVar("S")
F = TypeVar("F", bound=Callable[..., Any])


def as_method(run: Callable[[C, R], S], read: Callable[P, R]) -> Callable[Concatenate[C, P], S]:
    """`read` (reads.py) as a method that hands what it describes to the client's `run`."""

    def method(self: C, /, *args: P.args, **kwargs: P.kwargs) -> S:
        return run(self, read(*args, **kwargs))  # the arguments are checked now

    return _shown_as(read, method, run)


def as_coroutine(
    run: Callable[[C, R], Awaitable[S]], read: Callable[P, R]
) -> Callable[Concatenate[C, P], Coroutine[Any, Any, S]]:
    """`read` (reads.py) as a coroutine method that awaits the client's `run` of it."""

    async def method(self: C, /, *args: P.args, **kwargs: P.kwargs) -> S:
        return await run(self, read(*args, **kwargs))

    return _shown_as(read, method, run)


def _shown_as(read: Callable[..., object], method: F, run: Callable[..., object]) -> F:
    """`method` under `read`'s name and docstring, showing `self`, `read`'s parameters and what
    `run` gives (`T | None` of a `One[Person]` read shows as `Person | None`)."""
    signature = inspect.signature(read)
    owner = run.__qualname__.rpartition(".")[0]
    item = str(signature.return_annotation).partition("[")[2].removesuffix("]")
    returns = re.sub(r"\bT\b", item, str(inspect.signature(run).return_annotation))
    method.__name__ = read.__name__
    method.__qualname__ = f"{owner}.{read.__name__}"
    method.__doc__ = read.__doc__
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)]
        + list(signature.parameters.values()),
        return_annotation=returns,
    )
    return method
