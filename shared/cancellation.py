"""Cancelling messages a producer no longer wants sent: one message, or a campaign's.

A message can be cancelled while nothing of it has been sent on any hop: it is ``scheduled``
or ``queued`` and no attempt is ``sending`` (claimed: the request may be leaving) or was ever
accepted by a provider (``submitted_at``). A hop the provider *refused* sent nothing to
anyone, so it does not stand in the way. Cancelling moves every ``pending`` attempt to
``cancelled`` first and the message second, both guarded by "nothing sent", in one
transaction: a worker's claim (``pending → sending``, committed before the provider call) and
a cancel exclude each other, whichever commits first wins.

Used by the HTTP API (``DELETE /v1/messages/<id>``, ``DELETE /v1/campaigns/<id>``), the CLI
and ``shared.client.cancel``. The message's public ``status: cancelled`` event reaches the
producer's webhook like every status.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from shared.lifecycle import MESSAGE_CANCELLABLE, AttemptStatus, MessageStatus
from shared.messages import add_event
from shared.models import Attempt, Message, utcnow

REASON = "cancelled_by_producer"


class AlreadySent(Exception):
    """The message has been sent on a hop already: too late to cancel (HTTP 409)."""

    def __init__(self, message_id: str, status: str, hop: int | None = None,
                 channel: str | None = None, attempt_status: str | None = None) -> None:
        where = (f"hop {hop} ({channel}) is {attempt_status}" if hop is not None
                 else f"it is {status}")
        super().__init__(f"message {message_id} was already sent: {where}")
        self.message_id, self.status, self.hop, self.channel = message_id, status, hop, channel
        self.attempt_status = attempt_status

    def body(self) -> dict[str, object]:
        """The JSON answer, naming the hop that was sent."""
        return {"error": "already_sent", "message": str(self), "status": self.status,
                "hop": ({"hop": self.hop, "channel": self.channel,
                         "status": self.attempt_status} if self.hop is not None else None)}


@dataclass(frozen=True)
class Cancelled:
    """What a cancel did: the messages it cancelled, and how many go on (sent already, or
    ended before)."""

    cancelled: list[str]
    already_sent: int = 0


def _sent() -> ColumnElement[bool]:
    """An attempt that may have reached its provider."""
    return or_(Attempt.status == AttemptStatus.SENDING, Attempt.submitted_at.is_not(None))


def _unsent_messages(scope: ColumnElement[bool]) -> ColumnElement[bool]:
    """Messages in ``scope`` that are still cancellable: nothing sent on any hop."""
    return and_(scope, Message.status.in_(sorted(MESSAGE_CANCELLABLE)),
                ~exists().where(Attempt.message_id == Message.id, _sent()))


def _cancel(session: Session, scope: ColumnElement[bool]) -> list[str]:
    """Set-based, attempts first (so no claim can start after), then the messages."""
    unsent = select(Message.id).where(_unsent_messages(scope)).scalar_subquery()
    session.execute(
        update(Attempt).where(Attempt.message_id.in_(unsent),
                              Attempt.status == AttemptStatus.PENDING)
        .values(status=AttemptStatus.CANCELLED, error_reason=REASON, not_before=None,
                deadline_at=None, updated_at=utcnow())
        .execution_options(synchronize_session=False))
    ids = list(session.scalars(
        update(Message).where(_unsent_messages(scope))
        .values(status=MessageStatus.CANCELLED, reason=REASON, updated_at=utcnow())
        .returning(Message.id).execution_options(synchronize_session=False)).all())
    for message_id in ids:
        add_event(session, message_id, "status", status=MessageStatus.CANCELLED, reason=REASON)
    return ids


def cancel_message(session: Session, message: Message) -> Cancelled:
    """Cancel one message (already cancelled: nothing to do); raises ``AlreadySent`` naming
    the hop that was sent. The caller commits."""
    if message.status == MessageStatus.CANCELLED:
        return Cancelled([])
    ids = _cancel(session, Message.id == message.id)
    if ids:
        return Cancelled(ids)
    sent = session.execute(select(Attempt.hop, Attempt.channel, Attempt.status).where(
        Attempt.message_id == message.id, _sent()).order_by(Attempt.hop)).first()
    status = session.execute(select(Message.status).where(Message.id == message.id)).scalar()
    if sent is None:
        raise AlreadySent(message.id, str(status))
    raise AlreadySent(message.id, str(status), sent.hop, sent.channel, sent.status)


def cancel_campaign(session: Session, campaign_id: str) -> Cancelled:
    """Cancel each of the campaign's messages not yet sent; the others go on. The caller
    commits."""
    ids = _cancel(session, Message.campaign_id == campaign_id)
    going_on = session.scalar(select(func.count()).select_from(Message).where(
        Message.campaign_id == campaign_id, Message.status != MessageStatus.CANCELLED))
    return Cancelled(ids, int(going_on or 0))
