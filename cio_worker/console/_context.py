"""What every page handler gets: the console's shared objects (`Console`) and the request at
hand (`Call`: who asks, the fields sent, a page builder, the audit log)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

import redis
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from cio_worker import logs
from cio_worker.config import Settings
from cio_worker.console._auth import Auth, Identity
from cio_worker.console._html import Html, layout
from cio_worker.console._rates import RateWindow
from cio_worker.queue import DeadLetterStore, ScheduledJobs
from cio_worker.webhooks import WebhookStore

log = logs.get_logger(__name__)

#: Largest form body read, bytes: room for a page of ids, never an unbounded read.
MAX_FORM_BYTES = 1024 * 1024
#: Most fields a form may carry (a selection of ids is one field per id).
MAX_FORM_FIELDS = 20_000


class BadFormError(Exception):
    """A POST body the console does not read: too large, too many fields, not UTF-8."""


class BadInputError(Exception):
    """A field's value breaks its rule; the page answers 400 naming both."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


@dataclass
class Console:
    """The objects every page shares, made once per app."""

    settings: Settings
    redis: redis.Redis
    auth: Auth
    letters: DeadLetterStore
    waiting: ScheduledJobs
    webhooks: WebhookStore
    rates: RateWindow


@dataclass
class Call:
    """One request to a page: who sent it, the fields it carries, and how to answer."""

    request: Request
    identity: Identity
    csrf: str
    fields: dict[str, list[str]]

    @property
    def user(self) -> str:
        return self.identity.user

    def get(self, name: str) -> str:
        """The first value of field `name` (query for a GET, form for a POST), stripped."""
        values = self.fields.get(name)
        return values[0].strip() if values else ""

    def all(self, name: str) -> list[str]:
        return [value for value in self.fields.get(name, []) if value]

    def page(
        self,
        title: str,
        body: Html,
        *,
        active: str | None = None,
        refresh_s: int | None = None,
        status_code: int = 200,
    ) -> HTMLResponse:
        # Only a cookie session can be ended by the console: a browser keeps basic credentials.
        logout = self.csrf if self.identity.via == "cookie" else None
        return layout(
            title,
            body,
            active=active,
            user=self.user,
            logout_csrf=logout,
            refresh_s=refresh_s,
            status_code=status_code,
        )

    def audit(self, action: str, count: int, **extra: object) -> None:
        """Log an operator's action: who, what, how many (never a payload value)."""
        client = self.request.client.host if self.request.client else None
        log.info(
            "console_action", user=self.user, action=action, count=count, client=client, **extra
        )


#: A page handler: runs in a worker thread (redis-py blocks), answers the request.
Handler = Callable[[Console, Call], Response]


async def read_fields(request: Request) -> dict[str, list[str]]:
    """A POST's urlencoded form (bounded), or a GET's query, as name -> values."""
    if request.method != "POST":
        pairs = request.query_params.multi_items()
    else:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
            raise BadFormError(f"the form is over {MAX_FORM_BYTES // 1024} KiB")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise BadFormError(f"the form is over {MAX_FORM_BYTES // 1024} KiB")
        content_type = request.headers.get("content-type", "").partition(";")[0].strip()
        if content_type != "application/x-www-form-urlencoded":
            return {}
        try:
            pairs = parse_qsl(
                body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
            )
        except UnicodeDecodeError:
            raise BadFormError("the form is not UTF-8") from None
        except ValueError:
            raise BadFormError(f"the form has over {MAX_FORM_FIELDS} fields") from None
    fields: dict[str, list[str]] = {}
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    return fields
