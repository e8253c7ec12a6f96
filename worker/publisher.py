"""The worker's publisher for committed follow-ups (``shared.uow``): Celery tasks on their
queues and the Redis deadline index. Importing this module installs it; it is the one seam
that publishes follow-up tasks.
"""

from __future__ import annotations

from shared import tasknames, uow
from worker import deadlines
from worker.redis_conn import get_redis


def publish(followups: uow.FollowUps) -> None:
    """Index changes first (a task may read them), then the tasks."""
    from worker.app import app  # late: the app imports the tasks, which import the engine

    client = get_redis()
    deadlines.index(client, followups.index)
    deadlines.remove(client, followups.unindex)
    for name, arg in followups.tasks:
        app.send_task(name, args=[arg], queue=tasknames.QUEUE_OF[name])


uow.set_publisher(publish)
