"""Received reporting webhooks: the receiver's counters and the newest events, by ids and
metric. An event's body (personal data) is shown only when the operator reveals it, with a
separate POST that is logged with who asked."""

from __future__ import annotations

import json

from starlette.responses import Response

from cio_worker.console._context import BadInputError, Call, Console
from cio_worker.console._html import (
    Html,
    ago,
    fill,
    hidden,
    join,
    link,
    mono,
    notice,
    segment,
    table,
)
from cio_worker.webhooks import WebhookEvent, list_events

#: Events the page lists (newest first).
SHOWN = 100
#: How far back a reveal looks for its event, in events.
REVEAL_DEPTH = 1000
MAX_METRIC_CHARS = 200


def webhooks_page(console: Console, call: Call) -> Response:
    metric = call.get("metric")
    if len(metric) > MAX_METRIC_CHARS:
        raise BadInputError("metric", f"must be at most {MAX_METRIC_CHARS} characters")
    counts = console.webhooks.counts()
    events = list_events(SHOWN, metric=metric or None, redis_client=console.redis)
    counters = table(["counter", "count"], sorted(counts.items()), empty="nothing received yet")
    rows = [
        [
            ago(event.received_at),
            event.metric,
            event.object_type,
            mono(event.event_id),
            mono(event.data.get("delivery_id") or "–"),
            mono(event.stream_id),
            fill(
                '<form method="post" action="$action" class="inline">$csrf'
                '<button type="submit" class="link">reveal body</button></form>',
                action=f"/webhooks/{segment(event.stream_id)}/reveal",
                csrf=hidden("csrf", call.csrf),
            ),
        ]
        for event in events
    ]
    listing = table(
        ["received", "metric", "object", "event id", "delivery id", "stream id", ""],
        rows,
        empty="No event stored." if not metric else "No event of this metric.",
    )
    search = fill(
        '<form method="get" action="/webhooks" class="filters"><label>metric'
        '<input type="text" name="metric" value="$metric" placeholder="opened"></label>'
        '<button type="submit" class="primary">Filter</button>'
        '<a class="button" href="/webhooks">Clear</a></form>',
        metric=metric,
    )
    body = join(
        [
            Html("<h2>Receiver counters</h2>"),
            counters,
            fill("<h2>Newest events (up to $n)</h2>", n=SHOWN),
            search,
            listing,
        ]
    )
    return call.page("Reporting webhooks", body, active="/webhooks")


def reveal_event(console: Console, call: Call) -> Response:
    stream_id: str = call.request.path_params["stream_id"]
    event = _find(console, stream_id)
    if event is None:
        body = fill(
            "<p>No stored event $id among the newest $n (trimmed, or older). $back</p>",
            id=mono(stream_id),
            n=REVEAL_DEPTH,
            back=link("/webhooks", "Back"),
        )
        return call.page("Event not found", body, active="/webhooks", status_code=404)
    call.audit("reveal_webhook", 1, stream_id=stream_id)
    facts = table(
        ["stream id", "event id", "metric", "object", "received"],
        [
            [
                mono(event.stream_id),
                mono(event.event_id),
                event.metric,
                event.object_type,
                ago(event.received_at),
            ]
        ],
    )
    body = join(
        [
            notice("The body is shown; this was logged with your name.", "warn"),
            facts,
            Html("<h2>Body</h2>"),
            fill(
                "<pre>$json</pre>",
                json=json.dumps(event.body, indent=2, ensure_ascii=False, sort_keys=True),
            ),
            link("/webhooks", "Back to the events"),
        ]
    )
    return call.page(f"Webhook event {event.event_id}", body, active="/webhooks")


def _find(console: Console, stream_id: str) -> WebhookEvent | None:
    for event in list_events(REVEAL_DEPTH, redis_client=console.redis):
        if event.stream_id == stream_id:
            return event
    return None
