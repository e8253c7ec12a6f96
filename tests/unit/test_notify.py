"""Status webhooks as a receiver sees them: the Standard Webhooks headers, verified with the
reference library (standardwebhooks on PyPI) at a real local HTTP endpoint; one webhook-id per
event across a retry and a replay; both secrets signing during a rotation's overlap, one after.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook, WebhookVerificationError

from shared import apps, db
from shared.client import verify_signature
from shared.messages import create_message, redeliver
from shared.models import App, Delivery, Event, utcnow
from shared.schemas import SendRequest
from shared.settings import get_settings
from shared.signing import new_secret
from tests.integration.producer import Producer
from worker import notify

DEFAULT_SECRET = new_secret()


@pytest.fixture()
def producer(temp_db, monkeypatch: pytest.MonkeyPatch) -> Iterator[Producer]:
    """A real HTTP receiver on 127.0.0.1 (allowed as egress, as in development)."""
    monkeypatch.setenv("SWITCHBOARD_CALLBACK_SIGNING_SECRET", DEFAULT_SECRET)
    monkeypatch.setenv("SWITCHBOARD_EGRESS_ALLOW", "127.0.0.1/32")
    get_settings.cache_clear()
    receiver = Producer([])
    yield receiver
    receiver.server.shutdown()
    get_settings.cache_clear()


def _message(url: str, app_id: str = "default") -> list[int]:
    """A message whose ``queued`` event is due for delivery to ``url``; its delivery ids."""
    request = SendRequest.model_validate({"to": {"phone": "+32470120000"}, "route": ["viber"],
                                          "text": "hi", "callback_url": url})
    with db.session_scope() as session:
        create_message(session, f"m-{app_id}", request, app_id=app_id)
        return list(session.scalars(select(Delivery.id).order_by(Delivery.id)))


def _headers(call: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in call["headers"].items()}


def test_a_delivered_webhook_verifies_with_the_reference_library(producer: Producer) -> None:
    [delivery_id] = _message(producer.url)
    assert notify.deliver(delivery_id) == "delivered"
    [call] = producer.calls
    headers = _headers(call)
    assert Webhook(DEFAULT_SECRET).verify(call["body"], headers)["type"] == "queued"
    assert headers["webhook-timestamp"] == headers["switchboard-timestamp"]
    assert verify_signature(DEFAULT_SECRET, call["body"], headers["switchboard-timestamp"],
                            headers["switchboard-signature"])  # the old header stays


def test_one_webhook_id_per_event_across_a_retry_and_a_replay(producer: Producer) -> None:
    producer.script = [503]
    [delivery_id] = _message(producer.url)
    assert notify.deliver(delivery_id) == "pending"  # 503: retried later
    assert notify.deliver(delivery_id) == "delivered"
    with db.session_scope() as session:
        assert redeliver(session, "default", message_id="m-default") == 1
        event_id = session.scalars(select(Event.id).where(Event.type == "queued")).one()
        replay_id = session.scalars(select(Delivery.id).where(Delivery.id != delivery_id)).one()
    assert notify.deliver(replay_id) == "delivered"
    assert len(producer.calls) == 3
    ids = {_headers(call)["webhook-id"] for call in producer.calls}
    assert ids == {f"evt_{event_id}"}
    for call in producer.calls:  # each send is signed afresh and verifies on its own
        Webhook(DEFAULT_SECRET).verify(call["body"], _headers(call))


def _shop(overlap: timedelta) -> tuple[str, str, str]:
    """An app whose secret was rotated with ``overlap``: (app id, old secret, new secret)."""
    with db.session_scope() as session:
        new = apps.create(session, "shop")
        old = new.signing_secret
        current = apps.rotate_secret(session, new.app, overlap)
        return new.app.id, old, current


def test_both_secrets_sign_during_the_overlap(producer: Producer) -> None:
    app_id, old, new = _shop(timedelta(hours=1))
    [delivery_id] = _message(producer.url, app_id)
    assert notify.deliver(delivery_id) == "delivered"
    [call] = producer.calls
    headers = _headers(call)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(call["body"], headers)
    Webhook(old).verify(call["body"], headers)
    assert verify_signature(new, call["body"], headers["switchboard-timestamp"],
                            headers["switchboard-signature"])


def test_only_the_new_secret_signs_once_the_overlap_is_over(producer: Producer) -> None:
    app_id, old, new = _shop(timedelta(hours=1))
    with db.session_scope() as session:  # the overlap has ended
        session.get(App, app_id).previous_secret_until = utcnow() - timedelta(seconds=1)
    [delivery_id] = _message(producer.url, app_id)
    assert notify.deliver(delivery_id) == "delivered"
    [call] = producer.calls
    headers = _headers(call)
    assert len(headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(call["body"], headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(call["body"], headers)


def test_a_rotation_without_overlap_drops_the_old_secret_at_once(producer: Producer) -> None:
    app_id, old, new = _shop(timedelta(0))
    with db.session_scope() as session:
        assert apps.signing_secrets(session, app_id) == [new] and new != old
        assert session.get(App, app_id).previous_signing_secret is None
