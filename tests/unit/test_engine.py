"""The engine's decisions when a provider cannot be used (worker/engine.py): an open circuit
holds a hop with its deadline running, so the route still moves on; an account-wide refusal
opens the circuit instead of failing the message; "claimed" is not "may have reached the
provider": an error of ours before the request leaves returns the attempt to ``pending``
with a retry, instead of leaving it ``sending`` until its deadline (24 h by default). No
Redis, worker or HTTP: the provider, the circuit and the publisher are replaced, and
deadlines fire by calling the engine."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from shared import tasknames, uow
from shared.db import session_scope
from shared.messages import create_message, new_message_id
from shared.models import Attempt, Callback, Event, Message
from shared.providers.base import (
    AccountRefusal,
    AmbiguousError,
    OutboundMessage,
    SendContext,
    SendResult,
)
from shared.schemas import SendRequest
from shared.uow import FollowUps, unit_of_work
from tests.unit.conftest import queued_message
from worker import breaker, engine, expiry, reports


class FakeProvider:
    """Records the calls that left; ``fail`` makes the call raise."""

    uses_conversations = False

    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[OutboundMessage] = []
        self.fail = fail

    def recipient(self, request: SendRequest, channel: str) -> None:
        return None

    def outbound(self, request: SendRequest, context: SendContext) -> OutboundMessage:
        return OutboundMessage(attempt_id=context.attempt_id, channel=context.channel,
                               phones=("32470123456",), text=request.text)

    def summarize(self, outbound: OutboundMessage) -> dict[str, Any]:
        return {"text": outbound.text}

    def send(self, outbound: OutboundMessage) -> SendResult:
        self.sent.append(outbound)
        if self.fail is not None:
            raise self.fail
        return SendResult(provider_message_ids={"32470123456": "p-1"})


@pytest.fixture()
def recorded(temp_db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FollowUps]]:
    monkeypatch.setattr(engine, "_wait_for_slot", lambda batch: None)
    monkeypatch.setattr(breaker, "admit", lambda provider: None)  # closed unless a test opens it
    monkeypatch.setattr(breaker, "record", lambda provider, ok: None)
    seen: list[FollowUps] = []
    previous = uow.set_publisher(seen.append)
    yield seen
    uow.set_publisher(previous)


def _message(route: list[str]) -> tuple[str, str]:
    to = {"phone": "+32470123456", "email": "ann@example.com"}
    request = SendRequest.model_validate({"to": to, "route": route, "text": "Hi",
                                          "allow_dismiss": "rogerthat" in route})
    message_id = new_message_id(None)
    with unit_of_work() as work:
        create_message(work.session, message_id, request)
    attempt_id = engine.dispatch(message_id)
    assert attempt_id is not None
    return message_id, attempt_id


def _row(model: type, row_id: str) -> Any:
    with unit_of_work() as work:
        row = work.session.get(model, row_id)
        work.session.expunge(row)
        return row


def _attempts(message_id: str) -> list[tuple[str, str]]:
    with unit_of_work() as work:
        return [(a.channel, a.status) for a in work.session.scalars(
            select(Attempt).where(Attempt.message_id == message_id).order_by(Attempt.hop))]


def _circuit_open(monkeypatch: pytest.MonkeyPatch, provider: FakeProvider) -> None:
    monkeypatch.setattr(breaker, "admit", lambda name: 2.0)
    monkeypatch.setattr(engine, "get_provider", lambda name: provider)


def test_a_held_hop_keeps_its_deadline_and_falls_back_when_it_passes(
        recorded: list[FollowUps], monkeypatch: pytest.MonkeyPatch) -> None:
    """``["rogerthat", "sms"]`` with the messenger down: SMS once the hop's window is over."""
    provider = FakeProvider()
    _circuit_open(monkeypatch, provider)
    message_id, first = _message(["rogerthat", "sms"])
    with pytest.raises(engine.RetryLater):
        engine.send_attempt(first)
    held = _row(Attempt, first)
    assert held.status == "pending" and held.retries == 0 and provider.sent == []
    assert held.deadline_at is not None and held.not_before is not None
    assert (first, held.deadline_at) in [i for f in recorded for i in f.index]

    with pytest.raises(engine.RetryLater):  # held again: the same deadline, not a new one
        engine.send_attempt(first)
    assert _row(Attempt, first).deadline_at == held.deadline_at

    assert expiry.expire_attempt(first, held.deadline_at + timedelta(seconds=1))
    assert _attempts(message_id) == [("rogerthat", "expired"), ("sms", "pending")]
    sms = [t.args[0] for f in recorded for t in f.tasks if t.name == tasknames.SEND_ATTEMPT]
    assert len(sms) == 1


