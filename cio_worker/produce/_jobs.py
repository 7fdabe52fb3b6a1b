"""Every `enqueue_*` call, defined once: its parameters, its docs, its validation, its job.

Each function here builds what one call enqueues, without touching Redis: it validates its
arguments (_payloads.py, validation.py) and returns a `JobDraft`, the job's kind and payload; the
producer that stores it gives it its id (`new_job`). _calls.py turns each one into the call
itself, on every producer (`Producer.enqueue_<kind>` stores the job, `AsyncProducer.enqueue_<kind>`
awaits the store) and as a module-level function. So a builder's parameters and docstring are what
`help(cio_worker.enqueue_<kind>)` shows, and its docstring is written for that call.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Concatenate, NamedTuple, ParamSpec, cast

from cio_worker.ids import new_ulid_ms
from cio_worker.job import Job
from cio_worker.kinds import Kind
from cio_worker.produce import _payloads as payloads
from cio_worker.produce._payloads import KIND_IDENTIFY, KIND_PAGE, KIND_TRACK

PersonId = str | int
Timestamp = int | datetime | None
JsonObject = Mapping[str, Any] | None
PersonRef = str | int | Mapping[str, str]

P = ParamSpec("P")


class JobDraft(NamedTuple):
    """A job before it is stored: its kind, its validated payload, and the payload's compact
    JSON where validation encoded it anyway (Track kinds measure their operation): the bulk
    producer stores those bytes instead of encoding the payload again."""

    kind: Kind
    payload: dict[str, Any]
    payload_json: bytes | None = None


def new_job(draft: JobDraft) -> Job:
    """The job a producer stores: the draft's kind and payload, with a new id, created now."""
    job_id, ms = new_ulid_ms()
    # Created at the millisecond inside its id, which the stored JSON then need not repeat.
    # Positional arguments: a third faster than keywords.
    return Job(job_id, draft.kind, draft.payload, ms / 1000)


# -- Track API -----------------------------------------------------------------------------------
def identify(
    user_id: PersonId, traits: JsonObject = None, *, timestamp: Timestamp = None
) -> JobDraft:
    """Create or update a person. Returns the job id."""
    return JobDraft(KIND_IDENTIFY, *payloads.identify(user_id, traits, timestamp))


def track(
    user_id: PersonId, event: str, properties: JsonObject = None, *, timestamp: Timestamp = None
) -> JobDraft:
    """Record an event for a person; the job id is the event's dedup id."""
    encoded = payloads.event(KIND_TRACK, "user_id", user_id, event, properties, timestamp)
    return JobDraft(KIND_TRACK, *encoded)


def track_anonymous(
    anonymous_id: PersonId,
    event: str,
    properties: JsonObject = None,
    *,
    timestamp: Timestamp = None,
) -> JobDraft:
    """Record an event for an anonymous visitor (merged into the person on identify)."""
    encoded = payloads.event(
        Kind.TRACK_ANONYMOUS, "anonymous_id", anonymous_id, event, properties, timestamp
    )
    return JobDraft(Kind.TRACK_ANONYMOUS, *encoded)


def page(
    user_id: PersonId, url: str, properties: JsonObject = None, *, timestamp: Timestamp = None
) -> JobDraft:
    """Record a page view (an event whose name is the URL)."""
    encoded = payloads.event(KIND_PAGE, "user_id", user_id, url, properties, timestamp)
    return JobDraft(KIND_PAGE, *encoded)


def delete(user_id: PersonId) -> JobDraft:
    """Delete a person."""
    return JobDraft(Kind.DELETE, payloads.person_only(user_id))


def merge(primary: PersonRef, secondary: PersonRef) -> JobDraft:
    """Merge `secondary` into `primary` (each an id or `{"id"|"email"|"cio_id": value}`)."""
    return JobDraft(Kind.MERGE, payloads.merge(primary, secondary))


