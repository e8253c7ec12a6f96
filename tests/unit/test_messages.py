"""``shared.messages``: the idempotency rule every path uses (``request_hash``,
``check_replay``) and ``create_message``, the broker path's insert."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from shared.db import session_scope
from shared.messages import (
    IdempotencyConflict,
    check_replay,
    create_message,
    new_message_id,
    request_hash,
)
from shared.models import Message
from shared.schemas import SendRequest


def _request(**overrides: object) -> SendRequest:
    data = {"to": {"phone": "+32470123456"}, "route": ["sms"], "text": "Hi",
            "idempotency_key": "k-1", **overrides}
    return SendRequest.model_validate(data)


def test_the_hash_ignores_key_order_and_equivalent_spellings() -> None:
    a = _request().model_dump(mode="json")
    b = SendRequest.model_validate({"idempotency_key": "k-1", "text": "Hi", "route": ["sms"],
                                    "to": {"phone": "+32 470 12 34 56"}}).model_dump(mode="json")
    assert request_hash(a) == request_hash(b)
    assert request_hash(a) != request_hash(_request(text="Hi!").model_dump(mode="json"))


def test_check_replay_refuses_another_body_and_lets_a_missing_hash_match() -> None:
    check_replay("a" * 64, "a" * 64, "k")
    check_replay(None, "b" * 64, "k")  # a row from before migration 0005
    with pytest.raises(IdempotencyConflict) as info:
        check_replay("a" * 64, "b" * 64, "k")
    assert info.value.body()["errors"][0]["field"] == "idempotency_key"


def test_create_message_stores_the_hash_and_refuses_a_conflicting_body(temp_db: Path) -> None:
    message_id = new_message_id("k-1")
    with session_scope() as session:
        _, created = create_message(session, message_id, _request())
        assert created
    with session_scope() as session:
        again, created = create_message(session, message_id, _request())
        assert not created and again.id == message_id
        with pytest.raises(IdempotencyConflict):
            create_message(session, message_id, _request(text="Other"))
        stored = session.scalars(select(Message.request_hash)).one()
    assert stored == request_hash(_request().model_dump(mode="json"))


def test_a_lone_surrogate_hashes() -> None:
    """JSON may carry "\\ud800"; the hash must not fail where the old code stored it."""
    data = _request(metadata={"note": "x\ud800y"}).model_dump(mode="json")  # Any: unchecked
    other = _request(metadata={"note": "xy"}).model_dump(mode="json")
    assert request_hash(data) != request_hash(other)


# --- timing resolved at accept (issue 17) -------------------------------------------------------

def test_quiet_hours_resolved_at_accept_and_the_timeline_says_when_the_zone_is_a_guess(
        temp_db: object) -> None:
    from sqlalchemy import select

    from shared.db import session_scope
    from shared.messages import create_message
    from shared.models import Event, Message
    from shared.schemas import SendRequest

    quiet = {"start": "22:00", "end": "07:00", "timezone": "auto"}
    requests = {
        "russia": {"to": {"phone": "+79161234567"}, "route": ["sms"], "text": "x",
                   "quiet_hours": quiet},
        "messenger": {"to": {"email": "ann@example.com"}, "route": ["rogerthat"], "text": "x",
                      "allow_dismiss": True, "quiet_hours": quiet},
        "belgium": {"to": {"phone": "+32470120001"}, "route": ["sms"], "text": "x",
                    "quiet_hours": quiet},
    }
    with session_scope() as session:
        for message_id, body in requests.items():
            create_message(session, message_id, SendRequest.model_validate(body))
        notes = {e.message_id: e.payload for e in session.scalars(
            select(Event).where(Event.type == "quiet_hours"))}
        kept = {m.id: m.quiet_hours for m in session.scalars(select(Message))}
    assert notes["russia"]["applied"] is True and notes["russia"]["zones"] > 1
    assert notes["messenger"]["applied"] is False  # no zone known: nothing is held
    assert "belgium" not in notes
    assert kept["belgium"]["timezone"] == "Europe/Brussels" and kept["messenger"] is None