def test_a_last_hop_held_past_its_deadline_ends_the_message_expired(
        recorded: list[FollowUps], monkeypatch: pytest.MonkeyPatch) -> None:
    _circuit_open(monkeypatch, FakeProvider())
    message_id, attempt_id = _message(["sms"])
    with pytest.raises(engine.RetryLater):
        engine.send_attempt(attempt_id)
    due = _row(Attempt, attempt_id).deadline_at
    assert not expiry.expire_attempt(attempt_id, due - timedelta(seconds=1))  # not yet
    assert _row(Attempt, attempt_id).status == "pending"
    expiry.expire_attempt(attempt_id, due + timedelta(seconds=1))
    assert _row(Message, message_id).status == "expired"


def test_a_hop_that_goes_once_the_circuit_closes_keeps_the_running_deadline(
        recorded: list[FollowUps], monkeypatch: pytest.MonkeyPatch) -> None:
    provider = FakeProvider()
    _circuit_open(monkeypatch, provider)
    _, attempt_id = _message(["sms"])
    with pytest.raises(engine.RetryLater):
        engine.send_attempt(attempt_id)
    due = _row(Attempt, attempt_id).deadline_at
    monkeypatch.setattr(breaker, "admit", lambda name: None)  # the probe succeeded
    engine.send_attempt(attempt_id)
    assert len(provider.sent) == 1 and _row(Attempt, attempt_id).status == "submitted"
    sending_deadlines = [d for f in recorded for a, d in f.index if a == attempt_id]
    assert due in sending_deadlines  # claimed with the hold's deadline, not a fresh one


def test_an_account_refusal_opens_the_circuit_and_does_not_fail_the_message(
        recorded: list[FollowUps], monkeypatch: pytest.MonkeyPatch) -> None:
    provider = FakeProvider(fail=AccountRefusal("balance_exhausted", "-5 no balance", "-5"))
    monkeypatch.setattr(engine, "get_provider", lambda name: provider)
    monkeypatch.setattr(breaker, "admit", lambda name: None)
    tripped: list[tuple[str, str]] = []
    monkeypatch.setattr(breaker, "trip",
                        lambda name, reason, detail="": tripped.append((name, reason)) or 30.0)
    message_id, attempt_id = _message(["viber", "sms"])
    with pytest.raises(engine.RetryLater) as later:
        engine.send_attempt(attempt_id)
    assert later.value.countdown >= 30
    assert tripped == [("messaggio", "balance_exhausted")]
    attempt = _row(Attempt, attempt_id)
    assert (attempt.status, attempt.retries, attempt.error_reason) == (
        "pending", 0, "balance_exhausted")
    assert attempt.deadline_at is not None  # the hop's window keeps running
    assert _attempts(message_id) == [("viber", "pending")]
    with unit_of_work() as work:
        types = work.session.scalars(select(Event.type).where(
            Event.message_id == message_id)).all()
    assert "held" in types and "attempt_failed" not in types


class ReportOvertakes(FakeProvider):
    """The provider delivers (and reports) while our call waits, then the call times out."""

    def send(self, outbound: OutboundMessage) -> SendResult:
        self.sent.append(outbound)
        with unit_of_work() as work:
            attempt = work.session.get(Attempt, outbound.attempt_id)
            attempt.status = "delivered"
        raise AmbiguousError("timeout_after_send", "read timed out")


def test_an_ambiguous_answer_overtaken_by_its_report_keeps_the_report_and_says_why(
        recorded: list[FollowUps], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "get_provider", lambda name: ReportOvertakes())
    monkeypatch.setattr(breaker, "admit", lambda name: None)
    _, attempt_id = _message(["sms"])
    engine.send_attempt(attempt_id)
    attempt = _row(Attempt, attempt_id)
    assert (attempt.status, attempt.error_reason) == ("delivered", "timeout_after_send")


class ReportBeforeAnswer(FakeProvider):
    """The gateway reports the message (matched by our attempt id: we do not know its
    ``msg_id`` yet) before it answers the send: the report is handled while the attempt is
    still ``sending``, then the answer comes."""

    def send(self, outbound: OutboundMessage) -> SendResult:
        self.sent.append(outbound)
        with unit_of_work() as work:
            callback = Callback(provider="messaggio", method="POST", params={
                "msg_id": "p-1", "p_transaction_id": outbound.attempt_id,
                "type": "delivery", "status": "delivered"})
            work.session.add(callback)
            work.session.flush()
            callback_id = callback.id
        assert _row(Attempt, outbound.attempt_id).status == "sending"
        reports.handle_callback(callback_id)
        return SendResult(provider_message_ids={"32470123456": "p-1"}, detail="OK")


