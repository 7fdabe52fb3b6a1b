"""`cio-worker status` for people: the report `collect_status` gathers, as two tables."""

from __future__ import annotations

from typing import Any

from cio_worker.cli._output import print_table

#: The queue table's columns after `family`: (heading, field of the report's queue row).
QUEUE_COLUMNS = (
    ("waiting", "waiting"),
    ("in flight / scheduled", "in_flight_or_scheduled"),
    ("delivered", "delivered"),
    ("retried", "retried"),
    ("429s", "rate_limited"),
    ("dead", "dead"),
)


def render_status(report: dict[str, Any]) -> None:
    """Queues, then limiter buckets with their circuits, then dead letters and retries."""
    from rich.console import Console

    print_table(
        ["family", *(heading for heading, _ in QUEUE_COLUMNS)],
        (
            [family, *(row[field] for _, field in QUEUE_COLUMNS)]
            for family, row in report["queues"].items()
        ),
        title="cio_worker queues",
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
        title="limiter and circuits",
    )
    console = Console()
    dead = report["dead_letters"]
    console.print(f"dead letters: {dead['total']} {dead['by_kind'] or ''}")
    console.print(f"scheduled retries: {report['scheduled_retries']}")


def describe_circuit(row: dict[str, Any]) -> str:
    """One cell: `closed`, or `OPEN 42s, probe in 3s, 120 parked`."""
    parked = f", {row['parked']} parked" if row["parked"] else ""
    if row["state"] != "open":
        return f"closed{parked}"
    probe = "probing" if row["probing"] else f"probe in {row['next_probe_in_s']:.0f}s"
    return f"OPEN {row['open_for_s']:.0f}s, {probe}{parked}"
