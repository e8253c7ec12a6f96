"""Per-message event sequence numbers under concurrent writers.

Many threads append events to one message at once, each append in its own transaction on its
own session. The counter on the message row must hand out 1, 2, 3... with no gap and no
duplicate, in commit order. Runs on a temporary SQLite file, and also on PostgreSQL when
``SWITCHBOARD_TEST_DATABASE_URL`` is set (every table in that database is dropped first).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from itertools import pairwise

import pytest
from sqlalchemy import MetaData, create_engine, select

from shared import db, migrations
from shared.db import session_scope
from shared.feed import number_events
from shared.messages import add_event, create_message, new_message_id
from shared.models import Event, Message
from shared.providers import get_provider
from shared.schemas import SendRequest
from shared.settings import get_settings
from webhooks.app import create_app

THREADS = 8
EVENTS_PER_THREAD = 25
PG_URL = os.environ.get("SWITCHBOARD_TEST_DATABASE_URL")


def _clear_caches() -> None:
    if db.get_engine.cache_info().currsize:
        db.get_engine().dispose()
    get_settings.cache_clear()
    get_provider.cache_clear()
    db.reset()


def _reset_database(url: str) -> None:
    """Drop every table (as tests/integration/conftest.py does) so migrations start clean."""
    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    meta.drop_all(engine)
    engine.dispose()


@pytest.fixture(params=[
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.skipif(
        not PG_URL, reason="set SWITCHBOARD_TEST_DATABASE_URL to run on PostgreSQL")),
])
def database(request: pytest.FixtureRequest, tmp_path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SWITCHBOARD_DEFAULT_CALLBACK_URL", raising=False)
    if request.param == "postgresql":
        assert PG_URL
        monkeypatch.setenv("SWITCHBOARD_DATABASE_URL", PG_URL)
        _clear_caches()
        _reset_database(PG_URL)
    else:
        monkeypatch.delenv("SWITCHBOARD_DATABASE_URL", raising=False)
        _clear_caches()
        assert str(tmp_path) in get_settings().effective_database_url
    migrations.upgrade()
    try:
        yield request.param
    finally:
        _clear_caches()


def _new_message(callback_url: str | None = None) -> str:
    body: dict = {"to": {"phone": "+32470123456"}, "route": ["viber", "sms"], "text": "Hi"}
    if callback_url:
        body["callback_url"] = callback_url
    request = SendRequest.model_validate(body)
    message_id = new_message_id(None)
    with session_scope() as session:
        _, created = create_message(session, message_id, request)
    assert created
    return message_id


def _hammer(message_id: str, threads: int, per_thread: int) -> None:
    """``threads`` threads, each adding ``per_thread`` events, one transaction per event."""
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            barrier.wait(timeout=10)
            for i in range(per_thread):
                with session_scope() as session:
                    add_event(session, message_id, "status", status="x", worker=worker, i=i)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in pool), "a writer thread hung"
    assert errors == [], errors


def test_concurrent_appends_get_gapless_unique_sequence_numbers(database: str) -> None:
    started = time.monotonic()
    message_id = _new_message()
    _hammer(message_id, THREADS, EVENTS_PER_THREAD)
    total = THREADS * EVENTS_PER_THREAD + 1  # + the "queued" event

    with session_scope() as session:
        events = session.scalars(select(Event).where(Event.message_id == message_id)
                                 .order_by(Event.seq)).all()
        counter = session.scalar(select(Message.event_seq).where(Message.id == message_id))

    seqs = [e.seq for e in events]
    assert len(seqs) == total
    assert len(set(seqs)) == total, "duplicate sequence numbers"
    assert seqs == list(range(1, total + 1)), "gap in sequence numbers"
    assert events[0].type == "queued" and events[0].seq == 1
    assert all(e.type == "status" for e in events[1:])
    assert counter == total

    # sequence order is commit order: the row id (taken at insert, inside the locked
    # transaction) rises with seq
    assert [e.id for e in events] == sorted(e.id for e in events)

    # the writers really did interleave (otherwise this proved nothing about concurrency)
    writers = [e.payload["worker"] for e in events[1:]]
    # (one writer after another would switch exactly THREADS - 1 times)
    switches = sum(1 for a, b in pairwise(writers) if a != b)
    assert switches > THREADS - 1

    # each writer's own events are numbered in the order it wrote them
    for worker in range(THREADS):
        mine = [e for e in events[1:] if e.payload["worker"] == worker]
        assert [e.payload["i"] for e in mine] == list(range(EVENTS_PER_THREAD))

    assert time.monotonic() - started < 10


def test_concurrent_appends_to_two_messages_number_each_independently(database: str) -> None:
    first, second = _new_message(), _new_message("https://producer.example/hooks")
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def work(message_id: str) -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(10):
                with session_scope() as session:
                    add_event(session, message_id, "status", status="x")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(m,), daemon=True)
            for m in (first, second, first, second)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)
    assert errors == []

    with session_scope() as session:
        for message_id in (first, second):
            seqs = session.scalars(select(Event.seq).where(Event.message_id == message_id)
                                   .order_by(Event.seq)).all()
            assert seqs == list(range(1, 22))
            assert session.get(Message, message_id).event_seq == 21


def _number_feed() -> None:
    """What the beat task ``switchboard.number_events`` does every second."""
    with session_scope() as session:
        number_events(session)


def test_event_feed_cursor_never_skips_an_event_committed_late(
        database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``GET /v1/events?after=<next>`` promises every public event in commit order.

    Two writers on two different messages do not block each other (the counter lock is per
    message), so an event can get a lower id than one that commits before it. A poller that
    read the later one must still receive the earlier one once it commits.
    """
    if database == "sqlite":
        pytest.skip("SQLite has one writer at a time: ids are always taken in commit order")
    monkeypatch.setenv("SWITCHBOARD_API_KEYS", "seq-key")
    get_settings.cache_clear()
    client = create_app().test_client()
    headers = {"Authorization": "Bearer seq-key"}
    first, second = _new_message(), _new_message()
    _number_feed()
    cursor = client.get("/v1/events", headers=headers).get_json()["next"]

    slow = db._factory(None)()  # a transaction that inserted its event but commits later
    try:
        add_event(slow, first, "status", status="slow")
        slow.flush()
        with session_scope() as fast:
            add_event(fast, second, "status", status="fast")
        _number_feed()
        page = client.get(f"/v1/events?after={cursor}", headers=headers).get_json()
        seen = [e["data"].get("status") for e in page["events"]]
        cursor = page["next"]
        slow.commit()
    finally:
        slow.close()
    _number_feed()
    page = client.get(f"/v1/events?after={cursor}", headers=headers).get_json()
    seen += [e["data"].get("status") for e in page["events"]]
    assert sorted(seen) == ["fast", "slow"], f"the poller saw only {seen}"
