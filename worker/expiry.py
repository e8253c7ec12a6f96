"""What a passed hop deadline does: the attempt (sent and unreported, or held behind an open
circuit) ends ``expired`` and the route moves on. Called by the deadline sweep; idempotent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from shared.lifecycle import apply_attempt
from shared.messages import add_event
from shared.models import Attempt
from shared.uow import UnitOfWork, unit_of_work
from worker import route


def expire_attempt(attempt_id: str, now: datetime) -> bool:
    """The sweep found this attempt due: if it is still undelivered, fall back. Returns
    whether it published follow-up tasks."""
    with unit_of_work() as work:
        row = work.session.execute(
            select(Attempt.status, Attempt.deadline_at, Attempt.message_id, Attempt.hop,
                   Attempt.channel).where(Attempt.id == attempt_id)).first()
        if row is None or row.deadline_at is None:
            work.unindex(attempt_id)
        elif row.deadline_at > now:
            work.index(attempt_id, row.deadline_at)  # it moved: re-score
        else:
            work.unindex(attempt_id)
            _expire(work, attempt_id, row)
    return bool(work.followups.tasks)


def _expire(work: UnitOfWork, attempt_id: str, row: Any) -> None:
    session = work.session
    status = row.status
    transition = apply_attempt(status, "deadline")
    if not transition.changed:  # delivered or ended meanwhile: the deadline is moot
        session.execute(update(Attempt).where(Attempt.id == attempt_id).values(deadline_at=None))
        return
    if route.cas(session, Attempt, attempt_id, [status], status=transition.status,
                 deadline_at=None, not_before=None, error_reason="deadline_passed"):
        add_event(session, row.message_id, "deadline_passed", attempt_id, channel=row.channel,
                  deadline_at=row.deadline_at.isoformat() + "Z")
        route.advance(work, row.message_id, row.hop, row.channel, transition.status,
                      "deadline_passed")
