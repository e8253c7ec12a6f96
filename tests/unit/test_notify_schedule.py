"""The webhook retry schedule: about 24 h in all, jittered, then give up."""

from __future__ import annotations

import pytest

from worker.notify import RETRY_SCHEDULE, next_delay


def test_schedule_spans_about_a_day() -> None:
    assert 20 * 3600 <= sum(RETRY_SCHEDULE) <= 26 * 3600
    assert list(RETRY_SCHEDULE[:-1]) <= sorted(RETRY_SCHEDULE[:-1])


@pytest.mark.parametrize("failures", range(1, len(RETRY_SCHEDULE) + 1))
def test_each_delay_is_jittered_within_ten_percent(failures: int) -> None:
    base = RETRY_SCHEDULE[failures - 1]
    delays = {next_delay(failures) for _ in range(20)}
    assert all(0.9 * base <= d <= 1.1 * base for d in delays)
    assert len(delays) > 1


def test_gives_up_after_the_last_step() -> None:
    assert next_delay(len(RETRY_SCHEDULE) + 1) is None


def test_without_a_signing_secret_nothing_is_sent_and_the_reason_is_kept(
        temp_db, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import db
    from shared.messages import create_message
    from shared.models import Delivery
    from shared.schemas import SendRequest
    from shared.settings import get_settings
    from worker import notify

    monkeypatch.delenv("SWITCHBOARD_CALLBACK_SIGNING_SECRET", raising=False)
    get_settings.cache_clear()
    posted: list[str] = []
    monkeypatch.setattr(notify.requests, "post", lambda url, **_: posted.append(url))
    request = SendRequest.model_validate({
        "to": {"phone": "+32470120000"}, "route": ["viber"], "text": "hi",
        "callback_url": "https://producer.example/hooks"})
    with db.session_scope() as session:
        create_message(session, "m-1", request)
        delivery_id = session.query(Delivery.id).scalar()
    assert notify.deliver(delivery_id) == "failed"
    with db.session_scope() as session:
        delivery = session.get(Delivery, delivery_id)
        assert "SWITCHBOARD_CALLBACK_SIGNING_SECRET" in delivery.last_error
    assert posted == []
