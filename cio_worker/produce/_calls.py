"""The `enqueue_*` calls of both producers, sync and asyncio, made from one definition each.

A call is defined once, as a job builder (_jobs.py: parameters, docs, validation, the payload).
`Enqueue` turns a builder into a method of every producer class, the way stamina and structlog
make their sync and async halves from one definition: on a class whose `_store` is a coroutine
function (`AsyncProducer`) the method is an `async def` that awaits the store, on any other
(`Producer`, `BulkProducer`) a plain one. `on_default` and `on_default_async` make the
module-level functions. Every one of them has the builder's name, docstring and parameters, so
`help()` and `inspect.signature` show the real call, and mypy sees it exactly through the
`__get__` overloads (ParamSpec). At run time each producer class gets its methods as plain
functions when it is defined (`EnqueueCalls.__init_subclass__`), so a call costs no descriptor.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Coroutine
from inspect import Parameter
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, Self, TypeVar, overload

from cio_worker.produce import _jobs as jobs
from cio_worker.produce._jobs import JobDraft

P = ParamSpec("P")
F = TypeVar("F", bound=Callable[..., Any])
#: What an async `enqueue_*` returns: a coroutine of the job id.
Pending = Coroutine[Any, Any, str]


class StoresNow(Protocol):
    """A producer whose `_store` returns the job id (`Producer`, `BulkProducer`)."""

    def _store(self, draft: JobDraft, /) -> str: ...


class StoresLater(Protocol):
    """A producer whose `_store` is awaited for the job id (`AsyncProducer`)."""

    def _store(self, draft: JobDraft, /) -> Pending: ...


class Enqueue(Generic[P]):
    """One `enqueue_*` call, as a method of every producer class (see the module)."""

    def __init__(self, build: Callable[P, JobDraft]) -> None:
        self.build = build
        self.name = f"enqueue_{build.__name__}"
        self._methods: dict[type[Any], Callable[..., Any]] = {}

    @overload
    def __get__(
        self, producer: None, owner: type[StoresLater]
    ) -> Callable[Concatenate[StoresLater, P], Pending]: ...
    @overload
    def __get__(
        self, producer: None, owner: type[StoresNow]
    ) -> Callable[Concatenate[StoresNow, P], str]: ...
    @overload
    def __get__(self, producer: None, owner: type[object]) -> Self: ...
    @overload
    def __get__(self, producer: StoresLater, owner: type[object]) -> Callable[P, Pending]: ...
    @overload
    def __get__(self, producer: StoresNow, owner: type[object]) -> Callable[P, str]: ...
    def __get__(self, producer: object, owner: type[object]) -> Any:
        if not hasattr(owner, "_store"):  # `EnqueueCalls` itself: the definition
            return self
        method = self._methods.get(owner)
        if method is None:
            method = self._methods[owner] = self._method_of(owner)
        return method if producer is None else types.MethodType(method, producer)

    def _method_of(self, owner: type[Any]) -> Callable[..., Any]:
        """The method for `owner`: a coroutine function if `owner._store` is one."""
        build = self.build

        async def store_later(producer: StoresLater, /, *args: Any, **kwargs: Any) -> str:
            return await producer._store(build(*args, **kwargs))

        def store_now(producer: StoresNow, /, *args: Any, **kwargs: Any) -> str:
            return producer._store(build(*args, **kwargs))

        method = store_later if inspect.iscoroutinefunction(owner._store) else store_now
        method.__module__ = owner.__module__
        return _describe(method, build, f"{owner.__qualname__}.{self.name}", takes_self=True)


def on_default(build: Callable[P, JobDraft], default: Callable[[], StoresNow]) -> Callable[P, str]:
    """`cio_worker.enqueue_<kind>`: the call `build` defines, on `default()`'s producer."""

    def enqueue(*args: P.args, **kwargs: P.kwargs) -> str:
        return default()._store(build(*args, **kwargs))

    return _describe(enqueue, build, f"enqueue_{build.__name__}")


def on_default_async(
    build: Callable[P, JobDraft], default: Callable[[], StoresLater]
) -> Callable[P, Pending]:
    """`cio_worker.aio.enqueue_<kind>`: the call `build` defines, awaited on `default()`'s."""

    async def enqueue(*args: P.args, **kwargs: P.kwargs) -> str:
        return await default()._store(build(*args, **kwargs))

    return _describe(enqueue, build, f"enqueue_{build.__name__}")


def _describe(
    call: F, build: Callable[..., JobDraft], qualname: str, *, takes_self: bool = False
) -> F:
    """Give `call` the name, docstring and parameters of the call `build` defines; it returns
    the job id (or a coroutine of it), and a method takes the producer first."""
    module = call.__module__
    functools.update_wrapper(call, build)  # also `__wrapped__`: annotations resolve in _jobs.py
    call.__module__ = module
    call.__name__ = f"enqueue_{build.__name__}"
    call.__qualname__ = qualname
    call.__annotations__ = {**build.__annotations__, "return": "str"}
    signature = inspect.signature(build).replace(return_annotation="str")
    if takes_self:
        parameters = list(signature.parameters.values())
        fields = any(p.kind is p.VAR_KEYWORD for p in parameters)  # one may be named `self`
        kind = Parameter.POSITIONAL_ONLY if fields else Parameter.POSITIONAL_OR_KEYWORD
        signature = signature.replace(parameters=[Parameter("self", kind), *parameters])
    call.__signature__ = signature  # type: ignore[attr-defined]
    return call


class EnqueueCalls:
    """The `enqueue_*` methods every producer has: the job builders of _jobs.py, each handing
    the kind and payload it built to the producer's `_store`."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give each producer class its `enqueue_*` methods as plain functions in its own
        namespace: a call then skips the descriptor (`Enqueue.__get__` and a bound method made
        per call), which a bulk enqueue would pay on every job."""
        super().__init_subclass__(**kwargs)
        if not hasattr(cls, "_store"):
            return
        for name, call in vars(EnqueueCalls).items():
            if not isinstance(call, Enqueue):
                continue
            current = next(k.__dict__[name] for k in cls.__mro__ if name in k.__dict__)
            if current is call or current in call._methods.values():  # not overridden
                setattr(cls, name, call.__get__(None, cls))

    # -- Track API -------------------------------------------------------------------------------
    enqueue_identify = Enqueue(jobs.identify)
    enqueue_track = Enqueue(jobs.track)
    enqueue_track_anonymous = Enqueue(jobs.track_anonymous)
    enqueue_page = Enqueue(jobs.page)
    enqueue_delete = Enqueue(jobs.delete)
    enqueue_merge = Enqueue(jobs.merge)
    enqueue_suppress = Enqueue(jobs.suppress)
    enqueue_unsuppress = Enqueue(jobs.unsuppress)
    enqueue_add_device = Enqueue(jobs.add_device)
    enqueue_remove_device = Enqueue(jobs.remove_device)
    # -- App API ---------------------------------------------------------------------------------
    enqueue_send_email = Enqueue(jobs.send_email)
    enqueue_send_push = Enqueue(jobs.send_push)
    enqueue_send_sms = Enqueue(jobs.send_sms)
    enqueue_broadcast = Enqueue(jobs.broadcast)
