"""The unit of work: one transaction, and the follow-ups it justifies, published after commit.

Follow-up tasks and deadline-index changes are registered on the unit while the transaction
runs and go out only once it has committed, whichever way the ``with`` block is left (the end
of the block, or a ``return`` inside it). An exception inside the block, or a failing commit,
rolls back and publishes nothing. Hand-threaded publishing (a ``FollowUps`` object each path
had to remember to ``publish()``) once skipped the publish on a ``return`` inside the
transaction; with this, no path can forget it. Warehouse defers ``apply_async`` to an
after-commit hook for the same reason.

The publisher belongs to the process and is installed with ``set_publisher`` where the
process starts: the worker's (Celery and the Redis deadline index) by ``worker/app.py``, the
producer side's (tasks only, ``shared.client.publish_followups``) by the web app and the CLI;
``shared`` never imports ``worker``. Tests inject their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from shared.broker import bounded
from shared.db import session_scope
from shared.tasknames import QUEUE_OF


class Task(NamedTuple):
    """A task to publish by name on its queue (``shared.tasknames``), after ``countdown``
    seconds when set (a short retry; long waits are data, swept, never ETA tasks). ``publish``
    clamps the countdown under the broker's visibility timeout (``shared.broker.bounded``).
    ``queue`` overrides the task's own queue (a critical message's sends: ``tasknames``)."""

    name: str
    args: tuple[Any, ...]
    countdown: float | None = None
    queue: str | None = None

    @property
    def destination(self) -> str:
        """The queue it is published on."""
        return self.queue or QUEUE_OF[self.name]


@dataclass
class FollowUps:
    """What a transaction decided to do once it is durable."""

    tasks: list[Task] = field(default_factory=list)
    index: list[tuple[str, datetime]] = field(default_factory=list)
    unindex: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tasks or self.index or self.unindex)

    def extend(self, other: FollowUps) -> None:
        self.tasks.extend(other.tasks)
        self.index.extend(other.index)
        self.unindex.extend(other.unindex)


Publisher = Callable[[FollowUps], None]
_publisher: Publisher | None = None


def set_publisher(publisher: Publisher | None) -> Publisher | None:
    """Install the seam that publishes follow-ups; returns the one it replaced."""
    global _publisher
    previous, _publisher = _publisher, publisher
    return previous


def publish(followups: FollowUps) -> None:
    """Publish committed follow-ups (the only way they leave); refuses if nobody can."""
    if not followups:
        return
    if _publisher is None:
        raise RuntimeError("follow-ups registered but no publisher installed "
                           "(worker.app and the web app install one)")
    _publisher(_within_the_broker_hold(followups))


def _within_the_broker_hold(followups: FollowUps) -> FollowUps:
    """Every countdown clamped under the broker's visibility timeout (``shared.broker``): a
    task still waiting for a longer one would be handed out again by Redis, over and over."""
    tasks = [task if task.countdown is None else task._replace(countdown=bounded(task.countdown))
             for task in followups.tasks]
    if tasks == followups.tasks:
        return followups
    return FollowUps(tasks, followups.index, followups.unindex)


@dataclass
class UnitOfWork:
    """A session plus the follow-ups registered on it."""

    session: Session
    followups: FollowUps

    def task(self, name: str, *args: Any, countdown: float | None = None,
             queue: str | None = None) -> None:
        self.followups.tasks.append(Task(name, args, countdown, queue))

    def index(self, member: str, due: datetime) -> None:
        self.followups.index.append((member, due))

    def unindex(self, member: str) -> None:
        self.followups.unindex.append(member)


@contextmanager
def unit_of_work(url: str | None = None) -> Iterator[UnitOfWork]:
    """A transaction whose follow-ups are published after it commits, never before."""
    followups = FollowUps()
    with session_scope(url) as session:
        yield UnitOfWork(session, followups)
    publish(followups)


def publish_task(name: str, *args: Any, countdown: float | None = None,
                 queue: str | None = None) -> None:
    """One task that needs no transaction of its own (a retry, a batch to send)."""
    publish(FollowUps(tasks=[Task(name, args, countdown, queue)]))
