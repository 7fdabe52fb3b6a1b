"""Scheduled retries and parked jobs, with their due times, and "retry now".

"Retry now" makes a job due at once (queue.ScheduledJobs.retry_now); the sweeper pushes it
within a fraction of a second. A parked job made due while its circuit is still open is parked
again by the worker that takes it, without spending an attempt: it waits for the circuit.
"""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response

from cio_worker.console._context import Call, Console
from cio_worker.console._html import (
    Html,
    ago,
    badge,
    duration,
    fill,
    hidden,
    join,
    link,
    mono,
    notice,
    table,
)
from cio_worker.console._letters import page_number
from cio_worker.limiter import Circuit
from cio_worker.queue import ScheduledJob

PAGE_SIZE = 50


def scheduled_page(console: Console, call: Call) -> Response:
    retry_page, parked_page = page_number(call, "page"), page_number(call, "parked_page")
    waiting = console.waiting
    retries = waiting.retries(limit=PAGE_SIZE, offset=(retry_page - 1) * PAGE_SIZE)
    parked = waiting.parked(limit=PAGE_SIZE, offset=(parked_page - 1) * PAGE_SIZE)
    retry_count, parked_counts = waiting.count_retries(), waiting.count_parked()
    parked_count = sum(parked_counts.values())
    circuits = Circuit(console.settings, console.redis).states()
    states = join(
        (
            fill(
                "$bucket $state",
                bucket=bucket,
                state=badge(f"open, probe in {duration(c.next_probe_in_s)}", "bad")
                if c.state == "open"
                else badge("closed", "ok"),
            )
            for bucket, c in circuits.items()
        ),
        " · ",
    )
    body = join(
        [
            _done_notice(call),
            fill(
                "<p>Scheduled retries and rate-limit deferrals waiting for their time: $retries. "
                "Jobs parked until their circuit closes: $parked.</p>"
                '<p class="muted">Circuits: $states</p>',
                retries=retry_count,
                parked=parked_count,
                states=states,
            ),
            Html("<h2>Scheduled retries</h2>"),
            _form(retries, call.csrf, "due", retry_count, retry_page, "page"),
            Html("<h2>Parked jobs</h2>"),
            _form(parked, call.csrf, "parked", parked_count, parked_page, "parked_page"),
        ]
    )
    return call.page("Scheduled retries and parked jobs", body, active="/scheduled")


def _done_notice(call: Call) -> Html:
    done, asked = call.get("retried"), call.get("asked")
    if not (done.isdigit() and asked.isdigit()):
        return Html("")
    gone = int(asked) - int(done)
    note = f" ({gone} had been sent or had ended already)" if gone > 0 else ""
    return notice(f"Made {done} of {asked} jobs due now{note}.")


def _form(
    jobs: list[ScheduledJob], csrf: str, when: str, total: int, page: int, page_field: str
) -> Html:
    if not jobs:
        return Html('<p class="empty">None.</p>')
    rows = [
        [
            fill(
                '<input type="checkbox" name="id" value="$id" aria-label="select $id">', id=job.id
            ),
            mono(job.id),
            job.kind or "–",
            job.bucket or job.family or "–",
            job.attempts,
            job.status if job.status is not None else "–",
            job.reason or "–",
            ago(job.at),
            fill('<button type="submit" name="one" value="$id">Retry now</button>', id=job.id),
        ]
        for job in jobs
    ]
    select_all = Html('<input type="checkbox" data-select-all aria-label="select all">')
    headings = [
        select_all,
        "id",
        "kind",
        "bucket" if when == "parked" else "family",
        "attempts",
        "last status",
        "last error",
        "parked" if when == "parked" else "due",
        "",
    ]
    pages = max(1, -(-total // PAGE_SIZE))
    pager = []
    if page > 1:
        pager.append(link("/scheduled", "← previous", {page_field: page - 1}))
    if pages > 1:
        pager.append(Html(f"page {page} of {pages}"))
    if page < pages:
        pager.append(link("/scheduled", "next →", {page_field: page + 1}))
    return fill(
        '<form method="post" action="/scheduled/retry">$csrf<div class="actions">'
        '<button type="submit" class="primary">Retry selected now</button></div>$table'
        '<div class="pages">$pager</div></form>',
        csrf=hidden("csrf", csrf),
        table=table(headings, rows),
        pager=join(pager, " "),
    )


def retry_now(console: Console, call: Call) -> Response:
    ids = [call.get("one")] if call.get("one") else list(dict.fromkeys(call.all("id")))
    if not ids:
        body = fill("<p>Select at least one job first. $back</p>", back=link("/scheduled", "Back"))
        return call.page("Nothing selected", body, active="/scheduled", status_code=400)
    done = console.waiting.retry_now(ids)
    call.audit("retry_now", done, asked=len(ids))
    return RedirectResponse(f"/scheduled?retried={done}&asked={len(ids)}", status_code=303)
