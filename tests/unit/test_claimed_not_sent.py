""""Claimed" is not "may have reached the provider" (worker/engine.py): an error of ours
before the request leaves returns the attempt to ``pending`` with a retry, instead of leaving
it ``sending`` until its deadline (24 h by default). No Redis, worker or HTTP: the provider,
the circuit and the publisher are replaced."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from shared import uow
from shared.messages import create_message, new_message_id
from shared.models import Attempt
from shared.providers.base import OutboundMessage, SendContext, SendResult
from shared.schemas import SendRequest
from shared.uow import FollowUps, unit_of_work
from worker import breaker, engine


class FakeGateway:
    """Counts the calls that left; ``fail`` makes the call itself raise."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[Any] = []
        self.fail = fail

    uses_conversations = False

    def recipient(self, request: SendRequest, channel: str) -> None:
        return None  # no consent registry entry to check

    def outbound(self, request: SendRequest, context: SendContext) -> OutboundMessage:
        return OutboundMessage(attempt_id=context.attempt_id, channel=context.channel,
                               phones=("32470123456",), text=request.text)

    def summarize(self, outbound: Any) -> dict:
        return {"text": outbound.text}

    def send(self, outbound: Any) -> SendResult:
        self.sent.append(outbound)
        if self.fail is not None:
            raise self.fail
        return SendResult(provider_message_ids={"32470123456": "p-1"})


@pytest.fixture()
def recorded(temp_db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FollowUps]]:
    """No rate limit, a closed circuit, and a publisher that records what it is given."""
    monkeypatch.setenv("SWITCHBOARD_MESSAGGIO_RATE_PER_SECOND", "0")
    monkeypatch.setattr(engine, "_wait_for_slot", lambda batch: None)
    monkeypatch.setattr(breaker, "admit", lambda provider: None)
    monkeypatch.setattr(breaker, "record", lambda provider, ok: None)
    seen: list[FollowUps] = []
    previous = uow.set_publisher(seen.append)
    yield seen
    uow.set_publisher(previous)


def _pending_sms() -> str:
    request = SendRequest.model_validate(
        {"to": {"phone": "+32470123456"}, "route": ["sms"], "text": "Hi"})
    message_id = new_message_id(None)
    with unit_of_work() as work:
        create_message(work.session, message_id, request)
    attempt_id = engine.dispatch(message_id)
    assert attempt_id is not None
    return attempt_id


def _attempt(attempt_id: str) -> Attempt:
    with unit_of_work() as work:
        attempt = work.session.get(Attempt, attempt_id)
        assert attempt is not None
        return attempt


def test_redis_failing_before_the_call_returns_the_attempt_to_pending(
        recorded: list[FollowUps], monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = FakeGateway()
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
    gateway = FakeGateway(fail=RuntimeError("the adapter broke mid-call"))
    monkeypatch.setattr(engine, "get_provider", lambda name: gateway)
    attempt_id = _pending_sms()
    with pytest.raises(RuntimeError):
        engine.send_attempt(attempt_id)
    attempt = _attempt(attempt_id)
    assert len(gateway.sent) == 1
    assert attempt.status == "sending" and attempt.deadline_at is not None  # never resent
