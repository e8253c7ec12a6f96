"""Route progression (worker/route.py) when the provider carries the route on itself: with
``SWITCHBOARD_MESSAGGIO_GATEWAY_FALLBACK=on`` the gateway's account sends the SMS after an
undelivered or expired Viber message, so the route records that hop as the gateway's
(``submitted``, nothing sent by us) and the gateway's SMS reports, which come under the Viber
message's ids, settle that hop (worker/reports.py). No Redis, worker or HTTP: the publisher
is a list and deadlines fire by calling the engine with a clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from shared import tasknames
from shared.models import Attempt, Callback, Event, Message, utcnow
from shared.providers import get_provider
from shared.settings import get_settings
from shared.uow import FollowUps, unit_of_work
from tests.unit.conftest import queued_message
from worker import engine, expiry, reports

PHONE = "+32470120001"


@pytest.fixture(params=["on"])
def mode(request: pytest.FixtureRequest, published: list[FollowUps],
         monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The gateway-fallback mode, read by the adapter the registry builds from settings."""
    monkeypatch.setenv("SWITCHBOARD_MESSAGGIO_GATEWAY_FALLBACK", request.param)
    get_settings.cache_clear()
    get_provider.cache_clear()
    yield request.param
    get_settings.cache_clear()
    get_provider.cache_clear()


def _viber_submitted(msg_id: str | None = "m-1", **extra: Any) -> tuple[str, str]:
    """(message, viber attempt): sent to the gateway, which accepted it as ``msg_id``."""
    message_id, viber = queued_message(to={"phone": PHONE}, route=["viber", "sms"],
                                       text="Your order is ready",
                                       sms_text="Order ready (SMS)", **extra)
    with unit_of_work() as work:
        attempt = work.session.get(Attempt, viber)
        attempt.status, attempt.provider_message_id = "submitted", msg_id
        attempt.submitted_at = utcnow()
        attempt.deadline_at = utcnow() + timedelta(seconds=60)
        work.session.get(Message, message_id).status = "submitted"
    return message_id, viber


def _report(**params: str) -> int:
    """Store a gateway report and handle it; returns the callback id."""
    with unit_of_work() as work:
        callback = Callback(provider="messaggio", method="POST", params=params)
        work.session.add(callback)
        work.session.flush()
        callback_id = callback.id
    reports.handle_callback(callback_id)
    return callback_id


def _attempts(message_id: str) -> list[Attempt]:
    with unit_of_work() as work:
        rows = work.session.scalars(select(Attempt).where(
            Attempt.message_id == message_id).order_by(Attempt.hop)).all()
        for row in rows:
            work.session.expunge(row)
        return list(rows)


def _events(message_id: str) -> list[Event]:
    with unit_of_work() as work:
        rows = work.session.scalars(select(Event).where(
            Event.message_id == message_id).order_by(Event.seq)).all()
        for row in rows:
            work.session.expunge(row)
        return list(rows)


def _sends(published: list[FollowUps]) -> list[tuple]:
    return [t.args for f in published for t in f.tasks if t.name == tasknames.SEND_ATTEMPT]


UNDELIVERED = {"type": "delivery", "status": "undelivered",
               "status_extended": "VIBER_USER_NOT_FOUND"}


def test_the_gateways_sms_is_recorded_not_sent_and_its_report_settles_that_hop(
        mode: str, published: list[FollowUps]) -> None:
    message_id, viber = _viber_submitted()
    _report(msg_id="m-1", p_transaction_id=viber, **UNDELIVERED)
    viber_row, sms_row = _attempts(message_id)
    assert (viber_row.status, sms_row.channel, sms_row.status) == (
        "undelivered", "sms", "submitted")
    assert _sends(published) == []  # the gateway sends it, we do not
    assert sms_row.request_summary == {
        "sent_by": "gateway", "fallback_of": "m-1", "sending_method": "sms",
        "phone": ["32470120001"], "txt": "Order ready (SMS)"}
    assert sms_row.submitted_at is not None and sms_row.deadline_at is not None
    assert (sms_row.id, sms_row.deadline_at) in [i for f in published for i in f.index]
    events = _events(message_id)
    fallback = next(e for e in events if e.type == "fallback")
    assert fallback.attempt_id == sms_row.id and fallback.payload["by_provider"] is True
    assert [e.payload.get("by_provider") for e in events
            if e.type == "submitted" and e.attempt_id == sms_row.id] == [True]

    _report(msg_id="m-1", p_transaction_id=viber, status="0")  # the gateway's SMS: delivered
    viber_row, sms_row = _attempts(message_id)
    assert (viber_row.status, sms_row.status) == ("undelivered", "delivered")  # not a late Viber
    assert sms_row.provider_message_id == "m-1"
    with unit_of_work() as work:
        assert work.session.get(Message, message_id).status == "delivered"
    engine.send_attempt(sms_row.id)  # a stray send task would be a no-op
    assert _attempts(message_id)[1].status == "delivered"


