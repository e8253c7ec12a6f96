"""The operator console (webhooks.console): auth, filters, app scoping, escaping, timelines.

Runs the real app against a temporary migrated SQLite database; messages, attempts, events and
callbacks are written straight into it, as the workers would have.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from shared import apps
from shared.db import session_scope
from shared.messages import add_event
from shared.models import DEFAULT_APP, Attempt, Callback, Message
from shared.settings import get_settings
from webhooks.app import create_app
from webhooks.console import flow_stats

BOOTSTRAP_KEY = "console-key"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
T0 = datetime(2025, 3, 1, 12, 0, 0)


def basic(key: str, user: str = "operator") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ADMIN = basic(BOOTSTRAP_KEY)


@pytest.fixture
def client(temp_db, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    monkeypatch.setenv("SWITCHBOARD_API_KEYS", BOOTSTRAP_KEY)
    get_settings.cache_clear()
    app = create_app()
    app.config["TESTING"] = True
    yield app.test_client()
    get_settings.cache_clear()


def make_message(recipient: str = "+32470000001", *, app_id: str = DEFAULT_APP,
                 status: str = "seen", channels: tuple[str, ...] = ("viber",),
                 created_at: datetime = T0, text: str = "Your order is ready") -> str:
    """A message with one attempt per channel (the last one ``status``) and its events."""
    message_id = str(uuid.uuid4())
    with session_scope() as session:
        session.add(Message(id=message_id, app_id=app_id, status=status, recipient=recipient,
                            route=list(channels), hop=len(channels) - 1, created_at=created_at,
                            request={"to": {"phone": recipient}, "text": text}))
        session.flush()
        add_event(session, message_id, "queued", route=list(channels))
        for hop, channel in enumerate(channels):
            _attempt(session, message_id, hop, channel, "undelivered" if hop < len(channels) - 1
                     else status)
    return message_id


def _attempt(session: Session, message_id: str, hop: int, channel: str, status: str) -> None:
    attempt_id = str(uuid.uuid4())
    session.add(Attempt(id=attempt_id, message_id=message_id, hop=hop, channel=channel,
                        provider="rogerthat" if channel == "rogerthat" else "messaggio",
                        status=status, provider_message_id=f"pm-{channel}-{hop}",
                        request_summary={"channel": channel, "sign": "[redacted]"},
                        deadline_at=T0 + timedelta(minutes=5)))
    session.flush()
    add_event(session, message_id, "submitted", attempt_id, channel=channel)
    session.add(Callback(provider="messaggio", method="POST", attempt_id=attempt_id,
                         status="processed", params={"status": status, "hop": str(hop)}))
    if status == "undelivered":
        add_event(session, message_id, "fallback", attempt_id, from_channel=channel,
                  to_channel="sms", reason="viber_user_not_found")


def listed(response: TestResponse) -> set[str]:
    """The message ids the list page links to."""
    return set(re.findall(r"/console/messages/([0-9a-f-]{36})", response.get_data(as_text=True)))


# --- authentication ------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/console", "/console/flows", "/console/messages/x"])
def test_no_credentials_asks_for_basic_auth(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="switchboard console"')
    assert "text/html" in response.content_type


@pytest.mark.parametrize("headers", [basic("wrong"), basic(""), {"Authorization": "Bearer no"},
                                     {"Authorization": "Digest abc"}])
def test_wrong_credentials_are_refused(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.get("/console", headers=headers)
    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers


def test_basic_auth_with_an_api_key_as_password_works(client: FlaskClient) -> None:
    message_id = make_message()
    response = client.get("/console/messages", headers=ADMIN)
    assert response.status_code == 200 and "text/html" in response.content_type
    assert listed(response) == {message_id}
    assert client.get("/console/", headers=basic(BOOTSTRAP_KEY, user="")).status_code == 200


def test_bearer_key_works_like_the_api(client: FlaskClient) -> None:
    response = client.get("/console", headers={"Authorization": f"Bearer {BOOTSTRAP_KEY}"})
    assert response.status_code == 200


def test_pages_allow_only_own_script_files_and_no_caching(client: FlaskClient) -> None:
    for path in ("/console", "/console/messages", "/console/flows/new"):
        response = client.get(path, headers=ADMIN)
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self';" in policy
        assert "unsafe-inline" not in policy.split("script-src", 1)[1].split(";", 1)[0]
        assert response.headers["Cache-Control"] == "no-store"
        assert "<script>" not in response.get_data(as_text=True)  # no inline script


def test_the_console_opens_on_the_dashboard(client: FlaskClient) -> None:
    body = client.get("/console", headers=ADMIN).get_data(as_text=True)
    assert "<title>Dashboard" in body
    assert 'data-endpoint="/v1/stats/overview"' in body
    for chart in ("chart-status", "chart-channel", "chart-fallback", "chart-latency",
                  "chart-webhooks"):
        assert f'id="{chart}"' in body
    assert "/console/static/vendor/chartjs/chart.umd.min.js" in body


@pytest.mark.parametrize("path", ["vendor/drawflow/drawflow.min.js",
                                  "vendor/drawflow/LICENSE",
                                  "vendor/chartjs/chart.umd.min.js",
                                  "vendor/chartjs/LICENSE.md", "console/designer.js",
                                  "console/dashboard.js", "console/results.js",
                                  "console/designer.css"])
def test_static_files_are_served(client: FlaskClient, path: str) -> None:
    response = client.get(f"/console/static/{path}")
    assert response.status_code == 200 and len(response.get_data()) > 100


# --- app scoping ---------------------------------------------------------------------------

def test_an_app_sees_only_its_own_messages(client: FlaskClient) -> None:
    with session_scope() as session:
        shop = apps.create(session, "shop")
    mine = make_message(app_id=shop.app.id)
    theirs = make_message("+32470000002")
    as_shop = basic(shop.api_key)
    assert listed(client.get("/console/messages", headers=as_shop)) == {mine}
    assert client.get(f"/console/messages/{theirs}", headers=as_shop).status_code == 404
    assert client.get(f"/console/messages/{mine}", headers=as_shop).status_code == 200
    assert listed(client.get("/console/messages", headers=ADMIN)) == {mine, theirs}  # the operator


# --- filters -------------------------------------------------------------------------------

def test_filters_narrow_the_list(client: FlaskClient) -> None:
    viber = make_message("+32470000001", status="seen", created_at=T0)
    sms = make_message("+32470999999", status="delivered", channels=("viber", "sms"),
                       created_at=T0 + timedelta(hours=2))
    messenger = make_message("alice@example.com", status="failed", channels=("rogerthat",),
                             created_at=T0 + timedelta(hours=4))

    def ids(query: str) -> set[str]:
        response = client.get(f"/console/messages?{query}", headers=ADMIN)
        assert response.status_code == 200, response.get_data(as_text=True)
        return listed(response)

    assert ids("") == {viber, sms, messenger}
    assert ids("status=delivered") == {sms}
    assert ids("channel=sms") == {sms}
    assert ids("channel=viber") == {viber, sms}
    assert ids("provider=rogerthat") == {messenger}
    assert ids("recipient=%2B32470999999") == {sms}  # exact
    assert ids("recipient=0999") == {sms}  # substring
    assert ids("recipient=%2B32+470+99") == {sms}  # typed with spaces
    assert ids("recipient=example.com") == {messenger}
    assert ids("recipient=%25") == set()  # LIKE wildcards are taken literally
    assert ids("since=2025-03-01T13:00:00Z") == {sms, messenger}
    assert ids("until=2025-03-01T13:00") == {viber}
    assert ids("since=2025-03-01T15:00:00%2B02:00&until=2025-03-01T15:00") == {sms}
    assert ids("status=&channel=&since=") == {viber, sms, messenger}  # an empty form


def test_newest_first_and_paginated(client: FlaskClient) -> None:
    ids = [make_message(created_at=T0 + timedelta(minutes=i)) for i in range(3)]
    first = client.get("/console/messages?limit=2&status=seen", headers=ADMIN).get_data(as_text=True)
    assert first.index(ids[2]) < first.index(ids[1]) and ids[0] not in first
    older = re.search(r'href="([^"]*page=2[^"]*)"', first)
    assert older is not None and "status=seen" in older.group(1)
    second = client.get(older.group(1).replace("&amp;", "&"), headers=ADMIN)
    assert listed(second) == {ids[0]} and "Older" not in second.get_data(as_text=True)


@pytest.mark.parametrize(("query", "field"), [
    ("status=lost", "status"), ("channel=pigeon", "channel"), ("provider=acme", "provider"),
    ("since=yesterday", "since"), ("until=2025-13-01", "until"),
    ("since=2025-03-02&until=2025-03-01", "until"), ("limit=0", "limit"),
    ("limit=abc", "limit"), ("page=-1", "page"), ("recipient=" + "1" * 65, "recipient"),
])
def test_bad_filters_are_refused_naming_the_field(client: FlaskClient, query: str,
                                                  field: str) -> None:
    response = client.get(f"/console/messages?{query}", headers=ADMIN)
    body = response.get_data(as_text=True)
    assert response.status_code == 400
    assert f"<code>{field}</code>" in body and "Traceback" not in body


# --- rendering -----------------------------------------------------------------------------

def test_hostile_text_is_escaped(client: FlaskClient) -> None:
    message_id = make_message(HOSTILE, text=HOSTILE)
    with session_scope() as session:
        add_event(session, message_id, "replied", text=HOSTILE)
    pages = [client.get("/console/messages", headers=ADMIN),
             client.get(f"/console/messages/{message_id}", headers=ADMIN),
             client.get(f"/console/messages?recipient={HOSTILE[:60]}", headers=ADMIN)]
    for page in pages:
        body = page.get_data(as_text=True)
        assert "<script>" not in body and "<img src=x" not in body
        assert "&lt;script&gt;" in body


def test_timeline_shows_attempts_callbacks_fallback_and_events(client: FlaskClient) -> None:
    message_id = make_message(status="delivered", channels=("viber", "sms"))
    with session_scope() as session:
        add_event(session, message_id, "status", status="delivered", reason=None)
    response = client.get(f"/console/messages/{message_id}", headers=ADMIN)
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    attempts = body[body.index('class="attempts"'):body.index('id="fallback"')]
    assert attempts.count("<tr id=\"attempt-") == 2
    for text in ("viber", "sms", "messaggio", "undelivered", "delivered", "pm-sms-1",
                 "2025-03-01 12:05:00", "[redacted]"):
        assert text in attempts
    fallback = body[body.index('id="fallback"'):body.index('id="callbacks"')]
    assert "viber_user_not_found" in fallback
    callbacks = body[body.index('id="callbacks"'):body.index('id="events"')]
    assert callbacks.count("#0 viber") == 1 and callbacks.count("#1 sms") == 1
    events = body[body.index('id="events"'):]
    types = re.findall(r"<td>\d+</td><td>[^<]*</td><td>(\w+)</td>", events)
    assert types == ["queued", "submitted", "fallback", "submitted", "status"]


def test_unknown_message_is_not_found(client: FlaskClient) -> None:
    response = client.get(f"/console/messages/{uuid.uuid4()}", headers=ADMIN)
    assert response.status_code == 404 and "no message" in response.get_data(as_text=True)


def test_flows_page_says_no_flows_yet(client: FlaskClient) -> None:
    with session_scope() as session:
        assert flow_stats(session) == []
    response = client.get("/console/flows", headers=ADMIN)
    assert response.status_code == 200 and "No flows yet" in response.get_data(as_text=True)


def test_flows_page_renders_what_flow_stats_returns(client: FlaskClient,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    stats = [{"name": "survey <b>", "version": 2, "started": 5, "finished": 3, "timed_out": 1,
              "steps": [{"step": "q1", "answers": {"yes": 3, "no": 2}}]}]
    seen: list[str | None] = []
    monkeypatch.setattr("webhooks.console.flow_stats",
                        lambda session, app_id=None: seen.append(app_id) or stats)
    body = client.get("/console/flows", headers=ADMIN).get_data(as_text=True)
    assert "survey &lt;b&gt;" in body and "v2" in body and "timed out 1" in body
    assert "yes: 3" in body and "no: 2" in body and "No flows yet" not in body
    assert seen == [None]  # the operator sees every app's flows
