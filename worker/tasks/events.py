"""Events-queue tasks: turn stored provider callbacks into status changes."""

from __future__ import annotations

from shared import tasknames, uow
from worker import reports
from worker.app import app


@app.task(name=tasknames.HANDLE_CALLBACK, acks_late=True)
def handle_callback(callback_id: int) -> None:
    try:
        reports.handle_callback(callback_id)
    except reports.RetryLater as later:
        uow.publish_task(tasknames.HANDLE_CALLBACK, callback_id, countdown=later.countdown)
