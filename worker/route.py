"""Route progression: new attempts, message status moves, fallback to the next hop.

Every status change is a compare-and-set on the row (``UPDATE ... WHERE status = <expected>``),
portable across SQLite and PostgreSQL, so each step is safe to run twice; the new status always
comes from ``shared.lifecycle``. Follow-ups (the next hop's send, the handlers' tasks) are
registered on the caller's unit of work and leave after its commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared import handlers, metrics, sendtime, tasknames
from shared.lifecycle import (
    AttemptStatus,
    MessageStatus,
    apply_attempt,
    apply_message,
    route_outcome,
)
from shared.messages import add_event
from shared.models import Attempt, Message, utcnow
from shared.providers import get_provider, provider_name
from shared.providers.base import CarriesFallback, EndedHop
from shared.schemas import SendRequest
from shared.uow import UnitOfWork
from shared.windows import deadline_window

VALID_UNTIL = "valid_until"  # the reason a message ends when its validity ran out
CAS_TRIES = 10  # a row that keeps changing under us this often is a bug, not contention


def cas(session: Session, model: type, row_id: str, expected: Collection[str],
        **values: object) -> bool:
    """Set ``values`` on the row if its status is still one of ``expected``."""
    stmt = (update(model).where(model.id == row_id, model.status.in_(list(expected)))
            .values(updated_at=utcnow(), **values))
    return session.execute(stmt).rowcount == 1


def move_message(session: Session, message_id: str, event: str, **values: object) -> str | None:
    """Apply a lifecycle event to the message with a CAS loop; returns the new status."""
    for _ in range(CAS_TRIES):
        current = session.execute(
            select(Message.status).where(Message.id == message_id)).scalar_one()
        new = apply_message(current, event)
        if new == current:
            return None
        if cas(session, Message, message_id, [current], status=new, **values):
            add_event(session, message_id, "status", status=new, reason=values.get("reason"))
            return new
    raise RuntimeError(f"message {message_id} kept changing under us")


def new_attempt(session: Session, message: Message, hop: int, **values: Any) -> str:
    """Add the attempt for ``hop`` of the message's route: ``pending`` unless ``values``
    say otherwise."""
    channel = message.route[hop]
    attempt = Attempt(id=str(uuid.uuid4()), message_id=message.id, hop=hop, channel=channel,
                      provider=provider_name(channel),
                      **{"status": AttemptStatus.PENDING, **values})
    session.add(attempt)
    return attempt.id


def advance(work: UnitOfWork, message_id: str, hop: int, channel: str, attempt_status: str,
            reason: str | None) -> None:
    """The attempt at ``hop`` ended badly: fall back to the next channel or end the message.
    Past the message's ``valid_until`` no hop starts: it ends ``expired`` (``valid_until``)."""
    session = work.session
    message = session.get(Message, message_id, populate_existing=True)
    assert message is not None
    kind, value = route_outcome(len(message.route), hop, attempt_status)
    if sendtime.remaining(message.valid_until, utcnow()) == 0:
        kind, value, reason = "final", MessageStatus.EXPIRED, VALID_UNTIL
    if kind == "fallback":
        _fall_back(work, message, hop, int(value), channel, reason)
        return
    status = move_message(session, message_id, str(value), reason=reason)
    if status is not None:
        handlers.dispatch(work, handlers.Occurrence("message_final", message_id=message_id,
                                                    status=status))


def _fall_back(work: UnitOfWork, message: Message, hop: int, next_hop: int, channel: str,
               reason: str | None) -> None:
    session = work.session
    if session.execute(update(Message).where(Message.id == message.id, Message.hop == hop)
                       .values(hop=next_hop, updated_at=utcnow())).rowcount != 1:
        return  # someone else already moved the route on
    carried = _carried_by_provider(session, message, hop, next_hop)
    if carried is not None:
        _sent_by_provider(work, message, next_hop, channel, reason, carried)
        return
    attempt_id = new_attempt(session, message, next_hop)
    add_event(session, message.id, "fallback", attempt_id, from_channel=channel,
              to_channel=message.route[next_hop], reason=reason)
    metrics.fallback(channel, message.route[next_hop], reason)
    work.task(tasknames.SEND_ATTEMPT, attempt_id, queue=tasknames.send_queue(message.priority))


def _carried_by_provider(session: Session, message: Message, hop: int,
                         next_hop: int) -> dict[str, Any] | None:
    """What the ended hop's provider sends on the next hop by itself (an account-side
    fallback), or None when that hop is ours to send. Only the same provider can carry its
    own route on, and only one that offers ``CarriesFallback``."""
    ended = session.execute(select(
        Attempt.channel, Attempt.provider, Attempt.status, Attempt.error_reason,
        Attempt.provider_message_id).where(Attempt.message_id == message.id,
                                           Attempt.hop == hop)).first()
    next_channel = message.route[next_hop]
    if ended is None or provider_name(next_channel) != ended.provider:
        return None
    provider = get_provider(ended.provider)
    if not isinstance(provider, CarriesFallback):
        return None
    return provider.carried_hop(
        EndedHop(ended.channel, ended.status, ended.error_reason, ended.provider_message_id),
        SendRequest.model_validate(message.request), next_channel)


def _sent_by_provider(work: UnitOfWork, message: Message, next_hop: int, channel: str,
                      reason: str | None, summary: dict[str, Any]) -> None:
    """The provider sends the next hop itself: its attempt starts ``submitted`` (nothing of
    ours is sent) with the hop's own window, and its reports and deadline settle it like
    any hop we sent."""
    session, next_channel = work.session, message.route[next_hop]
    now = utcnow()
    due = sendtime.clamp_due(now + timedelta(seconds=deadline_window(
        next_channel, SendRequest.model_validate(message.request))), message.valid_until)
    attempt_id = new_attempt(
        session, message, next_hop, status=apply_attempt(AttemptStatus.PENDING, "submitted")
        .status, submitted_at=now, deadline_at=due, request_summary=summary)
    add_event(session, message.id, "fallback", attempt_id, from_channel=channel,
              to_channel=next_channel, reason=reason, by_provider=True)
    metrics.fallback(channel, next_channel, reason)
    add_event(session, message.id, "submitted", attempt_id, channel=next_channel,
              provider=provider_name(next_channel), provider_message_id=None,
              by_provider=True)
    work.index(attempt_id, due)


def cancel_later_hops(session: Session, attempt: Attempt) -> None:
    """An earlier hop was delivered after all: a later hop's attempt that has not left yet
    (``pending``) is cancelled, never sent. One already ``sending`` or ``submitted`` may have
    reached its provider; it stays, and this report is recorded as a late one."""
    source = AttemptStatus.PENDING
    later = session.scalars(select(Attempt.id).where(
        Attempt.message_id == attempt.message_id, Attempt.hop > attempt.hop,
        Attempt.status == source)).all()
    transition = apply_attempt(source, "cancel")
    for later_id in later:
        if cas(session, Attempt, later_id, [source], status=transition.status,
               not_before=None, deadline_at=None, error_reason="earlier_hop_delivered"):
            add_event(session, attempt.message_id, "cancelled", later_id,
                      reason="earlier_hop_delivered", delivered_attempt=attempt.id)
