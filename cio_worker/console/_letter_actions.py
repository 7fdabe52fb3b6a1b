"""Replay and Delete, for one letter, a selection or the whole filter: always two POSTs.

The first (`/dead-letters/confirm`) changes nothing: it counts what the action would touch and
asks, stating the count. The second (`/dead-letters/apply`) does it, logs who did it and how
many, and redirects to the list (the same filter) saying how many were done. An action on the
whole filter applies to the letters dead-lettered up to the moment it was confirmed (`before`),
so letters that arrive while the operator reads the question are not swept in with the rest.
"""

from __future__ import annotations

import dataclasses
import math
import time

from starlette.responses import RedirectResponse, Response

from cio_worker.console._context import BadInputError, Call, Console
from cio_worker.console._filters import describe, hidden_fields, read_filter
from cio_worker.console._html import Html, fill, hidden, join, link, mono
from cio_worker.console._letters import letters_url
from cio_worker.queue import LetterFilter

#: Ids a confirmation lists before it says "and N more".
LISTED = 20
ACTIONS = {"replay": "Replay", "delete": "Delete"}
SCOPES = ("selected", "filter")
DO_RULE = "must be replay or delete, for the selected letters or the filter"


def _read_do(call: Call) -> tuple[str, str]:
    action, _, scope = call.get("do").partition(":")
    if action not in ACTIONS or scope not in SCOPES:
        raise BadInputError("do", DO_RULE)
    return action, scope


def _selected(call: Call) -> list[str]:
    return list(dict.fromkeys(call.all("id")))


def confirm(console: Console, call: Call) -> Response:
    action, scope = _read_do(call)
    _, values = read_filter(call)
    verb = ACTIONS[action]
    store = console.letters
    back = link("/dead-letters", "Cancel", values)
    if scope == "selected":
        asked = _selected(call)
        if not asked:
            body = fill(
                "<p>Select at least one dead letter first. $back</p>",
                back=link("/dead-letters", "Back to the list", values),
            )
            return call.page("Nothing selected", body, active="/dead-letters", status_code=400)
        ids = [job_id for job_id in asked if store.get(job_id) is not None]
        count = len(ids)
        what = fill("the selected dead letters: $ids", ids=_listing(ids))
        carried = join(hidden("id", job_id) for job_id in ids)
    else:
        letters, _ = read_filter(call)
        count = store.count_matching(letters)
        what = fill(
            "every dead letter matching <b>$filter</b>, dead-lettered until now.",
            filter=describe(values),
        )
        carried = hidden("before", f"{time.time():.3f}")
    if count == 0:
        gone = (
            "None of these is a dead letter any more."
            if scope == "selected"
            else ("No dead letter matches this filter.")
        )
        body = fill(
            "<p>$gone $back</p>",
            gone=gone,
            back=link("/dead-letters", "Back to the list", values),
        )
        return call.page("Nothing to do", body, active="/dead-letters")
    noun = "dead letter" if count == 1 else "dead letters"
    consequence = (
        "Each goes back to its queue with its attempts reset and the same job id, and is sent "
        "again."
        if action == "replay"
        else "They are deleted for good: nothing sends them again."
    )
    body = fill(
        "<p>$verb <b>$count</b> $noun: $what</p><p>$consequence</p>"
        '<form method="post" action="/dead-letters/apply" class="actions">$csrf$do$filters'
        '$carried<button type="submit" class="$tone">$verb $count $noun</button>$back</form>',
        verb=verb,
        count=count,
        noun=noun,
        what=what,
        consequence=consequence,
        csrf=hidden("csrf", call.csrf),
        do=hidden("do", f"{action}:{scope}"),
        filters=hidden_fields(values),
        carried=carried,
        back=back,
        tone="primary" if action == "replay" else "danger solid",
    )
    return call.page(f"{verb} {count} {noun}?", body, active="/dead-letters")


def apply(console: Console, call: Call) -> Response:
    action, scope = _read_do(call)
    letters, values = read_filter(call)
    store = console.letters
    if scope == "selected":
        ids = _selected(call)
    else:
        ids = store.matching_ids(_until(letters, call.get("before")))
    if action == "replay":
        done = len(store.replay(ids, settings=console.settings))
    else:
        done = store.purge(ids)
    call.audit(action, done, scope=scope, asked=len(ids))
    return RedirectResponse(
        letters_url(values, done=action, count=done, asked=len(ids)), status_code=303
    )


def _until(letters: LetterFilter, before: str) -> LetterFilter:
    """`letters`, narrowed to those dead-lettered at or before `before` (Unix seconds)."""
    try:
        cutoff = float(before)
    except ValueError:
        cutoff = math.nan
    if not math.isfinite(cutoff):
        raise BadInputError("before", "must be the time the action was confirmed (Unix seconds)")
    older_than = max(0.0, time.time() - cutoff)
    if letters.older_than_s is not None:
        older_than = max(older_than, letters.older_than_s)
    return dataclasses.replace(letters, older_than_s=older_than)


def _listing(ids: list[str]) -> Html:
    shown = join((mono(job_id) for job_id in ids[:LISTED]), ", ")
    more = f" and {len(ids) - LISTED} more" if len(ids) > LISTED else ""
    return fill("$shown$more", shown=shown, more=more)
