"""The console's scheduled filter and cancel button (webhooks/console_cancel.py): the button
shows on messages not yet sent, cancels over JSON from this origin only, and an app's key
cancels only its own messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask.testing import FlaskClient

from shared import apps
from shared.db import session_scope
from shared.messages import create_message, new_message_id
from shared.models import Message
from shared.schemas import SendRequest
from tests.unit.test_console import ADMIN, basic, client  # noqa: F401 (the fixture)

JSON = {"Content-Type": "application/json"}


def _scheduled(app_id: str = "default") -> str:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    message_id = new_message_id(None)
    with session_scope() as session:
        create_message(session, message_id, SendRequest.model_validate(
            {"to": {"phone": "+32470120000"}, "route": ["sms"], "text": "Later",
             "send_at": later}), app_id)
    return message_id


def _status(message_id: str) -> str:
    with session_scope() as session:
        return session.get_one(Message, message_id).status


def test_the_scheduled_filter_lists_scheduled_messages(client: FlaskClient) -> None:
    message_id = _scheduled()
    page = client.get("/console/messages?status=scheduled", headers=ADMIN)
    assert page.status_code == 200 and message_id in page.text
    assert message_id not in client.get("/console/messages?status=queued", headers=ADMIN).text


def test_the_button_cancels_over_json_from_this_origin_only(client: FlaskClient) -> None:
    message_id = _scheduled()
    page = client.get(f"/console/messages/{message_id}", headers=ADMIN).text
    assert 'id="cancel-message"' in page and "console/cancel.js" in page
    url = f"/console/messages/{message_id}/cancel"
    assert client.post(url, data={"x": "1"}, headers=ADMIN).status_code == 415  # a form
    assert client.post(url, data="{}", headers={**ADMIN, **JSON,
                                                "Origin": "https://evil.example"}
                       ).status_code == 403
    assert _status(message_id) == "scheduled"
    done = client.post(url, data="{}", headers={**ADMIN, **JSON})
    assert done.status_code == 200 and done.get_json()["status"] == "cancelled"
    assert _status(message_id) == "cancelled"
    assert 'id="cancel-message"' not in client.get(f"/console/messages/{message_id}",
                                                   headers=ADMIN).text


def test_an_apps_key_cancels_only_its_own(client: FlaskClient) -> None:
    with session_scope() as session:
        shop = apps.create(session, "shop")
        session.commit()
    theirs = _scheduled()  # the default app's
    url = f"/console/messages/{theirs}/cancel"
    assert client.post(url, data="{}", headers={**basic(shop.api_key), **JSON}
                       ).status_code == 404
    assert _status(theirs) == "scheduled"
