"""`APIClient` and its request classes (the official `customerio-python/customerio/api.py`):
transactional email, push and SMS enqueue one job each; WhatsApp, inbox and in-app messages have
no cio_worker job.

The request classes are the official ones field for field (same constructor arguments, same
attributes, same `_to_dict()` body, `attach()`), so code that builds them needs no change.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from cio_worker.compat._client_base import (
    ClientBase,
    CustomerIOException,
    Region,
    Regions,
    customerio_errors,
    unsupported_call,
)
from cio_worker.compat._common import sanitize
from cio_worker.produce import Producer

_COMMON = ("transactional_message_id", "identifiers", "disable_message_retention", "queue_draft")
_COMMON_TAIL = ("message_data", "send_at", "language")
#: Attribute -> body field, per request class (the official field maps; `_from` is `from`,
#: a push's `device` is `custom_device`).
EMAIL_FIELDS = {
    **{name: name for name in (*_COMMON, *_COMMON_TAIL)},
    "_from": "from",
    **{
        name: name
        for name in (
            "to", "headers", "reply_to", "cc", "bcc", "subject", "preheader", "body",
            "body_plain", "body_amp", "fake_bcc", "send_to_unsubscribed", "tracked",
            "attachments", "disable_css_preprocessing",
        )
    },
}  # fmt: skip
PUSH_FIELDS = {
    **{name: name for name in (*_COMMON, *_COMMON_TAIL)},
    **{
        name: name
        for name in (
            "to", "send_to_unsubscribed", "title", "message", "image_url", "link",
            "custom_data", "custom_payload", "sound",
        )
    },
    "device": "custom_device",
}  # fmt: skip
SMS_FIELDS = {name: name for name in (*_COMMON, *_COMMON_TAIL, "to", "send_to_unsubscribed")}
WHATSAPP_FIELDS = {**SMS_FIELDS, "tracked": "tracked"}
INBOX_FIELDS = {name: name for name in (*_COMMON, *_COMMON_TAIL)}


class _Request:
    """A request object: its constructor's arguments are its attributes."""

    FIELDS: dict[str, str] = {}

    def _keep(self, arguments: Mapping[str, Any]) -> None:
        for name in self.FIELDS:
            setattr(self, name, arguments[name])

    def _to_dict(self) -> dict[str, Any]:
        """Build a request payload from the object."""
        return {
            field: value
            for name, field in self.FIELDS.items()
            if (value := getattr(self, name, None)) is not None
        }


class SendEmailRequest(_Request):
    """An object with all the options available for triggering a transactional email message."""

    FIELDS = EMAIL_FIELDS

    def __init__(
        self,
        transactional_message_id: int | str | None = None,
        to: str | None = None,
        identifiers: Mapping[str, Any] | None = None,
        _from: str | None = None,
        headers: Any = None,
        reply_to: str | None = None,
        cc: str | None = None,
        bcc: str | None = None,
        subject: str | None = None,
        preheader: str | None = None,
        body: str | None = None,
        body_plain: str | None = None,
        body_amp: str | None = None,
        fake_bcc: bool | None = None,
        disable_message_retention: bool | None = None,
        send_to_unsubscribed: bool | None = None,
        tracked: bool | None = None,
        queue_draft: bool | None = None,
        message_data: Mapping[str, Any] | None = None,
        attachments: dict[str, str] | None = None,
        disable_css_preprocessing: bool | None = None,
        send_at: int | None = None,
        language: str | None = None,
    ) -> None:
        self._keep(locals())

    def attach(self, name: str, content: str | bytes, encode: bool = True) -> None:
        """Helper method to add base64-encoded attachments."""
        attachments: dict[str, str] = getattr(self, "attachments", None) or {}
        self.attachments = attachments  # an attribute of every request, as officially
        if name in attachments:
            raise CustomerIOException(f"attachment {name} already exists")
        if encode:
            raw = content.encode("utf-8") if isinstance(content, str) else content
            content = base64.b64encode(raw).decode()
        attachments[name] = content if isinstance(content, str) else content.decode()


class SendPushRequest(_Request):
    """An object with all the options available for triggering a transactional push message."""

    FIELDS = PUSH_FIELDS

    def __init__(
        self,
        transactional_message_id: int | str | None = None,
        to: str | None = None,
        identifiers: Mapping[str, Any] | None = None,
        title: str | None = None,
        message: str | None = None,
        disable_message_retention: bool | None = None,
        send_to_unsubscribed: bool | None = None,
        queue_draft: bool | None = None,
        message_data: Mapping[str, Any] | None = None,
        send_at: int | None = None,
        language: str | None = None,
        image_url: str | None = None,
        link: str | None = None,
        custom_data: Mapping[str, Any] | None = None,
        custom_payload: Mapping[str, Any] | None = None,
        device: Mapping[str, Any] | None = None,
        sound: str | None = None,
    ) -> None:
        self._keep(locals())


