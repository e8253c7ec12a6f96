"""What a provider call meant, recorded for a batch of attempts at once (worker/outcomes.py):
each attempt of the batch gets its own provider id, deadline and fallback, and a batch
recorded twice changes nothing the second time. No Redis, worker or HTTP."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from shared import tasknames
from shared.models import Attempt, Event, Message, utcnow
from shared.providers.base import PermanentError, RetryableError, SendResult
from shared.schemas import SendRequest
from shared.uow import FollowUps, unit_of_work
from worker import engine, outcomes
from tests.unit.conftest import queued_message
from worker.outcomes import Batch, Item

PHONES = ("32470000001", "32470000002", "32470000003")


def _claimed_batch() -> Batch:
    """Three messages on ``["viber", "sms"]``, their Viber attempts claimed (``sending``)."""
    items = []
    for phone in PHONES:
        message_id, attempt_id = queued_message(to={"phone": "+" + phone},
                                                route=["viber", "sms"], text="Hi")
        with unit_of_work() as work:
            work.session.get(Attempt, attempt_id).status = "sending"
        items.append(Item(attempt_id, message_id, 0, phone))
    request = SendRequest.model_validate(
        {"to": {"phone": "+" + PHONES[0]}, "route": ["viber", "sms"], "text": "Hi"})
    return Batch("viber", "messaggio", 0, "default", request, tuple(items))


def _statuses(model: type, ids: list[str]) -> list[str]:
    with unit_of_work() as work:
        rows = {r.id: r.status for r in work.session.scalars(
            select(model).where(model.id.in_(ids)))}
    return [rows[i] for i in ids]


def test_submitted_gives_each_attempt_its_own_provider_id_and_indexes_its_deadline(
        published: list[FollowUps]) -> None:
    batch = _claimed_batch()
    result = SendResult(provider_message_ids={p: f"msg-{p}" for p in PHONES})
    outcomes.submitted(batch, result, 60.0, batch_id="batch-1")
    with unit_of_work() as work:
        attempts = {a.id: a for a in work.session.scalars(
            select(Attempt).where(Attempt.id.in_(batch.attempt_ids)))}
        events = work.session.scalars(select(Event).where(
            Event.type == "submitted")).all()
    for item in batch.items:
        attempt = attempts[item.attempt_id]
        assert (attempt.status, attempt.provider_message_id) == ("submitted", f"msg-{item.key}")
        assert attempt.deadline_at - attempt.submitted_at == timedelta(seconds=60)
    assert {e.payload["batch"] for e in events} == {"batch-1"} and len(events) == 3
    assert _statuses(Message, [i.message_id for i in batch.items]) == ["submitted"] * 3
    indexed = {a for f in published for a, _ in f.index}
    assert indexed == set(batch.attempt_ids)

    outcomes.submitted(batch, result, 60.0, batch_id="batch-1")  # recorded twice: no move
    assert _statuses(Attempt, batch.attempt_ids) == ["submitted"] * 3


def test_a_refusal_fails_every_attempt_and_each_falls_back_on_its_own(
        published: list[FollowUps]) -> None:
    batch = _claimed_batch()
    outcomes.failed(batch, PermanentError("rejected", "not today", code="-3"), "sending")
    assert _statuses(Attempt, batch.attempt_ids) == ["failed"] * 3
    sends = [t.args[0] for f in published for t in f.tasks if t.name == tasknames.SEND_ATTEMPT]
    assert len(sends) == 3
    with unit_of_work() as work:
        channels = work.session.scalars(select(Attempt.channel).where(
            Attempt.id.in_(sends))).all()
    assert channels == ["sms"] * 3


def test_retry_later_returns_the_batch_to_pending_and_keeps_its_deadline(
        published: list[FollowUps], monkeypatch: pytest.MonkeyPatch) -> None:
    batch = _claimed_batch()
    with pytest.raises(engine.RetryLater) as later:
        outcomes.retry_later(batch, RetryableError("temporary_error", "-4", retry_after=3.0),
                             "sending")
    assert later.value.countdown == 3.0
    with unit_of_work() as work:
        rows = work.session.scalars(select(Attempt).where(
            Attempt.id.in_(batch.attempt_ids))).all()
    assert {(a.status, a.retries, a.error_reason) for a in rows} == {
        ("pending", 1, "temporary_error")}
    monkeypatch.setenv("SWITCHBOARD_MAX_SEND_RETRIES", "0")  # spent: fails instead
    from shared.settings import get_settings
    get_settings.cache_clear()
    outcomes.retry_later(batch, RetryableError("temporary_error"), "pending")
    assert _statuses(Attempt, batch.attempt_ids) == ["failed"] * 3


def test_submitted_never_sets_a_deadline_past_the_messages_valid_until(
        published: list[FollowUps]) -> None:
    """The window was measured before the provider call; the call took time, so the deadline
    is clamped again when the answer is recorded (issue 17: no hop's deadline runs past
    valid_until)."""
    batch = _claimed_batch()
    ends = utcnow() + timedelta(seconds=5)
    batch = replace(batch, items=tuple(replace(i, valid_until=ends) for i in batch.items))
    outcomes.submitted(batch, SendResult(provider_message_ids={p: p for p in PHONES}), 5.0)
    with unit_of_work() as work:
        deadlines = work.session.scalars(select(Attempt.deadline_at).where(
            Attempt.id.in_(batch.attempt_ids))).all()
    assert deadlines == [ends] * 3
