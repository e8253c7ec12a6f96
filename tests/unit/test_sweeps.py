"""The deadline sweep (worker/sweeps.py): one failing entry does not block the ones behind
it, and a sweep never releases a lock it no longer owns. Real (embedded) Redis and a fresh
database (the sweep also releases scheduled messages); the firing of one member is replaced,
so no worker is needed."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis

from shared.models import utcnow
from worker import deadlines, sweeps


@pytest.fixture()
def client(redis_url: str, temp_db: object, published: object,
           monkeypatch: pytest.MonkeyPatch) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    client.delete(deadlines.KEY, sweeps._SWEEP_LOCK)
    monkeypatch.setattr(sweeps, "get_redis", lambda: client)
    return client


def test_a_failing_entry_is_set_aside_and_the_rest_still_fire(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    past = utcnow() - timedelta(seconds=5)
    deadlines.index(client, [("bad", past - timedelta(seconds=1)), ("a", past), ("b", past)])
    fired: list[str] = []

    def expire(member: str) -> bool:
        if member == "bad":
            raise RuntimeError("cannot load this row")
        fired.append(member)
        deadlines.remove(client, [member])
        return True
    monkeypatch.setattr(sweeps, "_expire", expire)
    assert sweeps.sweep_deadlines(budget_seconds=2) == 2
    assert fired == ["a", "b"]
    later = client.zscore(deadlines.KEY, "bad")
    assert later is not None and later > deadlines._score(utcnow()) + sweeps.SET_ASIDE_SECONDS - 5
    assert client.get(sweeps._SWEEP_LOCK) is None  # released: the next tick may sweep


def test_a_sweep_that_outlived_its_lock_leaves_the_next_sweeps_lock(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    deadlines.index(client, [("slow", utcnow() - timedelta(seconds=1))])

    def expire(member: str) -> bool:
        # The lock ran out while this sweep worked, and another sweep took it.
        client.delete(sweeps._SWEEP_LOCK)
        client.set(sweeps._SWEEP_LOCK, "the-next-sweep")
        deadlines.remove(client, [member])
        return True
    monkeypatch.setattr(sweeps, "_expire", expire)
    assert sweeps.sweep_deadlines(budget_seconds=2) == 1
    assert client.get(sweeps._SWEEP_LOCK) == b"the-next-sweep"


def test_a_held_lock_means_no_second_sweep(client: redis.Redis) -> None:
    client.set(sweeps._SWEEP_LOCK, "another-sweep")
    deadlines.index(client, [("x", utcnow() - timedelta(seconds=1))])
    assert sweeps.sweep_deadlines(budget_seconds=1) == 0
    assert client.zscore(deadlines.KEY, "x") is not None


# --- schedules and wake-ups (issue 17) ---------------------------------------------------------

def _scheduled(seconds: float, priority: str = "normal") -> str:
    from datetime import UTC

    from shared.db import session_scope
    from shared.messages import create_message, new_message_id
    from shared.schemas import SendRequest

    request = SendRequest.model_validate({
        "to": {"phone": "+32470123456"}, "route": ["sms"], "text": "Later", "priority": priority,
        "send_at": (utcnow() + timedelta(seconds=seconds)).replace(tzinfo=UTC).isoformat()})
    message_id = new_message_id(None)
    with session_scope() as session:
        create_message(session, message_id, request)
    return message_id


def _status(message_id: str) -> str:
    from shared.db import session_scope
    from shared.models import Message

    with session_scope() as session:
        return session.get_one(Message, message_id).status


def test_release_sends_what_is_due_and_only_that(client: redis.Redis, published: list) -> None:
    from shared import tasknames

    due, critical, later = _scheduled(60), _scheduled(60, "critical"), _scheduled(3600)
    assert sweeps.release_scheduled(now=utcnow() + timedelta(seconds=61)) == 2
    assert [_status(m) for m in (due, critical, later)] == ["queued", "queued", "scheduled"]
    sent = {(t.name, t.args[0], t.queue) for f in published for t in f.tasks}
    assert sent == {(tasknames.DISPATCH, due, None),
                    (tasknames.DISPATCH, critical, tasknames.CRITICAL_QUEUE)}
    assert sweeps.release_scheduled(now=utcnow() + timedelta(seconds=61)) == 0  # once only


def test_after_a_sweep_the_next_due_entry_gets_a_sweep_of_its_own(
        client: redis.Redis, published: list) -> None:
    from shared import tasknames

    _scheduled(0.4)
    countdown = sweeps.wake_for_next(client)
    assert countdown is not None and 0 < countdown <= 0.4
    wakes = [t for f in published for t in f.tasks if t.name == tasknames.SWEEP_DEADLINES]
    assert [t.countdown for t in wakes] == [countdown]
    assert sweeps.wake_for_next(client) is None  # one is on its way already
    client.delete(sweeps._WAKE_KEY)
    _scheduled(3600)
    deadlines.index(client, [("far", utcnow() + timedelta(hours=1))])
    soonest = sweeps.wake_for_next(client)
    assert soonest is not None and soonest <= 0.4  # the soonest of both sources counts


def test_a_wake_up_sends_a_waiting_attempt_on_its_messages_queue(
        client: redis.Redis, published: list) -> None:
    from shared import tasknames
    from tests.unit.conftest import queued_message
    from worker import timeliness

    _, attempt_id = queued_message(to={"phone": "+32470123456"}, route=["sms"], text="Hi",
                                   priority="critical")
    member = timeliness.WAKE_PREFIX + attempt_id
    deadlines.index(client, [(member, utcnow() - timedelta(seconds=1))])
    assert sweeps._expire(member)
    assert (tasknames.SEND_ATTEMPT, (attempt_id,), tasknames.CRITICAL_QUEUE) in [
        (t.name, t.args, t.queue) for f in published for t in f.tasks]
    assert client.zscore(deadlines.KEY, member) is None


def test_the_reindex_wakes_held_attempts_but_not_a_scheduled_campaigns(
        client: redis.Redis) -> None:
    """A scheduled campaign's attempts wait ``pending`` with ``not_before`` at its send_at,
    like a held hop; but its release sends them (in batches): a wake-up too would send each
    phone a second time, alone."""
    from datetime import UTC

    from shared.campaigns import CampaignRequest, create_campaign
    from shared.db import session_scope
    from shared.models import Attempt
    from tests.unit.conftest import queued_message
    from worker import timeliness

    send_at = (utcnow() + timedelta(seconds=60)).replace(tzinfo=UTC).isoformat()
    with session_scope() as session:
        campaign = create_campaign(session, "c-later", CampaignRequest.model_validate({
            "route": ["viber"], "text": "Later", "send_at": send_at,
            "recipients": [{"phone": "+32470123401"}, {"phone": "+32470123402"}]}), "default")
    assert campaign.attempt_ids == []  # nothing to send now
    _, held = queued_message(to={"phone": "+32470123403"}, route=["sms"], text="Morning")
    with session_scope() as session:
        session.get_one(Attempt, held).not_before = utcnow() + timedelta(hours=8)
        session.commit()
    sweeps.reindex_deadlines()
    members = {m.decode() for m in client.zrange(deadlines.KEY, 0, -1)}
    assert members == {timeliness.WAKE_PREFIX + held}
