"""`cio-worker status` for people: the report `collect_status` gathers, as tables.

What holds now (jobs waiting, in flight, dead letters) and what has been counted since the
counters began (delivered, retried, dead-lettered: cumulative, they only grow) are in separate
tables with labels saying which is which, so `dead-lettered 20000` beside `dead letters now: 0`
reads as "20000 died over time, all since replayed or purged".
"""

from __future__ import annotations

from typing import Any

from cio_worker.cli._output import print_table

#: The "now" table's columns after `family`: (heading, field of the report's queue row).
NOW_COLUMNS = (
    ("waiting", "waiting"),
    ("parked (circuit open)", "parked"),
    ("in flight / scheduled", "in_flight_or_scheduled"),
)

#: The cumulative table's columns after `family`.
TOTAL_COLUMNS = (
    ("enqueued", "enqueued"),
    ("delivered", "delivered"),
    ("retried", "retried"),
    ("429s", "rate_limited"),
    ("dead-lettered", "dead"),
)


def render_status(report: dict[str, Any]) -> None:
    """Where it was read, workers, jobs now, cumulative counts, limiter and circuits, then dead
    letters and retries now."""
    print(f"Redis: {report['redis']}")
    print(describe_workers(report["workers_online"]))
    queues = report["queues"]
    print_table(
        ["family", *(heading for heading, _ in NOW_COLUMNS)],
        ([family, *(row[field] for _, field in NOW_COLUMNS)] for family, row in queues.items()),
        title="jobs now",
    )
    print_table(
        ["family", *(heading for heading, _ in TOTAL_COLUMNS)],
        ([family, *(row[field] for _, field in TOTAL_COLUMNS)] for family, row in queues.items()),
        title="since the counters began (cumulative)",
    )
    print_table(
        ["bucket", "limit/s", "now/s", "paused for (s)", "circuit"],
        (
            [
                bucket,
                f"{row['limit_per_s']:g}",
                f"{row['effective_per_s']:g}",
                f"{row['paused_for_s']:g}",
                describe_circuit(report["circuits"][bucket]),
            ]
            for bucket, row in report["limiter"].items()
        ),
        title="limiter and circuits now",
    )
    dead = report["dead_letters"]
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(dead["by_kind"].items()))
    print(
        f"dead letters now: {dead['total']}" + (f" ({kinds}; cio-worker dlq list)" if kinds else "")
    )
    print(f"scheduled retries now: {report['scheduled_retries']}  running now: {report['running']}")


def describe_workers(names: list[str] | None) -> str:
    """`workers online: 2 (a@host, b@host)`; None means they were not asked."""
    if names is None:
        return "workers online: not asked"
    if not names:
        return "workers online: none answered"
    return f"workers online: {len(names)} ({', '.join(names)})"


def describe_circuit(row: dict[str, Any]) -> str:
    """One cell: `closed`, or `OPEN 42s, probe in 3s, 120 parked`."""
    parked = f", {row['parked']} parked" if row["parked"] else ""
    if row["state"] != "open":
        return f"closed{parked}"
    probe = "probing" if row["probing"] else f"probe in {row['next_probe_in_s']:.0f}s"
    return f"OPEN {row['open_for_s']:.0f}s, {probe}{parked}"
