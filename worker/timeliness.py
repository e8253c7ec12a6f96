"""Time-aware delivery in the send path: no hop starts after the message's ``valid_until``,
and none inside the recipient's quiet hours (``shared.sendtime`` holds the rules).

``worker.engine.send_batch`` asks ``admit`` before anything else (before the content is
prepared, a rate-limit slot taken or the provider's circuit asked), for every hop alike: the
first, a retry, a fallback. What it keeps back is recorded set-based, like every outcome:

* past ``valid_until``: the attempt ends ``expired`` (reason ``valid_until``) and the route
  ends the message ``expired`` (``valid_until``), with no further hop;
* inside quiet hours: the attempt stays ``pending`` with ``not_before`` at their end, a
  ``held`` event says why and until when, and a wake-up at that time (an entry of the
  deadline index, ``WAKE_PREFIX``) sends it; the database column is the truth, the beat's
  re-index and the recovery sweep rebuild the wake-up after a Redis loss. The hop's validity
  keeps running meanwhile: the attempt carries ``valid_until`` as its deadline.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, update

from shared import sendtime
from shared.lifecycle import AttemptStatus, apply_attempt
from shared.messages import add_event
from shared.models import Attempt, utcnow
from shared.schemas import MIN_DLR_TIMEOUT, SendRequest
from shared.uow import unit_of_work
from worker import route
from worker.outcomes import Batch, Item

WAKE_PREFIX = "wake:"  # deadline-index members that send a waiting attempt when due
_ATTEMPTS = Attempt.__table__


def admit(batch: Batch, now: datetime | None = None) -> Batch:
    """The items that may start now; the others are recorded (expired, or waiting)."""
    now = now or utcnow()
    late = [i for i in batch.items if sendtime.remaining(i.valid_until, now) == 0]
    if late:
        _out_of_time(batch, late)
    quiet = {} if batch.priority == sendtime.CRITICAL else {
        i.attempt_id: until for i in batch.items if i not in late
        and (until := sendtime.quiet_until(i.quiet_hours, now)) is not None}
    if quiet:
        _wait_for_morning(batch, quiet)
    gone = {i.attempt_id for i in late} | set(quiet)
    return batch.only({i for i in batch.attempt_ids if i not in gone}) if gone else batch


def valid_until(batch: Batch) -> datetime | None:
    """The earliest validity among the batch's messages (they share one request)."""
    ends = [i.valid_until for i in batch.items if i.valid_until is not None]
    return min(ends) if ends else None


def clamp_window(batch: Batch, window: float, now: datetime | None = None) -> float:
    """A hop's window (seconds) no longer than the validity its messages have left."""
    left = sendtime.remaining(valid_until(batch), now or utcnow())
    return window if left is None else min(window, left)


def within_validity(batch: Batch, window: float, now: datetime | None = None) -> SendRequest:
    """The request with this hop's deadline no longer than the validity left, so the
    provider's own window (Viber's ``dlr_timeout``) ends by then too; the gateway's floor of
    60 s still applies on its side, while ours ends at ``valid_until`` exactly."""
    left = sendtime.remaining(valid_until(batch), now or utcnow())
    if left is None or left >= window:
        return batch.request
    seconds = max(MIN_DLR_TIMEOUT, int(left))
    return batch.request.model_copy(
        update={"deadlines": {**batch.request.deadlines, batch.channel: seconds}})


def _out_of_time(batch: Batch, items: list[Item]) -> None:
    transition = apply_attempt(AttemptStatus.PENDING, "deadline")
    ids = [i.attempt_id for i in items]
    with unit_of_work() as work:
        moved = set(work.session.scalars(
            update(Attempt).where(Attempt.id.in_(ids), Attempt.status == AttemptStatus.PENDING)
            .values(status=transition.status, error_reason=route.VALID_UNTIL, deadline_at=None,
                    not_before=None, updated_at=utcnow())
            .returning(Attempt.id).execution_options(synchronize_session=False)).all())
        for item in items:
            work.unindex(item.attempt_id)
            if item.attempt_id in moved:
                add_event(work.session, item.message_id, "attempt_expired", item.attempt_id,
                          channel=batch.channel, reason=route.VALID_UNTIL)
                route.advance(work, item.message_id, batch.hop, batch.channel,
                              transition.status, route.VALID_UNTIL)


def _wait_for_morning(batch: Batch, until: dict[str, datetime]) -> None:
    """``pending`` until the quiet hours end, a wake-up then, validity still running."""
    items = [i for i in batch.items if i.attempt_id in until]
    with unit_of_work() as work:
        work.session.execute(
            update(_ATTEMPTS).where(_ATTEMPTS.c.id == bindparam("aid"),
                                    _ATTEMPTS.c.status == AttemptStatus.PENDING)
            .values(not_before=bindparam("until"), deadline_at=bindparam("due"),
                    updated_at=utcnow()),
            [{"aid": i.attempt_id, "until": until[i.attempt_id], "due": i.valid_until}
             for i in items])
        for item in items:
            when = until[item.attempt_id]
            add_event(work.session, item.message_id, "held", item.attempt_id,
                      channel=batch.channel, reason="quiet_hours",
                      until=when.isoformat() + "Z",
                      timezone=(item.quiet_hours or {}).get("timezone"))
            work.index(WAKE_PREFIX + item.attempt_id, when)
            if item.valid_until is not None:
                work.index(item.attempt_id, item.valid_until)

