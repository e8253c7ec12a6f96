"""Secrets stay out of the message timeline: the gateway request summary stored on each attempt
carries neither the account secret nor the md5 ``sign`` derived from it, and neither does
``message_view`` nor ``GET /v1/messages/<id>`` built from it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from shared import db, migrations
from shared.db import session_scope
from shared.messages import add_event, message_view
from shared.models import Attempt, Message, utcnow
from shared.providers import get_provider
from shared.providers.base import REDACTED, OutboundMessage
from shared.providers.messaggio import MessaggioGateway, sign
from shared.settings import get_settings
from webhooks.app import create_app

SECRET = "TOPSECRET"
CONFIG_SECRET = "CONFIGURED-GATEWAY-SECRET-123"
API_KEY = "api-key-that-must-not-leak"
PHONE = "32470123456"
MD5_HEX = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{32}(?![0-9a-fA-F])")


def gateway(secret: str = SECRET) -> MessaggioGateway:
    return MessaggioGateway("https://gw.example/send", "https://gw.example/upload",
                            user="u", secret=secret, sender="S")


def outbound(**overrides: Any) -> OutboundMessage:
    fields: dict[str, Any] = {"attempt_id": str(uuid.uuid4()), "channel": "viber",
                              "phones": (PHONE,), "text": "Hello there",
                              "sms_text": "Hello by SMS"}
    fields.update(overrides)
    return OutboundMessage(**fields)


def assert_no_secret(blob: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in blob, f"{secret!r} leaked"


# --------------------------------------------------------------------------------------
# MessaggioGateway.summarize
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("msg", [
    pytest.param(outbound(), id="viber-text"),
    pytest.param(outbound(channel="sms", sms_text=None), id="sms"),
    pytest.param(outbound(text=None, sms_text=None, image_id="img-1"), id="viber-image-only"),
    pytest.param(outbound(button_text="Open", button_url="https://shop.example/o/1",
                          image_id="img-2", dlr_timeout=600), id="viber-rich"),
    pytest.param(outbound(phones=(PHONE, "32470999888")), id="two-phones"),
])
def test_summary_has_no_secret_and_no_signature(msg: OutboundMessage) -> None:
    gw = gateway()
    real_sign = sign("u", "S", msg.phones, msg.text, SECRET)
    assert real_sign in dict(gw.build_params(msg)).values()  # what really goes on the wire

    summary = gw.summarize(msg)
    dumped = json.dumps(summary)
    assert_no_secret(dumped, SECRET, real_sign)
    assert MD5_HEX.search(dumped) is None, "something md5-shaped is in the summary"
    assert summary["sign"] == REDACTED == "[redacted]"
    assert summary["phone"] == list(msg.phones)  # a list, in sending order
    assert summary["p_transaction_id"] == msg.attempt_id
    assert summary["sending_method"] == msg.channel
    if msg.text:
        assert summary["txt"] == msg.text
    else:
        assert "txt" not in summary


def test_summary_keeps_the_rest_of_the_request() -> None:
    msg = outbound()
    summary = gateway().summarize(msg)
    assert summary == {
        "url": "https://gw.example/send", "user": "u", "from": "S", "phone": [PHONE],
        "sign": "[redacted]", "sending_method": "viber", "txt": "Hello there",
        "p_transaction_id": msg.attempt_id, "dlr": "1", "charset": "UTF-8",
        "expiry_txt": "Hello by SMS",
    }


def test_summary_redacts_every_signature_whatever_the_secret() -> None:
    """The redaction is not a string replace of a known value: other secrets vanish too."""
    for secret in ("s3cr3t", "another-one", "x" * 40):
        msg = outbound()
        dumped = json.dumps(gateway(secret).summarize(msg))
        assert_no_secret(dumped, secret, sign("u", "S", msg.phones, msg.text, secret))


# --------------------------------------------------------------------------------------
# message_view and GET /v1/messages/<id>
# --------------------------------------------------------------------------------------

def _clear_caches() -> None:
    if db.get_engine.cache_info().currsize:
        db.get_engine().dispose()
    get_settings.cache_clear()
    get_provider.cache_clear()
    db.reset()


@pytest.fixture
def database(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SWITCHBOARD_API_KEYS", API_KEY)
    monkeypatch.setenv("SWITCHBOARD_MESSAGGIO_SECRET", CONFIG_SECRET)
    monkeypatch.setenv("SWITCHBOARD_MESSAGGIO_USER", "acct")
    monkeypatch.setenv("SWITCHBOARD_MESSAGGIO_URL", "https://gw.example/send")
    monkeypatch.setenv("SWITCHBOARD_CALLBACK_SIGNING_SECRET", "webhook-signing-secret")
    for name in ("SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_DEFAULT_CALLBACK_URL"):
        monkeypatch.delenv(name, raising=False)
    _clear_caches()
    migrations.upgrade()
    assert str(tmp_path) in get_settings().effective_database_url
    try:
        yield
    finally:
        _clear_caches()


@pytest.fixture
def client(database: None) -> FlaskClient:
    app = create_app()
    app.config["TESTING"] = True
    return app.test_client()


def _insert_sent_message(gw: MessaggioGateway) -> tuple[str, str]:
    """A message with one submitted Viber attempt whose request summary ``gw`` produced,
    stored as the worker stores it; returns (message id, the real md5 sign of the request)."""
    message_id, attempt_id = str(uuid.uuid4()), str(uuid.uuid4())
    msg = outbound(attempt_id=attempt_id)
    now = utcnow()
    with session_scope() as session:
        session.add(Message(
            id=message_id, status="submitted", recipient="+" + PHONE, route=["viber", "sms"],
            hop=0, request={"to": {"phone": "+" + PHONE}, "route": ["viber", "sms"],
                            "text": msg.text, "sms_text": msg.sms_text}))
        session.flush()
        add_event(session, message_id, "queued", route=["viber", "sms"])
        session.add(Attempt(
            id=attempt_id, message_id=message_id, hop=0, channel="viber",
            provider="messaggio", status="submitted", provider_message_id="pm-1",
            request_summary=gw.summarize(msg), response_code="0", response_text="accepted",
            deadline_at=now, submitted_at=now))
        session.flush()
        add_event(session, message_id, "submitted", attempt_id, channel="viber",
                  provider="messaggio", provider_message_id="pm-1")
        add_event(session, message_id, "status", status="submitted")
    return message_id, sign(gw.user, gw.sender, msg.phones, msg.text, gw.secret)


def test_message_view_contains_no_secret(database: None) -> None:
    message_id, real_sign = _insert_sent_message(gateway())
    with session_scope() as session:
        view = message_view(session, session.get(Message, message_id))
    dumped = json.dumps(view)
    assert_no_secret(dumped, SECRET, real_sign)
    assert MD5_HEX.search(dumped) is None
    (attempt,) = view["attempts"]
    assert attempt["request"]["sign"] == "[redacted]"
    assert attempt["request"]["phone"] == [PHONE]
    assert attempt["request"]["txt"] == "Hello there"
    assert attempt["response"] == {"code": "0", "text": "accepted"}
    assert [e["type"] for e in view["events"]] == ["queued", "submitted", "status"]


def test_get_message_json_contains_no_configured_secret_nor_api_key(client: FlaskClient) -> None:
    gw = get_provider("messaggio")  # the adapter the worker uses, built from settings
    assert isinstance(gw, MessaggioGateway)
    assert gw.secret == CONFIG_SECRET
    message_id, real_sign = _insert_sent_message(gw)

    resp = client.get(f"/v1/messages/{message_id}",
                      headers={"Authorization": f"Bearer {API_KEY}"})
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert_no_secret(body, CONFIG_SECRET, API_KEY, real_sign, "webhook-signing-secret")
    assert MD5_HEX.search(body) is None
    data = resp.get_json()
    assert data["id"] == message_id
    (attempt,) = data["attempts"]
    assert attempt["request"]["sign"] == "[redacted]"
    assert attempt["request"]["user"] == "acct"
    assert attempt["request"]["p_transaction_id"] == attempt["id"]
