"""Celery tasks, thin wrappers around ``worker.pipeline`` and ``worker.sweeps``.

Importing this package registers every task on ``worker.app.app``.
"""

from worker.tasks import bulk, events, flows, messenger, notify, send, sweep  # noqa: F401
