"""The Celery app and its tasks: thin wrappers that hand a job id to delivery.Deliverer.

This is the only module that imports Celery. Settings that make delivery durable:

- `task_acks_late` + `task_reject_on_worker_lost`: a message is acknowledged only after its job
  ended (delivered, dead-lettered or re-queued), so a worker that dies mid-job leaves it unacked
  and kombu redelivers it.
- `worker_prefetch_multiplier=1`: a worker holds no more messages than it has threads working.
- Visibility timeout = longest backoff + 2 x HTTP timeout + 60 s (default 380 s). Kombu redelivers
  a message left unacked for longer than this. A retry's countdown waits unacked inside the worker
  (celery#2599), so the timeout must outlast the longest delay we ever schedule, which delivery.py
  caps at CIO_WORKER_BACKOFF_MAX_S; the rest covers one delivery's HTTP time. Any shorter and a
  waiting retry would run twice; much longer and a killed worker's jobs would wait that long.
- One queue per family (`cio.track`, `cio.transactional`, `cio.broadcast`, `cio.app`), each
  declared with its own direct exchange, so a busy family never starves another.
- Task events and sent events on, for Flower. Task arguments are only the job id.
- A thread pool: delivery is network-bound, and one httpx pool per process is shared by threads.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from celery import Celery, Task, signals
from kombu import Exchange, Queue

from cio_worker.client import get_client
from cio_worker.config import Settings
from cio_worker.connection import get_redis
from cio_worker.deadletter import DeadLetterStore
from cio_worker.delivery import Deliverer
from cio_worker.errors import ConfigError
from cio_worker.kinds import Family, Kind, queue_name
from cio_worker.ledger import JobLedger
from cio_worker.limiter import Limiter
from cio_worker.logs import configure_logging
from cio_worker.preflight import check_credentials, check_redis

#: Threads per worker process by default: enough to keep 100 requests/s moving at ~50 ms each.
DEFAULT_CONCURRENCY = 8


def visibility_timeout_s(settings: Settings) -> float:
    return settings.backoff_max_s + 2 * settings.http_timeout_s + 60


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
    if settings.redis_url.startswith("sentinel"):
        from cio_worker.connection import parse_sentinel_url

        transport["master_name"] = parse_sentinel_url(settings.redis_url)[2]
    celery_app.conf.update(
        broker_url=settings.redis_url,
        broker_transport_options=transport,
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
            _deliverer = Deliverer(
                settings=settings,
                ledger=JobLedger(redis_client),
                dead_letters=DeadLetterStore(
                    redis_client, retention_days=settings.dlq_retention_days
                ),
                limiter=Limiter(settings, redis_client),
                client=get_client(settings),
            )
        return _deliverer


def _deliver(task: Task[Any, Any], job_id: str) -> str:
    outcome = get_deliverer().run(job_id)
    if outcome.state == "retry":
        # A new message with the same task id; this one is acknowledged once it is published.
        raise task.retry(countdown=outcome.delay_s, max_retries=None)
    return outcome.state


def _register(kind: Kind) -> None:
    def deliver_job(self: Task[Any, Any], job_id: str) -> str:
        return _deliver(self, job_id)

    deliver_job.__doc__ = f"Deliver a {kind.value} job to Customer.io."
    app.task(name=kind.task_name, bind=True, queue=queue_name(kind.family), max_retries=None)(
        deliver_job
    )


for _kind in Kind:
    _register(_kind)


@signals.worker_init.connect
def _preflight(sender: Any = None, **_: Any) -> None:
    """Refuse to start without credentials or on an evicting Redis; warn when AOF is off."""
    configure_logging(settings)
    import structlog

    log = structlog.get_logger("cio_worker.worker")
    consumed = set(getattr(sender.app.amqp.queues, "consume_from", None) or sender.app.amqp.queues)
    families = {name.removeprefix("cio.") for name in consumed if name.startswith("cio.")}
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
    """The Redis URL without its password."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
