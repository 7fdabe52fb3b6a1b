"""`cio-worker status`: what is queued, waiting, dead and paused, read from Redis in one pass,
and which workers are online.

This gathers the report (`status --json` prints it as is); cli/_status.py renders it as tables.
Queue counters (`enqueued`, `delivered`, `retried`, `rate_limited`, `dead`) are cumulative: they
only grow, from the first job this Redis saw. `dead_letters` is what the dead-letter queue holds
now (replayed and purged letters have left it).
"""

from __future__ import annotations

import json
from typing import Any

from cio_worker import keys
from cio_worker.config import Settings, redact_url
from cio_worker.connection import (
    broker_ssl_options,
    broker_transport_options,
    broker_url,
    get_redis,
)
from cio_worker.kinds import Family, queue_name
from cio_worker.limiter import Circuit, Limiter, bucket_rates
from cio_worker.ops._backlog import read_backlog
from cio_worker.queue import DeadLetterStore, stats

#: How long `status` waits for workers to answer its ping, seconds (as `celery inspect ping`).
WORKER_PING_S = 1.0


def collect_status(settings: Settings, *, worker_ping_s: float = WORKER_PING_S) -> dict[str, Any]:
    """A JSON-ready report; its keys are stable for scripts. `worker_ping_s=0` skips asking the
    workers (`workers_online` is then None)."""
    client = get_redis(settings)
    counters = stats(client)
    unacked_by_queue: dict[str, int] = {}
    scheduled = 0
    for raw in client.hvals(keys.kombu_unacked()):
        try:
            message, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        unacked_by_queue[routing_key] = unacked_by_queue.get(routing_key, 0) + 1
        eta = message.get("headers", {}).get("eta")
        if eta:
            scheduled += 1
    backlog = read_backlog(client, settings)
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
            # For a worker (ops/_backlog.py), or parked for Customer.io to come back.
            "waiting": backlog.waiting[family.value] + parked_by_family[family.value],
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
        # Which Redis this was read from (password masked), so two reports can be told apart.
        "redis": redact_url(settings.redis_url),
        "workers_online": workers_online(settings, worker_ping_s) if worker_ping_s > 0 else None,
        "queues": queues,
        # Retries and rate-limit waits parked in Redis (ledger), plus any Celery ETA messages.
        "scheduled_retries": int(client.zcard(keys.delayed())) + scheduled,
        "running": int(client.zcard(keys.leases())),
        "oldest_batched_job_age_s": round(backlog.batched_age_s, 3),
        "dead_letters": {"total": store.count(), "by_kind": by_kind},
        "limiter": limiter,
        "circuits": circuits,
        "jobs_pending": sum(1 for _ in client.scan_iter(match=keys.job("*"), count=1000)),
    }


def workers_online(settings: Settings, timeout_s: float = WORKER_PING_S) -> list[str]:
    """The names (`celery@host`) of the workers that answer a ping within `timeout_s`, sorted.

    The ping goes through Celery's remote-control mailbox in Redis, as `celery inspect ping`
    does; every cio_worker worker answers it (`cio-worker worker`, `celery -A cio_worker
    worker`, the demo's). A worker too busy to answer in time is not counted.
    """
    from celery import Celery  # imported here: only a report that asks the workers needs it

    app = Celery("cio_worker_status", set_as_current=False)
    transport: dict[str, Any] = {
        "socket_timeout": max(settings.redis_timeout_s, 1.0),
        "socket_connect_timeout": max(settings.redis_timeout_s, 1.0),
        "max_retries": 1,
    }
    transport.update(broker_transport_options(settings.redis_url, timeout_s=1.0))
    app.conf.update(
        broker_url=broker_url(settings.redis_url),
        broker_transport_options=transport,
        broker_use_ssl=broker_ssl_options(settings.redis_url),
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=1,
    )
    try:
        replies = app.control.ping(timeout=timeout_s) or []
    finally:
        app.close()
    return sorted(name for reply in replies for name in reply)
