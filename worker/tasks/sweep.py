"""Sweep-queue tasks run by beat: due deadlines every second, recovery every 15 s."""

from __future__ import annotations

from shared import tasknames
from worker import sweeps
from worker.app import app


@app.task(name=tasknames.SWEEP_DEADLINES, acks_late=False)
def sweep_deadlines() -> int:
    return sweeps.sweep_deadlines()


@app.task(name=tasknames.REINDEX_DEADLINES, acks_late=False)
def reindex_deadlines() -> int:
    return sweeps.reindex_deadlines()


@app.task(name=tasknames.RECOVER, acks_late=False)
def recover() -> dict:
    return sweeps.recover()


@app.task(name=tasknames.NUMBER_EVENTS, acks_late=False)
def number_events() -> int:
    return sweeps.number_events()