def suppress(user_id: PersonId) -> JobDraft:
    """Suppress a person (delete and refuse future data)."""
    return JobDraft(Kind.SUPPRESS, payloads.person_only(user_id))


def unsuppress(user_id: PersonId) -> JobDraft:
    """Lift a suppression."""
    return JobDraft(Kind.UNSUPPRESS, payloads.person_only(user_id))


def add_device(
    user_id: PersonId,
    device_id: str,
    platform: str,
    *,
    last_used: Timestamp = None,
    attributes: JsonObject = None,
) -> JobDraft:
    """Add or update a person's push device (`platform` is `ios` or `android`)."""
    encoded = payloads.add_device(user_id, device_id, platform, last_used, attributes)
    return JobDraft(Kind.ADD_DEVICE, *encoded)


def remove_device(user_id: PersonId, device_id: str) -> JobDraft:
    """Remove a person's push device."""
    return JobDraft(Kind.REMOVE_DEVICE, payloads.remove_device(user_id, device_id))


# -- App API -------------------------------------------------------------------------------------
def _message(
    kind: Kind,
    /,
    transactional_message_id: int | str,
    *,
    identifiers: Mapping[str, str | int],
    to: str | None = None,
    message_data: JsonObject = None,
    **fields: Any,
) -> JobDraft:
    body = payloads.message(kind, transactional_message_id, identifiers, to, message_data, fields)
    return JobDraft(kind, body)


def _of_kind(
    template: Callable[Concatenate[Kind, P], JobDraft], kind: Kind, doc: str
) -> Callable[P, JobDraft]:
    """`template` for one `kind`, named after it: the builder of that kind, with the template's
    parameters after `kind` as its real signature (for help() and mypy).

    A `functools.partial`: a bulk send calls the builder per job, and a partial passes the
    arguments on to `template` without a Python call of its own (`__wrapped__` lets
    `typing.get_type_hints` resolve the annotations here)."""
    build = functools.partial(template, kind)
    signature = inspect.signature(template)
    described = {
        "__signature__": signature.replace(parameters=list(signature.parameters.values())[1:]),
        "__annotations__": {k: v for k, v in template.__annotations__.items() if k != "kind"},
        "__name__": kind.value,
        "__qualname__": kind.value,
        "__doc__": doc,
        "__module__": template.__module__,
        "__wrapped__": template,
    }
    for name, value in described.items():
        setattr(build, name, value)
    return cast(Callable[P, JobDraft], build)


send_email = _of_kind(
    _message,
    Kind.SEND_EMAIL,
    "Send a transactional email; extra App API fields (`subject`, `from_`...) by keyword.",
)
send_push = _of_kind(
    _message,
    Kind.SEND_PUSH,
    "Send a transactional push (`title`, `message`, `link`... by keyword).",
)
send_sms = _of_kind(_message, Kind.SEND_SMS, "Send a transactional SMS.")


def broadcast(
    broadcast_id: int,
    *,
    data: JsonObject = None,
    recipients: Mapping[str, Any] | None = None,
    emails: list[str] | None = None,
    ids: list[str | int] | None = None,
    per_user_data: list[Mapping[str, Any]] | None = None,
    data_file_url: str | None = None,
    id_ignore_missing: bool | None = None,
    email_ignore_missing: bool | None = None,
    email_add_duplicates: bool | None = None,
) -> JobDraft:
    """Trigger an API broadcast, with at most one audience key (none: the UI's audience)."""
    payload = payloads.broadcast(
        broadcast_id,
        data,
        {
            "recipients": recipients,
            "emails": emails,
            "ids": ids,
            "per_user_data": per_user_data,
            "data_file_url": data_file_url,
        },
        {
            "id_ignore_missing": id_ignore_missing,
            "email_ignore_missing": email_ignore_missing,
            "email_add_duplicates": email_add_duplicates,
        },
    )
    return JobDraft(Kind.BROADCAST, payload)
