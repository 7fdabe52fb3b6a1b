"""cio_worker for FastAPI (and any Starlette app): a lifespan and a dependency.

    import cio_worker.fastapi
    from fastapi import FastAPI

    app = FastAPI(lifespan=cio_worker.fastapi.lifespan)

    @app.post("/signup")
    async def signup(email: str, producer: cio_worker.fastapi.ProducerDep) -> str:
        return await producer.enqueue_track(email, "Signed Up")  # or aio.enqueue_track(...)

The lifespan builds one `AsyncProducer` (settings from the environment, or `settings=`) when the
app starts, makes it the event loop's default, so `cio_worker.aio.enqueue_*` use it too, and
closes its Redis connections when the app stops. Under `cio_worker.testing.capture()` (or the
`cio_jobs` pytest fixture) it installs the capture's producer instead: jobs stay in memory, and
no Redis is needed. Nothing connects at startup: an enqueue while Redis is away raises
`EnqueueError` in that request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends
from starlette.applications import Starlette
from starlette.requests import Request

from cio_worker import aio, testing
from cio_worker.config import Settings

__all__ = ["STATE_KEY", "ProducerDep", "lifespan", "producer"]

#: Where the lifespan keeps the producer: `app.state.<STATE_KEY>`.
STATE_KEY = "cio_worker_producer"


@asynccontextmanager
async def lifespan(app: Starlette, *, settings: Settings | None = None) -> AsyncIterator[None]:
    """`FastAPI(lifespan=cio_worker.fastapi.lifespan)`; with settings built in code,
    `lifespan=functools.partial(cio_worker.fastapi.lifespan, settings=settings)`; inside the
    app's own lifespan, `async with cio_worker.fastapi.lifespan(app): ...`."""
    captured = testing.current()
    built = aio.AsyncProducer(settings) if captured is None else captured.async_producer
    aio.configure(producer=built)
    setattr(app.state, STATE_KEY, built)
    try:
        yield
    finally:
        setattr(app.state, STATE_KEY, None)
        await built.aclose()


def producer(request: Request) -> aio.AsyncProducer:
    """The dependency: `Depends(cio_worker.fastapi.producer)`, or the `ProducerDep` type."""
    found: aio.AsyncProducer | None = getattr(request.app.state, STATE_KEY, None)
    if found is None:
        raise RuntimeError(
            "cio_worker.fastapi.producer: the app has no running cio_worker lifespan; "
            "build it with FastAPI(lifespan=cio_worker.fastapi.lifespan)"
        )
    return found


#: A route parameter annotated with it gets the app's producer: `producer: ProducerDep`.
ProducerDep = Annotated[aio.AsyncProducer, Depends(producer)]
