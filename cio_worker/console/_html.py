"""How the console writes HTML: every value is escaped unless it is already `Html`.

Pages are string templates (`string.Template`, `$name` placeholders) filled by `fill`, which
escapes each value it is given; only values built here (`Html`) go in as they are. So ids,
reasons, payload keys and values, metric names, anything read from Redis or a request, are
always text in the page, never markup.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping, Sequence
from string import Template
from urllib.parse import quote, urlencode

from starlette.responses import HTMLResponse

#: What the navigation bar links to: (path, label).
NAV = (
    ("/", "Overview"),
    ("/dead-letters", "Dead letters"),
    ("/scheduled", "Scheduled & parked"),
    ("/webhooks", "Webhooks"),
)


class Html(str):
    """Text that is HTML already (built by this module): inserted as is."""

    __slots__ = ()


def esc(value: object) -> Html:
    """`value` as HTML text: escaped (quotes too, so it is safe in an attribute), None empty."""
    if isinstance(value, Html):
        return value
    return Html("" if value is None else html.escape(str(value), quote=True))


def fill(template: str, **values: object) -> Html:
    """`template` with each `$name` replaced by its value, escaped unless it is `Html`."""
    return Html(Template(template).substitute({k: esc(v) for k, v in values.items()}))


def join(parts: Iterable[object], sep: str = "") -> Html:
    return Html(sep.join(esc(part) for part in parts))


def link(path: str, text: object, query: Mapping[str, object] | None = None) -> Html:
    """`<a href>` to one of our own paths (`path` is ours; query values are data)."""
    return fill('<a href="$href">$text</a>', href=url(path, query), text=text)


def url(path: str, query: Mapping[str, object] | None = None) -> str:
    """`path` with a query string of the non-empty values (encoded: values are data)."""
    pairs = {k: str(v) for k, v in (query or {}).items() if v not in (None, "")}
    return f"{path}?{urlencode(pairs)}" if pairs else path


def segment(value: str) -> str:
    """A value as one URL path segment (an id is data: `/` or `?` in it stay inside it)."""
    return quote(value, safe="")


def hidden(name: str, value: object) -> Html:
    return fill('<input type="hidden" name="$name" value="$value">', name=name, value=value)


def table(
    headings: Sequence[object], rows: Iterable[Sequence[object]], *, empty: str = "none"
) -> Html:
    """A table; a cell is escaped unless it is `Html`. No rows: one line saying `empty`."""
    body = [
        Html("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>") for row in rows
    ]
    if not body:
        return fill('<p class="empty">$empty</p>', empty=empty)
    head = "".join(f"<th>{esc(heading)}</th>" for heading in headings)
    return Html(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def badge(text: object, tone: str) -> Html:
    """A coloured label: tone is one of ok, warn, bad, idle."""
    return fill('<span class="badge $tone">$text</span>', tone=tone, text=text)


def mono(text: object) -> Html:
    return fill('<span class="mono">$text</span>', text=text)


# -- times -----------------------------------------------------------------------------------------
def duration(seconds: float | None) -> str:
    """A span of time for people: `850 ms`, `42 s`, `7 min`, `3.5 h`, `2.0 d`."""
    if seconds is None:
        return "–"
    s = max(0.0, seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172_800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86_400:.1f} d"


def utc(at: object) -> str:
    """Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`; anything else (an old entry's odd value) as
    it is, None as `–`."""
    if at is None:
        return "–"
    if not isinstance(at, int | float) or isinstance(at, bool):
        return str(at)
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def ago(at: object, now: float | None = None) -> Html:
    """`3 min ago`, with the exact UTC time as the tooltip."""
    if not isinstance(at, int | float) or isinstance(at, bool):
        return esc(utc(at))
    now = time.time() if now is None else now
    span = now - at
    text = f"in {duration(-span)}" if span < 0 else f"{duration(span)} ago"
    return fill('<time title="$exact">$text</time>', exact=utc(at), text=text)


# -- the page --------------------------------------------------------------------------------------
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
$refresh<title>$title · cio-worker console</title>
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head><body>
<header><span class="brand">cio-worker console</span><nav>$nav</nav>
<span class="who">$who</span></header>
<main><h1>$title</h1>
$body</main></body></html>
"""

_LOGOUT = """<form method="post" action="/logout" class="inline">$csrf
<button class="link" type="submit">log out</button></form>"""


def layout(
    title: str,
    body: Html,
    *,
    active: str | None = None,
    user: str | None = None,
    logout_csrf: str | None = None,
    refresh_s: int | None = None,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """A whole page: the bar (navigation, who is signed in), the title and `body`."""
    nav = join(
        fill(
            '<a href="$path" class="$cls">$label</a>',
            path=path,
            label=label,
            cls="active" if path == active else "",
        )
        for path, label in NAV
    )
    who = esc(user) if user else Html("")
    if user and logout_csrf is not None:
        who = join([who, fill(_LOGOUT, csrf=hidden("csrf", logout_csrf))], " · ")
    refresh = fill('<meta http-equiv="refresh" content="$s">\n', s=refresh_s) if refresh_s else ""
    page = fill(
        _PAGE, title=title, nav=nav if user else Html(""), who=who, body=body, refresh=refresh
    )
    return HTMLResponse(page, status_code=status_code, headers=dict(headers or {}))


def notice(text: object, tone: str = "ok") -> Html:
    return fill('<p class="notice $tone">$text</p>', tone=tone, text=text)
