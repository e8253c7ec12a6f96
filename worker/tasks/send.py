"""Send-queue tasks: accept a producer's request, dispatch a message, send one attempt.

Retry counts live on the attempt row, not in Celery, so a retry scheduled here survives a
lost broker message: the recovery sweep re-publishes pending attempts whose time has come.
"""

from __future__ import annotations

from celery import Task

from shared import tasknames, uow
from worker import engine
from worker.app import app


def _run_attempt(task: Task, attempt_id: str | None) -> None:
    """Send it; a retry goes back on the queue this task came from (``critical`` stays
    critical)."""
    if attempt_id is None:
        return
    try:
        engine.send_attempt(attempt_id)
    except engine.RetryLater as later:
        queue = (task.request.delivery_info or {}).get("routing_key") or None
        uow.publish_task(tasknames.SEND_ATTEMPT, attempt_id, countdown=later.countdown,
                         queue=queue if queue == tasknames.CRITICAL_QUEUE else None)


@app.task(name=tasknames.ACCEPT, acks_late=True, bind=True,
          reject_on_worker_lost=True)  # only the broker holds it: hand it back if the process dies
def accept(self: Task, message_id: str, request: dict, app_id: str = "default") -> None:
    """Producer entry point (``shared.client.send``): insert once, then send."""
    _run_attempt(self, engine.accept(message_id, request, app_id))


@app.task(name=tasknames.DISPATCH, acks_late=True, bind=True)
def dispatch(self: Task, message_id: str) -> None:
    """HTTP API entry point: the row exists already; create the first attempt and send it."""
    _run_attempt(self, engine.dispatch(message_id))


@app.task(name=tasknames.SEND_ATTEMPT, acks_late=True, bind=True)
def send_attempt(self: Task, attempt_id: str) -> None:
    _run_attempt(self, attempt_id)
