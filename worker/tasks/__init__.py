"""Celery tasks, thin wrappers around the engine (``worker.engine``, ``worker.reports``) and
``worker.sweeps``.

Importing this package registers every task on ``worker.app.app``.
"""

from worker.tasks import bulk, events, flows, messenger, notify, send, sweep  # noqa: F401
