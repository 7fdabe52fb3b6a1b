"""The console's ASGI app (Starlette): its routes, the sign-in guard every page sits behind,
CSRF on every POST, and the answers when something is wrong.

- Every page needs credentials (console/_auth.py); without them it answers 401 with a sign-in
  form (and `WWW-Authenticate`, so a browser asks for basic auth itself).
- Every POST carries the signed-in user's CSRF token, or is refused (403) before it does
  anything; every change takes a POST, never a GET.
- Redis away: 503 with one line naming it, never a traceback. A bad field: 400 naming the field
  and its rule.
- Every answer carries a Content-Security-Policy allowing the console's own style sheet and
  script only, is never cached, and cannot be framed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio.to_thread
import redis
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cio_worker import logs
from cio_worker.config import Settings, redact_url
from cio_worker.connection import get_redis
from cio_worker.console._auth import MIN_TOKEN_CHARS, SESSION_COOKIE, SESSION_TTL_S, Auth
from cio_worker.console._context import (
    BadFormError,
    BadInputError,
    Call,
    Console,
    Handler,
    read_fields,
)
from cio_worker.console._hooks import reveal_event, webhooks_page
from cio_worker.console._html import Html, fill, hidden, join, layout, link, notice
from cio_worker.console._letter_actions import apply, confirm
from cio_worker.console._letters import letter_page, letters_page, reveal_letter
from cio_worker.console._overview import overview
from cio_worker.console._rates import RateWindow, sample_forever
from cio_worker.console._static import script, stylesheet
from cio_worker.console._waiting import retry_now, scheduled_page
from cio_worker.errors import ConfigError
from cio_worker.queue import DeadLetterStore, ScheduledJobs
from cio_worker.webhooks import WebhookStore

log = logs.get_logger(__name__)

NO_AUTH = (
    "the console needs CIO_WORKER_CONSOLE_BASIC_AUTH=user:password or CIO_WORKER_CONSOLE_TOKEN "
    "(or --local-only, to serve this machine alone without sign-in)"
)
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def create_console_app(
    settings: Settings, *, local_only: bool = False, redis_client: redis.Redis | None = None
) -> Starlette:
    """The console app; raises ConfigError when it would run without sign-in unasked."""
    if settings.console_token and len(settings.console_token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"CIO_WORKER_CONSOLE_TOKEN: must be at least {MIN_TOKEN_CHARS} characters"
        )
    auth = Auth(settings.console_basic_auth, settings.console_token)
    if not auth.required and not local_only:
        raise ConfigError(NO_AUTH)
    client = redis_client or get_redis(settings)
    console = Console(
        settings=settings,
        redis=client,
        auth=auth,
        letters=DeadLetterStore(client, retention_days=settings.dlq_retention_days),
        waiting=ScheduledJobs(client),
        webhooks=WebhookStore(client, retention_s=settings.webhook_retention_days * 86_400),
        rates=RateWindow(),
    )

    def guard(handler: Handler) -> Callable[[Request], object]:
        async def endpoint(request: Request) -> Response:
            identity = auth.identify(request)
            if identity is None:
                return _sign_in(auth, request, status_code=401)
            try:
                fields = await read_fields(request)
            except BadFormError as exc:
                return layout("Form refused", notice(str(exc), "bad"), status_code=413)
            csrf = auth.csrf_token(identity.user)
            call = Call(request, identity, csrf, fields)
            if request.method == "POST" and not auth.csrf_ok(identity.user, call.get("csrf")):
                log.warning("console_csrf_refused", user=identity.user, path=request.url.path)
                text = "This form is stale or came from another site: reload the page and retry."
                return call.page("Refused", notice(text, "bad"), status_code=403)
            try:
                response: Response = await anyio.to_thread.run_sync(handler, console, call)
            except BadInputError as exc:
                back = link(request.url.path, "Start again")
                body = join([notice(str(exc), "bad"), back])
                return call.page("Bad request", body, status_code=400)
            return response

        return endpoint

    async def login_page(request: Request) -> Response:
        if auth.identify(request) is not None:
            return RedirectResponse("/", status_code=303)
        return _sign_in(auth, request, status_code=200)

    async def login(request: Request) -> Response:
        try:
            fields = {name: values[0] for name, values in (await read_fields(request)).items()}
        except BadFormError as exc:
            return layout("Form refused", notice(str(exc), "bad"), status_code=413)
        client_host = request.client.host if request.client else None
        user = auth.login(fields) if auth.required else "local"
        if user is None:
            log.warning("console_sign_in_failed", client=client_host)
            return _sign_in(auth, request, status_code=401, failed=True, next_=fields.get("next"))
        log.info("console_signed_in", user=user, client=client_host)
        response = RedirectResponse(_safe_next(fields.get("next")), status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            auth.session_cookie(user),
            max_age=int(SESSION_TTL_S),
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    def logout(console: Console, call: Call) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def healthz(request: Request) -> JSONResponse:
        try:
            await anyio.to_thread.run_sync(client.ping)
        except redis.RedisError as exc:
            return JSONResponse({"ok": False, "redis": type(exc).__name__}, status_code=503)
        return JSONResponse({"ok": True, "redis": "ok"})

    async def redis_away(request: Request, exc: Exception) -> Response:
        log.warning("console_redis_unavailable", error=type(exc).__name__, path=request.url.path)
        line = (
            f"Redis is unreachable at {redact_url(settings.redis_url)} ({type(exc).__name__}); "
            "this page works again once it answers."
        )
        return layout("Redis unavailable", notice(line, "bad"), status_code=503)

    routes = [
        Route("/", guard(overview)),
        Route("/dead-letters", guard(letters_page)),
        Route("/dead-letters/confirm", guard(confirm), methods=["POST"]),
        Route("/dead-letters/apply", guard(apply), methods=["POST"]),
        Route("/dead-letters/{job_id}", guard(letter_page)),
        Route("/dead-letters/{job_id}/reveal", guard(reveal_letter), methods=["POST"]),
        Route("/scheduled", guard(scheduled_page)),
        Route("/scheduled/retry", guard(retry_now), methods=["POST"]),
        Route("/webhooks", guard(webhooks_page)),
        Route("/webhooks/{stream_id}/reveal", guard(reveal_event), methods=["POST"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", guard(logout), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/static/console.css", stylesheet, methods=["GET"]),
        Route("/static/console.js", script, methods=["GET"]),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sampler = asyncio.create_task(sample_forever(client, console.rates))
        try:
            yield
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)

    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={redis.RedisError: redis_away},
        lifespan=lifespan,
    )
    app.state.auth = auth
    return app


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every answer that does not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


_SIGN_IN = """<form method="post" action="/login" class="login">$next$fields
<button type="submit" class="primary">Sign in</button></form>"""


def _sign_in(
    auth: Auth,
    request: Request,
    *,
    status_code: int,
    failed: bool = False,
    next_: str | None = None,
) -> Response:
    """The sign-in page (the 401 of every page, and GET /login)."""
    fields = []
    if auth.basic_auth:
        fields.append(
            Html(
                '<label>user<input type="text" name="user" autocomplete="username"></label>'
                '<label>password<input type="password" name="password" '
                'autocomplete="current-password"></label>'
            )
        )
    if auth.token:
        if fields:
            fields.append(Html('<p class="muted">or</p>'))
        fields.append(
            Html('<label>token<input type="password" name="token" autocomplete="off"></label>')
        )
    target = next_ or (
        request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method == "GET" and request.url.path not in ("/login", "/logout")
        else "/"
    )
    form = fill(_SIGN_IN, next=hidden("next", _safe_next(target)), fields=join(fields))
    message = notice("Wrong credentials.", "bad") if failed else Html("")
    headers = auth.challenge() if status_code == 401 else {}
    return layout("Sign in", join([message, form]), status_code=status_code, headers=headers)


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: one of our own paths, never another site."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target
