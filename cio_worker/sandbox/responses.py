"""Each API's answer shapes: successes, 401, 429, injected faults and body-check problems."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cio_worker.sandbox.checks import Problem
from cio_worker.sandbox.endpoints import Api

UNAUTHORIZED_MESSAGE = "Unauthorized request"
RATE_LIMITED_MESSAGE = "rate limit exceeded"


@dataclass(frozen=True)
class Reply:
    """What to answer: status, JSON body, extra headers; `dropped` marks data silently dropped."""

    status: int
    body: object
    headers: dict[str, str] = field(default_factory=dict)
    dropped: bool = False


def meta_error(status: int, message: str) -> Reply:
    """Track v1 and App errors: `{"meta": {"error": message}}`."""
    return Reply(status, {"meta": {"error": message}})


def unauthorized(api: Api, *, strict: bool) -> Reply:
    """Wrong or missing credentials; non-strict Pipelines answers 200 and drops the data."""
    if api == "pipelines":
        if not strict:
            return Reply(200, {}, dropped=True)
        return Reply(401, {"error": UNAUTHORIZED_MESSAGE})
    return meta_error(401, UNAUTHORIZED_MESSAGE)


def retry_after_header(seconds: float) -> dict[str, str]:
    """`Retry-After` in whole seconds, rounded up, never 0."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def rate_limited(wait_s: float, *, send_retry_after: bool) -> Reply:
    """429, with `Retry-After` when configured."""
    headers = retry_after_header(wait_s) if send_retry_after else {}
    return Reply(429, {"meta": {"error": RATE_LIMITED_MESSAGE}}, headers)


def injected(api: Api, status: int, retry_after_s: float | None) -> Reply:
    """The answer of an injected fault, in the API's error shape."""
    headers = {} if retry_after_s is None else retry_after_header(retry_after_s)
    if status < 400:
        return Reply(status, {}, headers)
    message = "injected fault"
    body: object = {"error": message} if api == "pipelines" else {"meta": {"error": message}}
    return Reply(status, body, headers)


def problems_reply(api: Api, problems: list[Problem], *, strict: bool) -> Reply:
    """The error answer for body-check problems (non-empty), in the API's shape."""
    if api == "pipelines":
        if not strict:
            return Reply(200, {}, dropped=True)
        return Reply(400, {"meta": {"errors": [problem.message for problem in problems]}})
    if api == "track_v2":
        return _track_v2(problems)
    if api == "app":
        unprocessable = [problem for problem in problems if problem.status == 422]
        if unprocessable:
            return Reply(422, {"errors": [_jsonapi_error(problem) for problem in unprocessable]})
    return meta_error(problems[0].status, problems[0].message)


def _track_v2(problems: list[Problem]) -> Reply:
    whole = [problem for problem in problems if problem.index is None]
    if whole:
        errors = [_v2_error(problem) for problem in whole]
        return Reply(whole[0].status, {"errors": errors})
    errors = [{"batch_index": problem.index, **_v2_error(problem)} for problem in problems]
    return Reply(207, {"errors": errors})


def _v2_error(problem: Problem) -> dict[str, object]:
    return {"reason": problem.reason, "field": problem.field, "message": problem.message}


def _jsonapi_error(problem: Problem) -> dict[str, object]:
    return {"detail": problem.message, "source": {"pointer": problem.field}, "status": "422"}
