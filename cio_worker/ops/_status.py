"""`cio-worker status`: what is queued, waiting, dead and paused, read from Redis in one pass."""

from __future__ import annotations

import json
from typing import Any

from cio_worker import keys
from cio_worker.config import Settings
from cio_worker.connection import get_redis
from cio_worker.kinds import Family, queue_name
from cio_worker.limiter import Circuit, Limiter, bucket_rates
from cio_worker.queue import BatchQueue, DeadLetterStore, batch_api, stats

#: kombu's Redis transport keeps delivered-but-unacknowledged messages in this hash.
KOMBU_UNACKED = "unacked"


def collect_status(settings: Settings) -> dict[str, Any]:
    """A JSON-ready report; its keys are stable for scripts."""
    client = get_redis(settings)
    counters = stats(client)
    unacked_by_queue: dict[str, int] = {}
    scheduled = 0
    for raw in client.hvals(KOMBU_UNACKED):
        try:
            message, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        unacked_by_queue[routing_key] = unacked_by_queue.get(routing_key, 0) + 1
        eta = message.get("headers", {}).get("eta")
        if eta:
            scheduled += 1
    batched, batched_age = BatchQueue(client, batch_api(settings)).backlog()
    # Jobs parked while their family's circuit is open wait too (track's under its API).
    parked_by_family = {
        family.value: int(client.zcard(keys.parked(family.value))) for family in Family
    }
    parked_by_family["track"] += int(client.zcard(keys.parked("pipelines")))
    queues = {}
    for family in Family:
        name = queue_name(family)
        queues[family.value] = {
            "queue": name,
            # Batched Track-family jobs wait in their shards (batch_queue.py), not in cio.track.
            "waiting": int(client.llen(name))
            + (batched if family is Family.TRACK else 0)
            + parked_by_family[family.value],
            "parked": parked_by_family[family.value],
            "in_flight_or_scheduled": unacked_by_queue.get(name, 0),
            "enqueued": counters.get(f"{family.value}:enqueued", 0),
            "delivered": counters.get(f"{family.value}:delivered", 0),
            "retried": counters.get(f"{family.value}:retried", 0),
            "rate_limited": counters.get(f"{family.value}:rate_limited", 0),
            "dead": counters.get(f"{family.value}:dead", 0),
        }
    store = DeadLetterStore(client)
    by_kind: dict[str, int] = {}
    for letter in store.list():
        by_kind[letter.job.kind.value] = by_kind.get(letter.job.kind.value, 0) + 1
    limiter = {}
    rate_limiter = Limiter(settings, client)
    for bucket, rate in bucket_rates(settings).items():
        state = rate_limiter.state(bucket)
        limiter[bucket] = {
            "limit_per_s": rate,
            "paused_for_s": round(state.paused_for_s, 3),
            "rate_fraction": round(state.rate_fraction, 3),
            "effective_per_s": round(state.effective_rps, 3),
        }
    circuits = {}
    for bucket, circuit in Circuit(settings, client).states(bucket_rates(settings)).items():
        circuits[bucket] = {
            "state": circuit.state,
            "failures_in_a_row": circuit.failures,
            "open_for_s": round(circuit.open_for_s, 3),
            "next_probe_in_s": round(circuit.next_probe_in_s, 3),
            "probe_interval_s": circuit.probe_interval_s,
            "probing": circuit.probing,
            # Jobs sent one per request that wait for the circuit to close (batched ones wait
            # in their shards and are counted in `waiting`).
            "parked": int(client.zcard(keys.parked(bucket))),
            "opened": counters.get(f"circuit:{bucket}:opened", 0),
            "closed": counters.get(f"circuit:{bucket}:closed", 0),
        }
    return {
        "queues": queues,
        # Retries and rate-limit waits parked in Redis (ledger), plus any Celery ETA messages.
        "scheduled_retries": int(client.zcard(keys.delayed())) + scheduled,
        "running": int(client.zcard(keys.leases())),
        "oldest_batched_job_age_s": round(batched_age, 3),
        "dead_letters": {"total": store.count(), "by_kind": by_kind},
        "limiter": limiter,
        "circuits": circuits,
        "jobs_pending": sum(1 for _ in client.scan_iter(match=keys.job("*"), count=1000)),
    }


def render_status(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "family",
        "waiting",
        "in flight / scheduled",
        "delivered",
        "retried",
        "429s",
        "dead",
        title="cio_worker queues",
    )
    for family, row in report["queues"].items():
        table.add_row(
            family,
            *(
                str(row[k])
                for k in (
                    "waiting",
                    "in_flight_or_scheduled",
                    "delivered",
                    "retried",
                    "rate_limited",
                    "dead",
                )
            ),
        )
    console = Console()
    console.print(table)
    limits = Table(
        "bucket", "limit/s", "now/s", "paused for (s)", "circuit", title="limiter and circuits"
    )
    for bucket, row in report["limiter"].items():
        limits.add_row(
            bucket,
            f"{row['limit_per_s']:g}",
            f"{row['effective_per_s']:g}",
            f"{row['paused_for_s']:g}",
            describe_circuit(report["circuits"][bucket]),
        )
    console.print(limits)
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
