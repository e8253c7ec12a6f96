"""Send-queue tasks: accept a producer's request, dispatch a message, send one attempt.

Retry counts live on the attempt row, not in Celery, so a retry scheduled here survives a
lost broker message: the recovery sweep re-publishes pending attempts whose time has come.
"""

from __future__ import annotations

from shared import tasknames, uow
from worker import engine
from worker.app import app


def _run_attempt(attempt_id: str | None) -> None:
    if attempt_id is None:
        return
    try:
        engine.send_attempt(attempt_id)
    except engine.RetryLater as later:
        uow.publish_task(tasknames.SEND_ATTEMPT, attempt_id, countdown=later.countdown)


@app.task(name=tasknames.ACCEPT, acks_late=True,
          reject_on_worker_lost=True)  # only the broker holds it: hand it back if the process dies
def accept(message_id: str, request: dict, app_id: str = "default") -> None:
    """Producer entry point (``shared.client.send``): insert once, then send."""
    _run_attempt(engine.accept(message_id, request, app_id))


@app.task(name=tasknames.DISPATCH, acks_late=True)
def dispatch(message_id: str) -> None:
    """HTTP API entry point: the row exists already; create the first attempt and send it."""
    _run_attempt(engine.dispatch(message_id))


@app.task(name=tasknames.SEND_ATTEMPT, acks_late=True)
def send_attempt(attempt_id: str) -> None:
    _run_attempt(attempt_id)
