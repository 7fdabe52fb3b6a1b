"""Dead letters: the filtered, paginated list, and a page per letter.

A letter's page shows its attempts and error history and its payload *masked*: every key, no
value (`•••`). The values (and the error bodies Customer.io sent back, which may echo them) are
shown only after the operator asks, with a separate POST that is logged with who asked.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from cio_worker.console._context import BadInputError, Call, Console
from cio_worker.console._filters import describe, filter_form, hidden_fields, read_filter
from cio_worker.console._html import (
    Html,
    ago,
    esc,
    fill,
    hidden,
    join,
    link,
    mono,
    notice,
    segment,
    table,
    url,
    utc,
)
from cio_worker.queue import DeadLetter

#: Dead letters per page of the list.
PAGE_SIZE = 50
#: What a masked value shows instead of itself.
MASK = "•••"
#: The actions the list reports after a redirect: (field value, past tense).
DONE = {"replay": "Replayed", "delete": "Deleted"}


def masked(value: Any) -> Any:
    """`value` with every key kept and every other value replaced by MASK."""
    if isinstance(value, dict):
        return {key: masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [masked(item) for item in value]
    return MASK


def page_number(call: Call, name: str = "page") -> int:
    raw = call.get(name) or "1"
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 1_000_000):
        raise BadInputError(name, "must be a page number from 1")
    return int(raw)


def letters_page(console: Console, call: Call) -> Response:
    letters, values = read_filter(call)
    page = page_number(call)
    store = console.letters
    matching = store.count_matching(letters)
    shown = store.select(letters, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    pages = max(1, -(-matching // PAGE_SIZE))
    parts = [filter_form(values), _done_notice(call)]
    parts.append(
        fill(
            "<p>$n of $total dead letters match: $what. Page $page of $pages.</p>",
            n=matching,
            total=store.count(),
            what=describe(values),
            page=page,
            pages=pages,
        )
    )
    if shown:
        parts.append(_selection_form(shown, values, matching, call.csrf))
    else:
        parts.append(Html('<p class="empty">No dead letter matches.</p>'))
    parts.append(_pager(values, page, pages))
    return call.page("Dead letters", join(parts), active="/dead-letters")


def _done_notice(call: Call) -> Html:
    action, count, asked = call.get("done"), call.get("count"), call.get("asked")
    if action not in DONE or not (count.isdigit() and asked.isdigit()):
        return Html("")
    missing = int(asked) - int(count)
    gone = f" ({missing} were gone already)" if missing > 0 else ""
    return notice(f"{DONE[action]} {count} of {asked} dead letters{gone}.")


def _selection_form(
    shown: list[DeadLetter], values: dict[str, str], matching: int, csrf: str
) -> Html:
    rows = [
        [
            fill(
                '<input type="checkbox" name="id" value="$id" aria-label="select $id">',
                id=letter.job.id,
            ),
            mono(link(f"/dead-letters/{segment(letter.job.id)}", letter.job.id)),
            letter.job.kind.value,
            letter.job.family.value,
            letter.attempts,
            letter.status if letter.status is not None else "–",
            letter.reason,
            ago(letter.last_error.get("at")),
        ]
        for letter in shown
    ]
    select_all = Html('<input type="checkbox" data-select-all aria-label="select all">')
    headings = [select_all, "id", "kind", "family", "attempts", "status", "reason", "dead since"]
    return fill(
        '<form method="post" action="/dead-letters/confirm">$csrf$filters'
        '<div class="actions">'
        '<button type="submit" name="do" value="replay:selected" class="primary">'
        "Replay selected</button>"
        '<button type="submit" name="do" value="delete:selected" class="danger">'
        "Delete selected</button>"
        '<span class="muted">or every match:</span>'
        '<button type="submit" name="do" value="replay:filter">Replay all $n</button>'
        '<button type="submit" name="do" value="delete:filter" class="danger">Delete all $n'
        "</button></div>$table</form>",
        csrf=hidden("csrf", csrf),
        filters=hidden_fields(values),
        n=matching,
        table=table(headings, rows),
    )


def _pager(values: dict[str, str], page: int, pages: int) -> Html:
    if pages <= 1:
        return Html("")
    links = []
    if page > 1:
        links.append(link("/dead-letters", "← previous", {**values, "page": page - 1}))
    links.append(esc(f"page {page} of {pages}"))
    if page < pages:
        links.append(link("/dead-letters", "next →", {**values, "page": page + 1}))
    return fill('<div class="pages">$links</div>', links=join(links, " "))


# -- one letter ------------------------------------------------------------------------------------
def letter_page(console: Console, call: Call) -> Response:
    return _letter(console, call, revealed=False)


def reveal_letter(console: Console, call: Call) -> Response:
    job_id = call.request.path_params["job_id"]
    response = _letter(console, call, revealed=True)
    if response.status_code == 200:
        call.audit("reveal", 1, job_id=job_id)
    return response


def _letter(console: Console, call: Call, *, revealed: bool) -> Response:
    job_id: str = call.request.path_params["job_id"]
    letter = console.letters.get(job_id)
    if letter is None:
        body = fill(
            "<p>No dead letter $id: it was replayed, deleted or trimmed. $back</p>",
            id=mono(job_id),
            back=link("/dead-letters", "Back to the list"),
        )
        return call.page("Dead letter not found", body, active="/dead-letters", status_code=404)
    job = letter.job
    facts = fill(
        '<dl class="facts"><dt>id</dt><dd>$id</dd><dt>kind</dt><dd>$kind</dd>'
        "<dt>family</dt><dd>$family</dd><dt>attempts</dt><dd>$attempts</dd>"
        "<dt>last status</dt><dd>$status</dd><dt>reason</dt><dd>$reason</dd>"
        "<dt>enqueued</dt><dd>$created</dd></dl>",
        id=mono(job.id),
        kind=job.kind.value,
        family=job.family.value,
        attempts=letter.attempts,
        status=letter.status if letter.status is not None else "no answer",
        reason=letter.reason,
        created=utc(job.created_at),
    )
    errors = table(
        ["", "at", "status", "reason", "response body"],
        [
            [
                which,
                utc(error.get("at")),
                error.get("status") or "–",
                error.get("reason"),
                _body(error.get("body"), revealed),
            ]
            for which, error in (("first", letter.first_error), ("last", letter.last_error))
        ],
    )
    payload = job.payload if revealed else masked(job.payload)
    shown = json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=True)
    reveal = (
        notice("Personal values shown; this was logged with your name.", "warn")
        if revealed
        else fill(
            '<form method="post" action="$action" class="actions">$csrf'
            '<span class="muted">Values are masked.</span>'
            '<button type="submit">Reveal personal values</button></form>',
            action=f"/dead-letters/{segment(job.id)}/reveal",
            csrf=hidden("csrf", call.csrf),
        )
    )
    actions = fill(
        '<form method="post" action="/dead-letters/confirm" class="actions">$csrf$id'
        '<button type="submit" name="do" value="replay:selected" class="primary">Replay</button>'
        '<button type="submit" name="do" value="delete:selected" class="danger">Delete</button>'
        "$back</form>",
        csrf=hidden("csrf", call.csrf),
        id=hidden("id", job.id),
        back=link("/dead-letters", "Back to the list"),
    )
    body = join(
        [
            actions,
            facts,
            Html("<h2>Error history</h2>"),
            errors,
            Html("<h2>Payload</h2>"),
            reveal,
            fill("<pre>$json</pre>", json=shown),
        ]
    )
    return call.page(f"Dead letter {job.id}", body, active="/dead-letters")


def _body(body: object, revealed: bool) -> object:
    if not body:
        return "–"
    if revealed:
        return mono(body)
    return fill('<span class="muted">$mask ($n characters)</span>', mask=MASK, n=len(str(body)))


def letters_url(values: dict[str, str], **extra: object) -> str:
    return url("/dead-letters", {**values, **extra})