def test_a_report_before_the_answer_is_applied_and_the_answer_still_recorded(
        recorded: list[FollowUps], monkeypatch: pytest.MonkeyPatch) -> None:
    provider = ReportBeforeAnswer()
    monkeypatch.setattr(engine, "get_provider", lambda name: provider)
    message_id, attempt_id = _message(["viber", "sms"])
    engine.send_attempt(attempt_id)
    attempt = _row(Attempt, attempt_id)
    assert len(provider.sent) == 1
    assert (attempt.status, attempt.provider_message_id) == ("delivered", "p-1")
    assert attempt.deadline_at is None  # delivered: no fallback will fire
    assert (attempt.response_code, attempt.response_text) == ("0", "OK")
    assert attempt.submitted_at is not None and attempt.delivered_at is not None
    assert _row(Message, message_id).status == "delivered"
    assert _attempts(message_id) == [("viber", "delivered")]
    with unit_of_work() as work:
        events = work.session.scalars(select(Event).where(
            Event.message_id == message_id).order_by(Event.seq)).all()
        report = next(e for e in events if e.type == "report")
        submitted = next(e for e in events if e.type == "submitted")
        assert report.payload["applied"] is True and report.seq < submitted.seq
    sends = [t for f in recorded for t in f.tasks if t.name == tasknames.SEND_ATTEMPT]
    assert sends == []  # no fallback


# --- claimed is not sent ------------------------------------------------------------------

def _pending_sms() -> str:
    return queued_message(to={"phone": "+32470123456"}, route=["sms"], text="Hi")[1]


def _attempt(attempt_id: str) -> Attempt:
    with unit_of_work() as work:
        attempt = work.session.get(Attempt, attempt_id)
        assert attempt is not None
        return attempt


def test_redis_failing_before_the_call_returns_the_attempt_to_pending(
        recorded: list[FollowUps], monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = FakeProvider()
    monkeypatch.setattr(engine, "get_provider", lambda name: gateway)
    attempt_id = _pending_sms()

    def redis_down(followups: FollowUps) -> None:
        raise redis.ConnectionError("Connection refused")
    uow.set_publisher(redis_down)
    with pytest.raises(engine.RetryLater):
        engine.send_attempt(attempt_id)
    attempt = _attempt(attempt_id)
    assert gateway.sent == []
    assert (attempt.status, attempt.retries, attempt.error_reason) == ("pending", 1, "not_sent")
    assert attempt.deadline_at is None and attempt.not_before is not None

    uow.set_publisher(recorded.append)  # Redis is back: the retry sends it, once
    engine.send_attempt(attempt_id)
    assert len(gateway.sent) == 1
    assert _attempt(attempt_id).status == "submitted"


def test_an_error_once_the_request_may_have_left_waits_for_report_or_deadline(
        recorded: list[FollowUps], monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = FakeProvider(fail=RuntimeError("the adapter broke mid-call"))
    monkeypatch.setattr(engine, "get_provider", lambda name: gateway)
    attempt_id = _pending_sms()
    with pytest.raises(RuntimeError):
        engine.send_attempt(attempt_id)
    attempt = _attempt(attempt_id)
    assert len(gateway.sent) == 1
    assert attempt.status == "sending" and attempt.deadline_at is not None  # never resent


def test_a_broker_send_reusing_a_key_with_another_body_keeps_the_first_and_says_so(
    recorded: list[FollowUps], caplog: pytest.LogCaptureFixture,
) -> None:
    first = {"to": {"phone": "+32470123456"}, "route": ["sms"], "text": "Hi",
             "idempotency_key": "welcome-7"}
    message_id = new_message_id("welcome-7")
    engine.accept(message_id, SendRequest.model_validate(first).model_dump(mode="json"))
    with caplog.at_level("WARNING", logger="shared.messages"):
        engine.accept(message_id, {**first, "text": "Something else"})
    assert _row(Message, message_id).request["text"] == "Hi"
    with session_scope() as session:
        types = session.scalars(select(Event.type).where(Event.message_id == message_id)
                                .order_by(Event.seq)).all()
    assert types == ["queued", "idempotency_conflict"]
    assert any("'welcome-7'" in r.getMessage() for r in caplog.records
               if r.levelname == "WARNING")


def test_a_bulk_batch_sends_only_the_phones_it_claimed(recorded: list[FollowUps]) -> None:
    """Another send (the recovery sweep's, one attempt at a time) claimed one of the batch's
    attempts between loading and claiming: the gateway request leaves without that phone, or
    the person would get the message twice."""
    from worker.outcomes import Batch, Item

    phones = ("32470123401", "32470123402")
    items = []
    for phone in phones:
        message_id, attempt_id = queued_message(to={"phone": "+" + phone}, route=["viber"],
                                                text="Sale")
        items.append(Item(attempt_id, message_id, 0, phone))
    with unit_of_work() as work:
        work.session.get(Attempt, items[0].attempt_id).status = "sending"  # taken meanwhile
    request = SendRequest.model_validate({"to": {"phone": "+" + phones[0]}, "route": ["viber"],
                                          "text": "Sale"})
    gateway = FakeProvider()
    engine.send_batch(Batch("viber", "messaggio", 0, "default", request, tuple(items)),
                      gateway, bulk=True)
    assert [m.phones for m in gateway.sent] == [(phones[1],)]
