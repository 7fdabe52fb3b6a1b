"""The overview: per family what waits, runs and fails, the limiter and circuits, the workers.

The numbers are `ops.collect_status`'s (the report of `cio-worker status`, workers online
included), read once per view, and the age of each family's oldest waiting job as the exporter
computes it (`ops.collect_metrics`); the console adds what a single report cannot say: rates
(the counters' change between views, console/_rates.py).
"""

from __future__ import annotations

import time
from typing import Any

from cio_worker.console._context import Call, Console
from cio_worker.console._html import Html, badge, duration, esc, fill, join, link, table, utc
from cio_worker.ops import collect_metrics, collect_status

#: How often the overview reloads itself, seconds.
REFRESH_S = 10
#: How long a view waits for the workers to answer a ping, seconds.
PING_S = 0.5
#: The cumulative counters a rate is shown for: (report field, heading).
RATED = (
    ("delivered", "delivered/min"),
    ("retried", "retried/min"),
    ("rate_limited", "429s/min"),
    ("dead", "dead/min"),
)


def overview(console: Console, call: Call) -> Any:
    report = collect_status(console.settings, worker_ping_s=PING_S)
    now = time.time()
    counters = {
        f"{family}:{name}": row[name]
        for family, row in report["queues"].items()
        for name, _ in RATED
    }
    rates, span = console.rates.add(counters, now)
    # The same figure as the exporter's cio_worker_oldest_job_age_seconds (one rule, in ops).
    oldest = collect_metrics(console.redis, console.settings, now_s=now).oldest_job_age_s
    workers: list[str] | None = report.get("workers_online")
    body = join(
        [
            _cards(report, workers),
            Html("<h2>Queues</h2>"),
            _queues(report, rates, oldest),
            Html("<h2>Limiter and circuits</h2>"),
            _limits(report),
            fill(
                '<p class="muted">Read from $redis at $at; refreshes every $every s. $rates</p>',
                redis=report["redis"],
                at=utc(now),
                every=REFRESH_S,
                rates=(
                    f"Rates are per minute over the last {span:.0f} s."
                    if span
                    else "Rates show from the next refresh; totals since the counters began."
                ),
            ),
        ]
    )
    return call.page("Overview", body, active="/", refresh_s=REFRESH_S)


def _cards(report: dict[str, Any], workers: list[str] | None) -> Html:
    parked = sum(row["parked"] for row in report["circuits"].values())
    dead = report["dead_letters"]["total"]
    online = "?" if workers is None else len(workers)
    names = "could not ask" if workers is None else ", ".join(workers) or "none answered"
    cards = [
        (online, "workers online", names, "bad" if not workers else ""),
        (report["running"], "running now", "jobs a worker holds", ""),
        (report["scheduled_retries"], "scheduled retries", "waiting for their time", ""),
        (parked, "parked", "waiting for a circuit", "warn" if parked else ""),
        (dead, "dead letters", "now in the queue", "bad" if dead else ""),
        (report["jobs_pending"], "jobs pending", "not yet delivered", ""),
    ]
    links = {
        "dead letters": "/dead-letters",
        "scheduled retries": "/scheduled",
        "parked": "/scheduled",
    }
    return Html(
        '<div class="cards">'
        + join(
            fill(
                '<div class="card $tone" title="$hint"><div class="n">$n</div>'
                '<div class="l">$label</div></div>',
                n=link(links[label], n) if label in links else n,
                label=label,
                hint=hint,
                tone=tone,
            )
            for n, label, hint, tone in cards
        )
        + "</div>"
    )


def _queues(
    report: dict[str, Any], rates: dict[str, float], oldest: dict[str, float | None]
) -> Html:
    rows = []
    for family, row in report["queues"].items():
        rated = [
            Html(f"{rates[f'{family}:{name}']:.1f}") if rates else Html("–") for name, _ in RATED
        ]
        rows.append(
            [
                Html(f"<b>{esc(family)}</b>"),
                row["waiting"],
                row["parked"],
                row["in_flight_or_scheduled"],
                duration(oldest.get(family)),
                *rated,
                fill(
                    '<span class="muted">$d / $r / $l / $x</span>',
                    d=row["delivered"],
                    r=row["retried"],
                    l=row["rate_limited"],
                    x=row["dead"],
                ),
            ]
        )
    headings = [
        "family",
        "waiting",
        "parked",
        "in flight / scheduled",
        "oldest waiting",
        *(heading for _, heading in RATED),
        "totals: delivered / retried / 429 / dead",
    ]
    return table(headings, rows)


def _limits(report: dict[str, Any]) -> Html:
    rows = []
    for bucket, row in report["limiter"].items():
        circuit = report["circuits"][bucket]
        if circuit["state"] == "open":
            probe = (
                "probing" if circuit["probing"] else f"probe in {circuit['next_probe_in_s']:.0f}s"
            )
            state = join([badge("open", "bad"), f" {duration(circuit['open_for_s'])}, {probe}"])
        else:
            state = badge("closed", "ok")
        paused = row["paused_for_s"]
        rows.append(
            [
                Html(f"<b>{esc(bucket)}</b>"),
                f"{row['limit_per_s']:g}",
                f"{row['rate_fraction']:.0%}",
                f"{row['effective_per_s']:g}",
                badge(f"paused {duration(paused)}", "warn") if paused else badge("flowing", "ok"),
                state,
                circuit["failures_in_a_row"],
                circuit["parked"],
                f"{circuit['opened']} / {circuit['closed']}",
            ]
        )
    headings = [
        "bucket",
        "limit/s",
        "rate fraction",
        "now/s",
        "pause",
        "circuit",
        "failures in a row",
        "parked",
        "opened / closed",
    ]
    return table(headings, rows)