class SendSMSRequest(_Request):
    """An object with all the options available for triggering a transactional SMS message."""

    FIELDS = SMS_FIELDS

    def __init__(
        self,
        transactional_message_id: int | str | None = None,
        to: str | None = None,
        identifiers: Mapping[str, Any] | None = None,
        disable_message_retention: bool | None = None,
        send_to_unsubscribed: bool | None = None,
        queue_draft: bool | None = None,
        message_data: Mapping[str, Any] | None = None,
        send_at: int | None = None,
        language: str | None = None,
    ) -> None:
        self._keep(locals())


class SendWhatsAppRequest(_Request):
    """A transactional WhatsApp message (cio_worker cannot send it: `send_whatsapp`)."""

    FIELDS = WHATSAPP_FIELDS

    def __init__(
        self,
        transactional_message_id: int | str | None = None,
        to: str | None = None,
        identifiers: Mapping[str, Any] | None = None,
        tracked: bool | None = None,
        disable_message_retention: bool | None = None,
        send_to_unsubscribed: bool | None = None,
        queue_draft: bool | None = None,
        message_data: Mapping[str, Any] | None = None,
        send_at: int | None = None,
        language: str | None = None,
    ) -> None:
        self._keep(locals())


class SendInboxMessageRequest(_Request):
    """A transactional inbox message (cio_worker cannot send it: `send_inbox_message`)."""

    FIELDS = INBOX_FIELDS

    def __init__(
        self,
        transactional_message_id: int | str | None = None,
        identifiers: Mapping[str, Any] | None = None,
        disable_message_retention: bool | None = None,
        queue_draft: bool | None = None,
        message_data: Mapping[str, Any] | None = None,
        send_at: int | None = None,
        language: str | None = None,
    ) -> None:
        self._keep(locals())


class SendInAppRequest(SendInboxMessageRequest):
    """A transactional in-app message (cio_worker cannot send it: `send_in_app`)."""


class APIClient(ClientBase):
    """The App API client (`customerio.APIClient`): each send enqueues one job and returns
    `{"job_id": ...}` (the delivery id is known only once a worker has sent it)."""

    def __init__(
        self,
        key: str | None,
        url: str | None = None,
        region: Region = Regions.US,
        retries: int = 3,
        timeout: float = 10,
        backoff_factor: float = 0.02,
        use_connection_pooling: bool = True,
        *,
        producer: Producer | None = None,
    ) -> None:
        super().__init__(region, retries, timeout, backoff_factor, use_connection_pooling, producer)
        self.url = url or f"https://{region.api_host}"  # the key is not kept: the workers'

    def send_email(self, request: SendEmailRequest | Mapping[str, Any]) -> dict[str, str]:
        return self._send("send_email", SendEmailRequest, request)

    def send_push(self, request: SendPushRequest | Mapping[str, Any]) -> dict[str, str]:
        return self._send("send_push", SendPushRequest, request)

    def send_sms(self, request: SendSMSRequest | Mapping[str, Any]) -> dict[str, str]:
        return self._send("send_sms", SendSMSRequest, request)

    send_whatsapp = unsupported_call(
        "send_whatsapp", "send it with the official APIClient (cio_worker sends email, push, SMS)"
    )
    send_inbox_message = unsupported_call(
        "send_inbox_message",
        "send it with the official APIClient (cio_worker sends email, push, SMS)",
    )
    send_in_app = unsupported_call(
        "send_in_app", "send it with the official APIClient (cio_worker sends email, push, SMS)"
    )
    send_request = unsupported_call(
        "send_request", "a raw request has no job; use send_email, send_push or send_sms"
    )

    def _send(
        self, kind: str, cls: type[_Request], request: _Request | Mapping[str, Any]
    ) -> dict[str, str]:
        if isinstance(request, _Request) and not isinstance(request, cls):
            raise CustomerIOException(
                f"{kind} takes a {cls.__name__} or a dict, got a {type(request).__name__}"
            )
        body = sanitize(request._to_dict() if isinstance(request, _Request) else request)
        with customerio_errors():
            message_id = body.pop("transactional_message_id", None)
            identifiers = body.pop("identifiers", None)
            job_id = self._enqueue(kind, message_id, identifiers=identifiers, **body)
        return {"job_id": job_id}
