"""Cancelling (shared/cancellation.py): a message not yet sent on any hop is cancelled with
its pending attempts and a public status event; one sent on a hop is refused naming that hop;
a campaign cancels what it can. Fresh SQLite, no worker."""

from __future__ import annotations

from datetime import UTC, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from shared import cancellation
from shared.db import session_scope
from shared.messages import create_message, new_message_id
from shared.models import Attempt, Event, Message, utcnow
from shared.schemas import SendRequest
from tests.unit.conftest import queued_message

PHONE = "+32470123456"


def _scheduled(temp_db: Path) -> str:
    request = SendRequest.model_validate({
        "to": {"phone": PHONE}, "route": ["sms"], "text": "Later",
        "send_at": (utcnow() + timedelta(hours=1)).replace(tzinfo=UTC).isoformat()})
    message_id = new_message_id(None)
    with session_scope() as session:
        create_message(session, message_id, request)
    return message_id


def _cancel(message_id: str) -> cancellation.Cancelled:
    with session_scope() as session:
        done = cancellation.cancel_message(session, session.get_one(Message, message_id))
        session.commit()
        return done


def _status(message_id: str) -> tuple[str, str | None]:
    with session_scope() as session:
        message = session.get_one(Message, message_id)
        return message.status, message.reason


def test_a_scheduled_message_is_cancelled_with_a_public_status_event(temp_db: Path) -> None:
    message_id = _scheduled(temp_db)
    assert _status(message_id) == ("scheduled", None)
    assert _cancel(message_id).cancelled == [message_id]
    assert _status(message_id) == ("cancelled", cancellation.REASON)
    with session_scope() as session:
        last = session.scalars(select(Event).where(Event.message_id == message_id)
                               .order_by(Event.seq.desc())).first()
    assert (last.type, last.payload["status"]) == ("status", "cancelled")
    assert _cancel(message_id).cancelled == []  # again: nothing more to do, no error


def test_a_queued_message_cancels_its_pending_attempt(published: list) -> None:
    message_id, attempt_id = queued_message(to={"phone": PHONE}, route=["viber", "sms"],
                                            text="Hi")
    _cancel(message_id)
    with session_scope() as session:
        attempt = session.get_one(Attempt, attempt_id)
        assert (attempt.status, attempt.error_reason) == ("cancelled", cancellation.REASON)


@pytest.mark.parametrize("sent", [{"status": "sending"},
                                  {"status": "expired", "submitted_at": utcnow()}],
                         ids=["claimed", "submitted-then-expired"])
def test_a_message_sent_on_a_hop_is_refused_naming_it(published: list, sent: dict) -> None:
    message_id, attempt_id = queued_message(to={"phone": PHONE}, route=["viber", "sms"],
                                            text="Hi")
    with session_scope() as session:
        session.execute(update(Attempt).where(Attempt.id == attempt_id).values(**sent))
    with pytest.raises(cancellation.AlreadySent) as info:
        _cancel(message_id)
    assert info.value.body()["hop"] == {"hop": 0, "channel": "viber", "status": sent["status"]}
    assert _status(message_id)[0] == "queued"


def test_a_refused_hop_sent_nothing_so_the_message_can_still_be_cancelled(
        published: list) -> None:
    message_id, attempt_id = queued_message(to={"phone": PHONE}, route=["viber", "sms"],
                                            text="Hi")
    with session_scope() as session:
        session.execute(update(Attempt).where(Attempt.id == attempt_id)
                        .values(status="failed"))
    assert _cancel(message_id).cancelled == [message_id]


def test_a_campaign_cancels_each_message_not_yet_sent(published: list) -> None:
    ids = [queued_message(to={"phone": f"+3247012345{n}"}, route=["sms"], text="Sale")
           for n in range(3)]
    with session_scope() as session:
        session.execute(update(Message).where(Message.id.in_([m for m, _ in ids]))
                        .values(campaign_id="camp-1"))
        session.execute(update(Attempt).where(Attempt.id == ids[0][1])
                        .values(status="submitted", submitted_at=utcnow()))
        done = cancellation.cancel_campaign(session, "camp-1")
        session.commit()
    assert sorted(done.cancelled) == sorted(m for m, _ in ids[1:])
    assert done.already_sent == 1
    assert [_status(m)[0] for m, _ in ids] == ["queued", "cancelled", "cancelled"]
