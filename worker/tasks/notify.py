"""Notify-queue tasks: status webhooks to producers (see ``worker.notify``)."""

from __future__ import annotations

from shared import tasknames
from worker import notify
from worker.app import app


@app.task(name=tasknames.NOTIFY, acks_late=True)
def deliver(delivery_id: int) -> str | None:
    return notify.deliver(delivery_id)


@app.task(name=tasknames.SWEEP_DELIVERIES, acks_late=False)
def sweep_deliveries() -> int:
    return notify.sweep_deliveries()