def test_a_failed_gateway_sms_ends_the_message_and_late_viber_reports_still_find_theirs(
        mode: str, published: list[FollowUps]) -> None:
    message_id, viber = _viber_submitted()
    _report(msg_id="m-1", p_transaction_id=viber, **UNDELIVERED)
    _report(msg_id="m-1", p_transaction_id=viber, status="-1")
    assert [a.status for a in _attempts(message_id)] == ["undelivered", "undelivered"]
    with unit_of_work() as work:
        assert work.session.get(Message, message_id).status == "failed"
    # both attempts now carry m-1; a Viber report still lands on the Viber attempt
    _report(msg_id="m-1", p_transaction_id=viber, type="delivery", status="delivered")
    viber_row, sms_row = _attempts(message_id)
    assert (viber_row.status, sms_row.status) == ("delivered", "undelivered")


def test_the_gateway_carries_the_sms_when_the_viber_deadline_passes(
        mode: str, published: list[FollowUps]) -> None:
    """Our deadline and the gateway's dlr_timeout are the same whole minutes: when ours
    passes, the gateway expires the message and sends its SMS."""
    message_id, viber = _viber_submitted()
    with unit_of_work() as work:
        work.session.get(Attempt, viber).deadline_at = utcnow() - timedelta(seconds=1)
    expiry.expire_attempt(viber, utcnow())
    viber_row, sms_row = _attempts(message_id)
    assert (viber_row.status, sms_row.status) == ("expired", "submitted")
    assert _sends(published) == []
    _report(msg_id="m-1", p_transaction_id=viber, type="delivery", status="undelivered",
            status_extended="VIBER_EXPIRED")  # the gateway's own expiry: nothing more
    assert len(_attempts(message_id)) == 2
    assert _attempts(message_id)[1].status == "submitted"


def test_a_viber_message_the_gateway_never_accepted_falls_back_by_our_own_sms(
        mode: str, published: list[FollowUps]) -> None:
    """No msg_id (an ambiguous answer, a hold behind the circuit): the gateway may not have
    it, so the route sends the SMS itself rather than lose it."""
    message_id, viber = _viber_submitted(msg_id=None)
    with unit_of_work() as work:
        work.session.get(Attempt, viber).deadline_at = utcnow() - timedelta(seconds=1)
    expiry.expire_attempt(viber, utcnow())
    viber_row, sms_row = _attempts(message_id)
    assert (viber_row.status, sms_row.status) == ("expired", "pending")
    assert _sends(published) == [(sms_row.id,)]


def test_the_gateways_sms_report_before_the_viber_one_waits_for_its_hop(
        mode: str, published: list[FollowUps]) -> None:
    """Reports are handled concurrently: the SMS's may come first, before the SMS hop
    exists. It matches nothing yet and is retried, not taken for the Viber message's."""
    message_id, viber = _viber_submitted()
    with unit_of_work() as work:
        callback = Callback(provider="messaggio", method="POST",
                            params={"msg_id": "m-1", "p_transaction_id": viber, "status": "0"})
        work.session.add(callback)
        work.session.flush()
        early = callback.id
    with pytest.raises(reports.RetryLater):
        reports.handle_callback(early)
    assert [a.status for a in _attempts(message_id)] == ["submitted"]
    _report(msg_id="m-1", p_transaction_id=viber, **UNDELIVERED)
    reports.handle_callback(early)  # its retry
    assert [a.status for a in _attempts(message_id)] == ["undelivered", "delivered"]


@pytest.mark.parametrize("mode", ["off"], indirect=True)
def test_off_the_route_sends_the_sms_itself(mode: str, published: list[FollowUps]) -> None:
    """The default: the account's option is kept off and the SMS is ours."""
    message_id, viber = _viber_submitted()
    _report(msg_id="m-1", p_transaction_id=viber, **UNDELIVERED)
    viber_row, sms_row = _attempts(message_id)
    assert (viber_row.status, sms_row.status) == ("undelivered", "pending")
    assert _sends(published) == [(sms_row.id,)]
    fallback = next(e for e in _events(message_id) if e.type == "fallback")
    assert "by_provider" not in fallback.payload
