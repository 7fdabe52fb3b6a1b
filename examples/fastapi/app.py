"""A FastAPI app that tells Customer.io about sign-ups through cio_worker.

    uvicorn app:app            # CIO_WORKER_REDIS_URL etc. from the environment

`POST /signup` identifies the person and tracks "Signed Up"; each call returns as soon as Redis
holds the jobs, and cio_worker's workers deliver them. See README.md next to this file.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import cio_worker.fastapi
from cio_worker import EnqueueError, ValidationError, aio

app = FastAPI(title="cio_worker FastAPI example", lifespan=cio_worker.fastapi.lifespan)


class Signup(BaseModel):
    user_id: str
    email: str
    plan: str = "free"


@app.post("/signup", status_code=202)
async def signup(body: Signup, producer: cio_worker.fastapi.ProducerDep) -> dict[str, str]:
    try:
        identify_id = await producer.enqueue_identify(
            body.user_id, {"email": body.email, "plan": body.plan}
        )
        # The module-level call uses the same producer: the lifespan made it the loop's default.
        track_id = await aio.enqueue_track(body.user_id, "Signed Up", {"plan": body.plan})
    except ValidationError as exc:  # the field and the rule, e.g. "user_id: must not be empty"
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    except EnqueueError as exc:  # Redis away: nothing was stored, the client may retry
        raise HTTPException(status_code=503, detail="could not queue the sign-up") from exc
    return {"identify_job": identify_id, "track_job": track_id}
