"""The web's units of work whose follow-ups the recovery sweep can publish again.

A request that stores a row and registers its task (a message's dispatch, a stored
callback's handling, a campaign's batches, a flow run's start) answers once the row is
durable, even when the broker is down: the recovery sweep re-publishes queued messages,
received callbacks, pending attempts and starting runs. So a publish that fails after the
commit is logged, not raised. An error inside the block or in the commit still propagates,
and then nothing was published (``shared.uow``). Requests whose task nothing would redo (a
seal, a friendship change) use ``shared.uow`` directly and fail loudly instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event

from shared.uow import FollowUps, UnitOfWork, unit_of_work

log = logging.getLogger(__name__)


@contextmanager
def recoverable_unit_of_work() -> Iterator[UnitOfWork]:
    """``shared.uow.unit_of_work``, except that a failed publish after the commit is logged."""
    committed = False

    def _committed(_session: object) -> None:
        nonlocal committed
        committed = True

    try:
        with unit_of_work() as work:
            yield work
            # Listened to only once the block is done: the unit's own commit is what counts.
            event.listen(work.session, "after_commit", _committed)
    except Exception:
        if not committed:
            raise
        log.exception("could not publish %s; the recovery sweep will",
                      _describe(work.followups))


def _describe(followups: FollowUps) -> str:
    """The tasks for the log, each batch of ids shortened to its size."""
    return ", ".join(
        f"{task.name}(" + ", ".join(f"<{len(a)} ids>" if isinstance(a, list) else repr(a)
                                    for a in task.args) + ")"
        for task in followups.tasks)
