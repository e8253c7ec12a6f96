"""The dashboard's numbers (shared.stats): windows, app scoping, fallback rates, latency
percentiles and failing webhook deliveries, on rows written as the workers write them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest

from shared import stats
from shared.db import session_scope
from shared.models import DEFAULT_APP, Attempt, Delivery, Event, Message

NOW = datetime(2025, 6, 1, 12, 0, 0)


def message(*, app_id: str = DEFAULT_APP, status: str = "delivered",
            route: tuple[str, ...] = ("viber", "sms"), hops: tuple[tuple[str, str], ...] = (
                ("viber", "delivered"),), age: timedelta = timedelta(hours=1),
            latency: float | None = 2.0) -> str:
    """A message ``age`` before NOW with one attempt per (channel, status) in ``hops``."""
    message_id = str(uuid.uuid4())
    created = NOW - age
    with session_scope() as session:
        session.add(Message(id=message_id, app_id=app_id, status=status, recipient="+3247",
                            route=list(route), hop=len(hops) - 1, request={},
                            created_at=created))
        session.flush()
        for hop, (channel, attempt_status) in enumerate(hops):
            delivered = attempt_status == "delivered" and latency is not None
            session.add(Attempt(
                id=str(uuid.uuid4()), message_id=message_id, hop=hop, channel=channel,
                provider="rogerthat" if channel == "rogerthat" else "messaggio",
                status=attempt_status, created_at=created, submitted_at=created,
                delivered_at=created + timedelta(seconds=latency) if delivered else None))
    return message_id


def delivery(*, app_id: str = DEFAULT_APP, status: str = "pending", attempts: int = 0,
             url: str = "https://shop.example/hook?token=s3cret") -> None:
    with session_scope() as session:
        event = Event(app_id=app_id, type="delivered", payload={}, created_at=NOW)
        session.add(event)
        session.flush()
        session.add(Delivery(event_id=event.id, url=url, status=status, attempts=attempts,
                             created_at=NOW - timedelta(minutes=5)))


def overview(app_id: str | None = None, hours: int = 24) -> dict:
    with session_scope() as session:
        return stats.overview(session, app_id, hours, now=NOW)


@pytest.mark.parametrize("values, pct, expected", [
    ([], 50, None), ([3.0], 99, 3.0), ([1, 2, 3, 4], 50, 2), ([1, 2, 3, 4], 90, 4),
    (list(range(1, 101)), 99, 99), (list(range(100, 0, -1)), 50, 50)])
def test_percentile_is_nearest_rank(values, pct, expected):
    assert stats.percentile([float(v) for v in values], pct) == expected


@pytest.mark.parametrize("raw, expected", [(None, 24), ("", 24), ("1", 1), (" 48 ", 48),
                                           ("720", 720)])
def test_parse_hours(raw, expected):
    assert stats.parse_hours(raw) == expected


@pytest.mark.parametrize("raw", ["0", "721", "-1", "1.5", "day", "٣", "1e3"])
def test_parse_hours_refuses(raw):
    with pytest.raises(stats.HoursError, match="from 1 to 720"):
        stats.parse_hours(raw)


def test_messages_by_status_and_channel_in_the_window(temp_db):
    message(hops=(("viber", "undelivered"), ("sms", "delivered")))
    message(status="failed", hops=(("viber", "failed"),), route=("viber",))
    message(age=timedelta(hours=30))  # outside 24 hours
    data = overview()
    assert data["messages"]["total"] == 2
    assert data["messages"]["by_status"] == {"delivered": 1, "failed": 1}
    assert data["messages"]["by_channel"] == {"viber": {"undelivered": 1, "failed": 1},
                                              "sms": {"delivered": 1}}
    assert overview(hours=48)["messages"]["total"] == 3
    assert data["since"] == "2025-05-31T12:00:00Z" and data["until"] == "2025-06-01T12:00:00Z"


def test_fallback_rate_by_route(temp_db):
    message(hops=(("viber", "undelivered"), ("sms", "delivered")))
    message()
    message()
    message(route=("sms",), hops=(("sms", "delivered"),))
    assert overview()["fallback"] == [
        {"route": "sms", "messages": 1, "fell_back": 0, "rate": 0.0},
        {"route": "viber>sms", "messages": 3, "fell_back": 1, "rate": 0.3333}]


def test_latency_percentiles_per_provider(temp_db):
    for seconds in (1, 2, 3, 4, 10):
        message(latency=seconds)
    message(route=("rogerthat",), hops=(("rogerthat", "delivered"),), latency=0.5)
    message(hops=(("viber", "submitted"),))  # no report yet: no latency
    assert overview()["latency"] == [
        {"provider": "messaggio", "reports": 5, "p50": 3.0, "p90": 10.0, "p99": 10.0},
        {"provider": "rogerthat", "reports": 1, "p50": 0.5, "p90": 0.5, "p99": 0.5}]


def test_failing_webhooks_hide_the_query_string(temp_db):
    delivery(status="delivered", attempts=1)
    delivery(status="pending")
    delivery(status="pending", attempts=2)
    delivery(status="failed", attempts=8)
    delivery(status="failed", attempts=8, url="https://other.example/x")
    hooks = overview()["webhooks"]
    assert {k: hooks[k] for k in ("delivered", "pending", "retrying", "failed")} == {
        "delivered": 1, "pending": 1, "retrying": 1, "failed": 2}
    assert hooks["failing_urls"][0] == {"url": "https://shop.example/hook", "failed": 1,
                                        "retrying": 1}
    assert "s3cret" not in str(hooks)


def test_an_app_sees_only_its_own_numbers(temp_db):
    message(app_id="app-a")
    message(app_id="app-b", hops=(("viber", "undelivered"), ("sms", "delivered")))
    delivery(app_id="app-b", status="failed", attempts=8)
    mine = overview("app-a")
    assert mine["messages"]["total"] == 1 and mine["app_id"] == "app-a"
    assert mine["fallback"][0]["fell_back"] == 0
    assert mine["webhooks"]["failed"] == 0 and mine["webhooks"]["failing_urls"] == []
    assert overview(None)["messages"]["total"] == 2  # the operator's bootstrap key


def test_an_empty_window(temp_db):
    data = overview()
    assert data["messages"] == {"total": 0, "by_status": {}, "by_channel": {}}
    assert data["fallback"] == [] and data["latency"] == []
    assert data["webhooks"]["failing_urls"] == []
