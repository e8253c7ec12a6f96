"""The Celery app: queues, routes, reliability settings and the beat schedule.

Settings follow ../shared/guide/engineering.md §0: late acks with prefetch 1 (every task starts
with a status guard, so a redelivery is harmless), no long ETAs (deadlines are rows swept
every second), task events on for Flower, and no result backend. The time limits and the
broker's transport options (the Redis visibility timeout: how soon a killed worker's tasks come
back) are sized together in ``shared/broker.py``.
"""

from __future__ import annotations

import logging

from celery import Celery, signals
from kombu import Queue

from shared import broker, db, logredact, metrics, tasknames, uow
from shared.settings import exit_if_sandbox_secrets, get_settings
from worker import publisher

settings = get_settings()

app = Celery("switchboard", broker=settings.effective_broker_url)
app.conf.update(
    task_ignore_result=True,
    task_acks_late=True,
    # The recovery sweep re-publishes stragglers that have a row; the producer-side tasks
    # that have none yet (accept, accept_campaign, seal, invite, break-up) reject instead.
    task_reject_on_worker_lost=False,
    worker_prefetch_multiplier=1,
    task_time_limit=broker.TASK_TIME_LIMIT_SECONDS,
    task_soft_time_limit=broker.TASK_SOFT_TIME_LIMIT_SECONDS,
    broker_connection_retry_on_startup=True,
    broker_transport_options=broker.transport_options(settings),
    worker_send_task_events=True,
    task_send_sent_event=True,
    worker_hijack_root_logger=False,
    task_serializer="json",
    accept_content=["json"],
    task_queues=[Queue(tasknames.CRITICAL_QUEUE), Queue(tasknames.SEND_QUEUE),
                 Queue(tasknames.EVENTS_QUEUE),
                 Queue(tasknames.SWEEP_QUEUE), Queue(tasknames.NOTIFY_QUEUE)],
    task_default_queue=tasknames.SEND_QUEUE,
    task_routes={name: {"queue": queue} for name, queue in tasknames.QUEUE_OF.items()},
    beat_schedule={
        "sweep-deadlines": {
            "task": tasknames.SWEEP_DEADLINES,
            "schedule": settings.sweep_interval_seconds,
            "options": {"expires": 10},
        },
        "sweep-deliveries": {
            "task": tasknames.SWEEP_DELIVERIES,
            "schedule": settings.sweep_interval_seconds,
            "options": {"expires": 10},
        },
        "number-events": {
            "task": tasknames.NUMBER_EVENTS,
            "schedule": settings.sweep_interval_seconds,
            "options": {"expires": 10},
        },
        "recover": {
            "task": tasknames.RECOVER,
            "schedule": settings.recover_interval_seconds,
            "options": {"expires": 30},
        },
    },
)
publisher.install(app)  # committed follow-ups leave through this app
import worker.tasks  # noqa: F401  (registers every task on this app)


@signals.worker_process_init.connect
def _fresh_connections_after_fork(**_: object) -> None:
    """Engines and Redis pools must not be shared across a fork."""
    from worker import redis_conn

    db.reset()
    redis_conn.reset()


@signals.worker_init.connect
def _refuse_sandbox_secrets(**_: object) -> None:
    """A provider with a real URL and its sandbox callback secret: the worker does not start
    (one line on stderr naming the variable, exit status 4), like the web app."""
    exit_if_sandbox_secrets("worker")


@signals.worker_init.connect
def _shared_metrics_directory(**_: object) -> None:
    """Before the pool forks: every pool process counts in one shared directory."""
    metrics.use_directory()


@signals.worker_ready.connect
def _serve_worker_metrics(**_: object) -> None:
    """Workers on another host than the web serve their counts themselves (shared/metrics.py)."""
    metrics.serve_worker_metrics(get_settings().worker_metrics_port)


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _redact_secrets_in_logs(logger: logging.Logger, **_: object) -> None:
    """A task failure's traceback may quote a request with its credentials."""
    logredact.install(logger)


@signals.beat_init.connect
def _reindex_on_beat_start(**_: object) -> None:
    """Rebuild the Redis deadline index from the database: a Redis restart loses nothing."""
    uow.publish_task(tasknames.REINDEX_DEADLINES)
