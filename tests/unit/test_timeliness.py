"""Time-aware delivery in the send path (worker/timeliness.py through worker/engine.py): no hop
starts past ``valid_until``, none inside quiet hours, critical messages skip quiet hours, and
hop deadlines end by ``valid_until``. The provider, the circuit and the publisher are
replaced; quiet hours are set around the real clock in UTC with seconds, so nothing waits."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from shared import tasknames, uow
from shared.db import session_scope
from shared.messages import create_message, new_message_id
from shared.models import Attempt, Event, Message, utcnow
from shared.providers.base import OutboundMessage, SendContext, SendResult
from shared.schemas import SendRequest
from shared.uow import FollowUps
from worker import breaker, engine, expiry, timeliness

PHONE = "+32470123456"


class RecordingProvider:
    """Records each outbound message and the request it was built from."""

    uses_conversations = False

    def __init__(self) -> None:
        self.requests: list[SendRequest] = []
        self.sent: list[OutboundMessage] = []

    def recipient(self, request: SendRequest, channel: str) -> None:
        return None

    def outbound(self, request: SendRequest, context: SendContext) -> OutboundMessage:
        self.requests.append(request)
        return OutboundMessage(attempt_id=context.attempt_id, channel=context.channel,
                               phones=(PHONE.lstrip("+"),), text=request.text)

    def summarize(self, outbound: OutboundMessage) -> dict[str, Any]:
        return {"text": outbound.text}

    def send(self, outbound: OutboundMessage) -> SendResult:
        self.sent.append(outbound)
        return SendResult(provider_message_ids={PHONE.lstrip("+"): "p-1"})


@pytest.fixture()
def provider(temp_db: Path, monkeypatch: pytest.MonkeyPatch) -> RecordingProvider:
    fake = RecordingProvider()
    monkeypatch.setattr(engine, "_wait_for_slot", lambda batch: None)
    monkeypatch.setattr(breaker, "admit", lambda name: None)
    monkeypatch.setattr(breaker, "record", lambda name, ok: None)
    monkeypatch.setattr(engine, "get_provider", lambda name: fake)
    return fake


@pytest.fixture()
def recorded(provider: RecordingProvider) -> Iterator[list[FollowUps]]:
    seen: list[FollowUps] = []
    previous = uow.set_publisher(seen.append)
    yield seen
    uow.set_publisher(previous)


def _iso(when: datetime) -> str:
    return when.replace(tzinfo=UTC).isoformat()


def _message(**fields: Any) -> tuple[str, str]:
    request = SendRequest.model_validate({"to": {"phone": PHONE}, "route": ["viber", "sms"],
                                          "text": "Hi", **fields})
    message_id = new_message_id(None)
    with session_scope() as session:
        create_message(session, message_id, request)
    attempt_id = engine.dispatch(message_id)
    assert attempt_id is not None
    return message_id, attempt_id


def _row(model: type, row_id: str) -> Any:
    with session_scope() as session:
        row = session.get(model, row_id)
        session.expunge(row)
        return row


def _events(message_id: str) -> list[tuple[str, dict]]:
    with session_scope() as session:
        return [(e.type, e.payload) for e in session.scalars(
            select(Event).where(Event.message_id == message_id).order_by(Event.seq))]


def _quiet_now() -> dict[str, str]:
    """Quiet hours holding the real clock now, ending in 90 s (UTC, to the second)."""
    now = utcnow()
    return {"start": (now - timedelta(minutes=5)).strftime("%H:%M:%S"),
            "end": (now + timedelta(seconds=90)).strftime("%H:%M:%S"), "timezone": "UTC"}


def test_no_hop_starts_past_valid_until_and_no_fallback_follows(
        recorded: list[FollowUps], provider: RecordingProvider) -> None:
    message_id, attempt_id = _message(valid_until=_iso(utcnow() - timedelta(seconds=1)))
    engine.send_attempt(attempt_id)
    assert provider.sent == []
    attempt, message = _row(Attempt, attempt_id), _row(Message, message_id)
    assert (attempt.status, attempt.error_reason) == ("expired", "valid_until")
    assert (message.status, message.reason) == ("expired", "valid_until")
    assert not [t for f in recorded for t in f.tasks if t.name == tasknames.SEND_ATTEMPT]
    assert ("attempt_expired", {"channel": "viber", "reason": "valid_until"}) \
        in _events(message_id)


def test_inside_quiet_hours_the_hop_waits_for_their_end(
        recorded: list[FollowUps], provider: RecordingProvider) -> None:
    valid_until = utcnow() + timedelta(hours=2)
    message_id, attempt_id = _message(quiet_hours=_quiet_now(), valid_until=_iso(valid_until))
    engine.send_attempt(attempt_id)
    assert provider.sent == []
    attempt = _row(Attempt, attempt_id)
    assert attempt.status == "pending" and attempt.not_before is not None
    assert timedelta(seconds=80) < attempt.not_before - utcnow() <= timedelta(seconds=90)
    assert attempt.deadline_at == valid_until.replace(microsecond=valid_until.microsecond)
    held = [p for t, p in _events(message_id) if t == "held"]
    assert held and held[0]["reason"] == "quiet_hours" and held[0]["timezone"] == "UTC"
    assert held[0]["until"] == attempt.not_before.isoformat() + "Z"
    indexed = dict(i for f in recorded for i in f.index)
    assert indexed[timeliness.WAKE_PREFIX + attempt_id] == attempt.not_before
    assert indexed[attempt_id] == attempt.deadline_at  # the validity keeps running

    engine.send_attempt(attempt_id)  # a duplicate task while still quiet: held again
    assert provider.sent == []


def test_a_critical_message_ignores_quiet_hours(provider: RecordingProvider,
                                                recorded: list[FollowUps]) -> None:
    message_id, attempt_id = _message(quiet_hours=_quiet_now(), priority="critical")
    assert _row(Message, message_id).quiet_hours is None  # not even kept
    engine.send_attempt(attempt_id)
    assert len(provider.sent) == 1 and _row(Attempt, attempt_id).status == "submitted"


def test_the_hop_deadline_and_the_providers_window_end_by_valid_until(
        recorded: list[FollowUps], provider: RecordingProvider) -> None:
    valid_until = utcnow() + timedelta(seconds=300)
    message_id, attempt_id = _message(valid_until=_iso(valid_until), dlr_timeout=3600)
    engine.send_attempt(attempt_id)
    attempt = _row(Attempt, attempt_id)
    assert attempt.status == "submitted"
    # The validity left (~299 s) becomes the hop's deadline, in the gateway's whole minutes
    # (shared.windows): ours and the gateway's Viber window both end at 240 s.
    assert 290 <= provider.requests[0].deadlines["viber"] <= 300
    assert valid_until - timedelta(seconds=61) <= attempt.deadline_at <= valid_until


def test_a_fallback_after_valid_until_is_not_sent(recorded: list[FollowUps],
                                                  provider: RecordingProvider) -> None:
    message_id, attempt_id = _message(valid_until=_iso(utcnow() + timedelta(seconds=300)))
    engine.send_attempt(attempt_id)
    with session_scope() as session:  # time passes: the validity is over when the hop ends
        session.execute(update(Message).where(Message.id == message_id)
                        .values(valid_until=utcnow() - timedelta(seconds=1)))
    published = expiry.expire_attempt(attempt_id, utcnow() + timedelta(seconds=400))
    assert not published  # no fallback task
    assert _row(Attempt, attempt_id).status == "expired"
    message = _row(Message, message_id)
    assert (message.status, message.reason) == ("expired", "valid_until")
    with session_scope() as session:
        hops = session.scalars(select(Attempt.channel).where(
            Attempt.message_id == message_id)).all()
    assert hops == ["viber"]  # no SMS attempt was created


def test_a_fallback_falling_due_inside_quiet_hours_sends_its_sms_when_they_end(
        recorded: list[FollowUps], provider: RecordingProvider) -> None:
    """Viber went out in the evening; its deadline passes at night: the SMS waits for morning."""
    message_id, viber = _message(dlr_timeout=60)
    engine.send_attempt(viber)
    assert len(provider.sent) == 1
    with session_scope() as session:  # night fell meanwhile (the message's resolved hours)
        session.execute(update(Message).where(Message.id == message_id)
                        .values(quiet_hours=_quiet_now()))
    expiry.expire_attempt(viber, utcnow() + timedelta(seconds=61))
    sms = [t.args[0] for f in recorded for t in f.tasks if t.name == tasknames.SEND_ATTEMPT]
    assert len(sms) == 1
    engine.send_attempt(sms[0])
    assert len(provider.sent) == 1  # no SMS at night
    waiting = _row(Attempt, sms[0])
    assert (waiting.channel, waiting.status) == ("sms", "pending")
    assert waiting.not_before is not None and waiting.not_before > utcnow()
    assert (timeliness.WAKE_PREFIX + sms[0], waiting.not_before) in [
        i for f in recorded for i in f.index]
