"""The console's consent views: a suppressed message's page shows the consent decision, and
an address's page (webhooks/console_consent.py) its record and history."""

from __future__ import annotations

from flask.testing import FlaskClient

from shared import consent
from shared.db import session_scope
from tests.unit.test_api import AUTH, client  # noqa: F401  (the fixture)
from tests.unit.test_consent import FakeGateway
from tests.unit.conftest import queued_message
from worker import engine


def test_a_suppressed_message_shows_who_opted_out_and_links_the_history(
        client: FlaskClient, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setattr(engine, "_wait_for_slot", lambda batch: None)
    client.put("/v1/consent/sms/+32470123456", json={"status": "opted_out"}, headers=AUTH)
    message_id, attempt_id = queued_message(to={"phone": "+32470123456"}, route=["sms"],
                                            text="Hi")
    batch = engine._load(attempt_id)
    assert batch is not None
    engine.send_batch(batch, FakeGateway())
    page = client.get(f"/console/messages/{message_id}", headers=AUTH).get_data(as_text=True)
    assert 'id="consent"' in page and "not sent: opted out" in page
    assert "/console/consent/sms/32470123456" in page
    history = client.get("/console/consent/sms/32470123456", headers=AUTH)
    text = history.get_data(as_text=True)
    assert history.status_code == 200 and "opted_out" in text and "api" in text


def test_an_address_never_recorded_reads_opted_in_and_a_bad_one_is_refused(
        client: FlaskClient) -> None:  # noqa: F811
    page = client.get("/console/consent/viber/+32470123499", headers=AUTH)
    assert page.status_code == 200 and "never recorded" in page.get_data(as_text=True)
    assert client.get("/console/consent/sms/nope", headers=AUTH).status_code == 400
    assert client.get("/console/consent/sms/32470123499").status_code == 401


def test_hostile_text_in_a_change_is_escaped(client: FlaskClient) -> None:  # noqa: F811
    with session_scope() as session:
        consent.change(session, "sms", "", "32470123456", consent.Change(
            "opted_out", source=consent.KEYWORD, app_id="default",
            detail="<script>alert(1)</script>"))
    text = client.get("/console/consent/sms/32470123456", headers=AUTH).get_data(as_text=True)
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;" in text
