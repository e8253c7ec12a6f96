"""A late Viber ``delivered`` after its deadline created the SMS attempt (worker/engine.py):
an SMS that has not left is cancelled, one that may have left stays. No Redis, worker or HTTP:
the publisher is a list and the deadline is fired by calling the engine with a clock."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from shared import tasknames
from shared.models import Attempt, Callback, Event, Message, utcnow
from shared.uow import FollowUps, Task, unit_of_work
from tests.unit.conftest import queued_message
from worker import engine, expiry, reports


def _viber_past_its_deadline() -> tuple[str, str, str]:
    """(message, viber attempt, sms attempt): the Viber hop submitted, its deadline fired."""
    message_id, viber = queued_message(to={"phone": "+32470123456"}, route=["viber", "sms"],
                                       text="Hi")
    with unit_of_work() as work:
        attempt = work.session.get(Attempt, viber)
        assert attempt is not None
        attempt.status, attempt.deadline_at = "submitted", utcnow() - timedelta(seconds=1)
    assert expiry.expire_attempt(viber, utcnow())
    with unit_of_work() as work:
        sms = work.session.scalars(select(Attempt.id).where(
            Attempt.message_id == message_id, Attempt.hop == 1)).one()
    return message_id, viber, sms


def _report_delivered(attempt_id: str) -> None:
    with unit_of_work() as work:
        callback = Callback(provider="messaggio", method="POST", params={
            "p_transaction_id": attempt_id, "type": "delivery", "status": "delivered"})
        work.session.add(callback)
        work.session.flush()
        callback_id = callback.id
    reports.handle_callback(callback_id)


def _status(model: type, row_id: str) -> str:
    with unit_of_work() as work:
        return work.session.get(model, row_id).status


def test_a_pending_sms_is_cancelled_when_viber_turns_out_delivered(
        published: list[FollowUps]) -> None:
    message_id, viber, sms = _viber_past_its_deadline()
    assert Task(tasknames.SEND_ATTEMPT, (sms,)) in [t for f in published for t in f.tasks]
    _report_delivered(viber)
    assert _status(Attempt, sms) == "cancelled"
    assert _status(Message, message_id) == "delivered"
    with unit_of_work() as work:
        kinds = work.session.scalars(select(Event.type).where(
            Event.message_id == message_id, Event.attempt_id == sms)).all()
    assert "cancelled" in kinds
    engine.send_attempt(sms)  # the already published send task: a no-op, no provider call
    assert _status(Attempt, sms) == "cancelled"


def test_an_sms_that_may_have_left_stays(published: list[FollowUps]) -> None:
    message_id, viber, sms = _viber_past_its_deadline()
    with unit_of_work() as work:
        work.session.get(Attempt, sms).status = "submitted"
    _report_delivered(viber)
    assert _status(Attempt, sms) == "submitted"
    assert _status(Attempt, viber) == "delivered"  # the late report is recorded
