"""The Celery app and its tasks: thin wrappers that hand a job id to `Deliverer` (_deliverer.py).

This is the only module that imports Celery. The job ledger (queue/_ledger.py), not the Celery
message, is the source of truth: a task claims its job before sending, so a duplicated or
redelivered message is harmless, and the sweeper (queue/_sweeper.py) re-pushes any job whose
message was lost or whose worker died. Settings that keep delivery durable and fair:

- `task_acks_late` + `task_reject_on_worker_lost`: a message is acknowledged only after its job
  ended (delivered, dead-lettered or parked in keys.delayed).
- `worker_prefetch_multiplier=1`: a worker holds no more messages than it has threads working.
- Retries and rate-limit waits are not Celery countdowns (those wait unacked in a worker's memory
  and run twice once they outlive the visibility timeout, celery#2599): the job is parked in a
  Redis sorted set and its message acknowledged. So the visibility timeout only has to outlast
  one delivery (limiter wait + HTTP time); see `visibility_timeout_s`.
- One queue per family (`cio.track`, `cio.transactional`, `cio.broadcast`, `cio.app`), each
  declared with its own direct exchange, so a busy family never starves another.
- Task events and sent events on, for Flower. Task arguments are only the job id.
- A thread pool: delivery is network-bound, and one httpx pool per process is shared by threads.
- Each worker process runs a sweeper thread (queue/_sweeper.py) and a consumer watchdog
  (_watchdog.py).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, signals
from celery.exceptions import Reject
from kombu import Exchange, Queue

from cio_worker import logs
from cio_worker.config import Settings, redact_url
from cio_worker.connection import (
    broker_ssl_options,
    broker_transport_options,
    broker_url,
    get_redis,
)
from cio_worker.customerio import get_client
from cio_worker.errors import ConfigError
from cio_worker.gc_tuning import quiet_collector
from cio_worker.kinds import Family, Kind, family_of_queue, queue_name
from cio_worker.limiter import Limiter
from cio_worker.logs import configure_logging
from cio_worker.ops import check_credentials, check_redis
from cio_worker.queue import (
    DeadLetterStore,
    Doorbell,
    JobLedger,
    LeaseKeeper,
    Sweeper,
    due_bell,
    new_owner_id,
)
from cio_worker.worker import _kombu_fixes as kombu_fixes
from cio_worker.worker._batcher import Batcher
from cio_worker.worker._deliverer import Deliverer
from cio_worker.worker._watchdog import WATCHDOG_STALL_S, ConsumerWatchdog

kombu_fixes.install()  # before any worker connects: see _kombu_fixes.py

#: Threads per worker process by default: enough to keep 100 requests/s moving at ~50 ms each.
DEFAULT_CONCURRENCY = 8


def visibility_timeout_s(settings: Settings) -> float:
    """How long kombu waits before restoring an unacknowledged message.

    A backstop only (the sweeper returns a dead worker's jobs within 25 s): it must outlast one
    delivery, at most a limiter wait plus an HTTP exchange, with room for a slow host. A restored
    message whose job is still running is dropped by the claim.
    """
    return 2 * settings.http_timeout_s + 100


def create_app(settings: Settings) -> Celery:
    celery_app = Celery("cio_worker", set_as_current=False)
    queues = [
        Queue(queue_name(f), Exchange(queue_name(f), type="direct"), routing_key=queue_name(f))
        for f in Family
    ]
    transport: dict[str, Any] = {
        "visibility_timeout": visibility_timeout_s(settings),
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "health_check_interval": 10,
    }
    # Sentinel: the master's name goes in the transport options and the URL loses its query,
    # or kombu's failover switch crashes the worker (connection.broker_url explains).
    transport.update(broker_transport_options(settings.redis_url, timeout_s=5))
    celery_app.conf.update(
        broker_url=broker_url(settings.redis_url),
        broker_transport_options=transport,
        # rediss://: verify the certificate (kombu alone would not); connection.py explains.
        broker_use_ssl=broker_ssl_options(settings.redis_url),
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_queues=queues,
        task_default_queue=queue_name(Family.TRACK),
        task_routes={kind.task_name: {"queue": queue_name(kind.family)} for kind in Kind},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_pool="threads",
        worker_concurrency=DEFAULT_CONCURRENCY,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        result_backend=None,
    )
    return celery_app


settings = Settings.from_env()
app = create_app(settings)

_deliverer: Deliverer | None = None
_deliverer_lock = threading.Lock()


def get_deliverer() -> Deliverer:
    """This process's Deliverer, built on first use (after any fork)."""
    global _deliverer
    with _deliverer_lock:
        if _deliverer is None:
            redis_client = get_redis(settings)
            ledger = JobLedger(redis_client)
            _deliverer = Deliverer(
                settings=settings,
                ledger=ledger,
                dead_letters=DeadLetterStore(
                    redis_client, retention_days=settings.dlq_retention_days
                ),
                limiter=Limiter(settings, redis_client),
                client=get_client(settings),
                leases=LeaseKeeper(ledger, new_owner_id(), lease_s=settings.lease_s),
            )
        return _deliverer


def _deliver(job_id: str, kind: Kind) -> str:
    watchdog.task_started()
    try:
        return get_deliverer().run(job_id, kind).state
    except redis.RedisError as exc:
        # Redis is unreachable mid-job. Put the message back rather than acknowledge it; the
        # ledger still holds the job, so even if this reject is lost the sweeper finds it.
        raise Reject(exc, requeue=True) from exc
    finally:
        watchdog.task_finished()


def _register(kind: Kind) -> None:
    def deliver_job(job_id: str) -> str:
        return _deliver(job_id, kind)

    deliver_job.__doc__ = f"Deliver a {kind.value} job to Customer.io."
    deliver_job.__name__ = f"deliver_{kind.value}"
    app.task(name=kind.task_name, queue=queue_name(kind.family), max_retries=None)(deliver_job)


for _kind in Kind:
    _register(_kind)

_sweeper: Sweeper | None = None
_batcher: Batcher | None = None
watchdog = ConsumerWatchdog(stall_after_s=WATCHDOG_STALL_S)


def _consumed_families(consumer: Any) -> set[str]:
    consumed = set(
        getattr(consumer.app.amqp.queues, "consume_from", None) or consumer.app.amqp.queues
    )
    families = (family_of_queue(name) for name in consumed)
    return {family.value for family in families if family is not None}


@signals.worker_ready.connect
def _start_background(sender: Any = None, **_: Any) -> None:
    """Start this worker's sweeper, consumer watchdog and batch senders once it consumes
    (after quieting the cycle collector: gc_tuning.py)."""
    global _sweeper
    quiet_collector()
    redis_client = get_redis(settings)
    families = sorted(_consumed_families(sender))
    _sweeper = Sweeper(
        redis_client,
        families=[Family(f) for f in families],
        settings=settings,
        doorbell=Doorbell(settings, due_bell(), owner=new_owner_id()),
    )
    _sweeper.start()
    watchdog.start(redis_client, [queue_name(Family(f)) for f in families])
    global _batcher
    if settings.batch and "track" in families:
        _batcher = Batcher(
            settings=settings,
            redis=redis_client,
            client=get_client(settings),
            limiter=Limiter(settings, redis_client),
            dead_letters=DeadLetterStore(redis_client, retention_days=settings.dlq_retention_days),
            owner=new_owner_id(),
            events=_event_sender(sender.hostname),
        )
        _batcher.start()


def _event_sender(hostname: str) -> Callable[..., None]:
    """Send Celery task events from a non-task thread (the batch senders), so Flower shows
    batches as tasks. Best effort: an event that cannot be sent is dropped, never the batch."""
    lock = threading.Lock()
    dispatcher: Any = None

    def send(event_type: str, **fields: Any) -> None:
        nonlocal dispatcher
        with lock:  # a Dispatcher is not thread-safe
            try:
                if dispatcher is None:
                    dispatcher = app.events.Dispatcher(
                        app.connection_for_write(), hostname=hostname, enabled=True
                    )
                dispatcher.send(event_type, **fields)
            except Exception as exc:  # Redis away: drop the event, retry the connection later
                dispatcher = None

                logs.get_logger(__name__).debug(
                    "task_event_not_sent", error=f"{type(exc).__name__}: {exc}"
                )

    return send


@signals.worker_shutting_down.connect
def _stop_batching(**_: Any) -> None:
    """On SIGTERM, take no new batch; the one in hand finishes (or its lease brings it back)."""
    if _batcher is not None:
        _batcher.request_stop()  # a signal handler: set the flag, join later


@signals.worker_shutdown.connect
def _stop_background(**_: Any) -> None:
    if _batcher is not None:
        _batcher.stop()
    watchdog.stop()
    if _sweeper is not None:
        _sweeper.stop()


@signals.worker_init.connect
def _preflight(sender: Any = None, **_: Any) -> None:
    """Refuse to start without credentials or on an evicting Redis; warn when AOF is off."""
    configure_logging(settings)

    log = logs.get_logger(__name__)
    families = _consumed_families(sender)
    try:
        check_credentials(settings, families)
        for warning in check_redis(get_redis(settings), allow_eviction=settings.allow_eviction):
            log.warning("redis_config_warning", message=warning)
    except ConfigError as exc:
        print(f"cio_worker: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    except Exception as exc:  # Redis unreachable: let Celery's own reconnect loop report it
        log.warning("preflight_skipped", error=f"{type(exc).__name__}: {exc}")
    log.info(
        "worker_ready_to_start", families=sorted(families), redis=_safe_url(settings.redis_url)
    )


def _safe_url(url: str) -> str:
    """The Redis URL without its password (every Sentinel alternate's too)."""
    return redact_url(url)
