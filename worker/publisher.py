"""The worker's publisher for committed follow-ups (``shared.uow``): Celery tasks on their
queues and the Redis deadline index. ``worker/app.py`` installs it; it is the one seam that
publishes follow-up tasks, retries included.
"""

from __future__ import annotations

from celery import Celery

from shared import uow
from worker import deadlines
from worker.redis_conn import get_redis


def install(app: Celery) -> None:
    """Make ``app`` the way this process's committed follow-ups leave."""

    def publish(followups: uow.FollowUps) -> None:
        """Index changes first (a task may read them), then the tasks."""
        client = get_redis()
        deadlines.index(client, followups.index)
        deadlines.remove(client, followups.unindex)
        for task in followups.tasks:
            app.send_task(task.name, args=list(task.args), countdown=task.countdown,
                          queue=task.destination)

    uow.set_publisher(publish)
