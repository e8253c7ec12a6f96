"""The HTTP surface (webhooks.app): producer API, Messaggio callbacks and health.

Runs the real app against a temporary SQLite database migrated with Alembic. The broker is never
touched: the follow-ups published after each commit are recorded (the ``published`` fixture),
and every test asserts exactly what would have been published.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from shared import db, migrations, tasknames, uow
from shared.db import session_scope
from shared.messages import add_event
from shared.models import Attempt, Callback, Event, Message
from shared.providers import get_provider
from shared.settings import get_settings
from shared.uow import FollowUps
from tests.unit.conftest import tasks
from webhooks.app import create_app

AUTH = {"Authorization": "Bearer k1"}
PHONE = "+32 470 12 34 56"
E164 = "+32470123456"
CALLBACK = "/callbacks/messaggio/tok"
REPORT = {"msg_id": "aaaaaaaa-0000-0000-0000-000000000001",
          "p_transaction_id": "11111111-2222-3333-4444-555555555555",
          "type": "delivery", "status": "delivered"}


def _clear_caches() -> None:
    if db.get_engine.cache_info().currsize:
        db.get_engine().dispose()  # close the SQLite file before forgetting the engine
    get_settings.cache_clear()
    get_provider.cache_clear()
    db.reset()


@pytest.fixture
def client(tmp_path, monkeypatch: pytest.MonkeyPatch,
           published: list[FollowUps]) -> Iterator[FlaskClient]:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SWITCHBOARD_API_KEYS", "k1,k2")
    monkeypatch.setenv("SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN", "tok")
    for name in ("SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_MESSAGGIO_CALLBACK_IPS"):
        monkeypatch.delenv(name, raising=False)
    _clear_caches()
    migrations.upgrade()
    assert str(tmp_path) in get_settings().effective_database_url
    app = create_app()
    app.config["TESTING"] = True
    try:
        yield app.test_client()
    finally:
        _clear_caches()


def count(model: type, *where: Any) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def send_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"to": {"phone": PHONE}, "route": ["viber", "sms"], "text": "Hello"}
    body.update(overrides)
    return body


# --------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Bearer nope"}, id="wrong-key"),
        pytest.param({"Authorization": "Bearer "}, id="empty-key"),
        pytest.param({"Authorization": "Basic k1"}, id="wrong-scheme"),
        pytest.param({"Authorization": "Bearer k1,k2"}, id="whole-key-list"),
        pytest.param({"Authorization": "k1"}, id="no-scheme"),
    ],
)
def test_post_without_a_valid_key_is_401_json(client: FlaskClient,
                                             published: list[FollowUps],
                                             headers: dict[str, str]) -> None:
    resp = client.post("/v1/messages", json=send_body(), headers=headers)
    assert resp.status_code == 401
    assert resp.is_json
    assert resp.get_json()["error"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert published == []
    assert count(Message) == 0


def test_get_without_a_key_is_401_json(client: FlaskClient) -> None:
    resp = client.get("/v1/messages/whatever")
    assert resp.status_code == 401
    assert resp.get_json()["error"] == "unauthorized"


@pytest.mark.parametrize("key", ["k1", "k2"])
def test_every_configured_key_is_accepted(client: FlaskClient, key: str) -> None:
    resp = client.post("/v1/messages", json=send_body(),
                       headers={"Authorization": f"bearer {key}"})
    assert resp.status_code == 202


# --------------------------------------------------------------------------------------
# POST /v1/messages
# --------------------------------------------------------------------------------------

def test_valid_request_is_queued_and_dispatched_once(client: FlaskClient,
                                                     published: list[FollowUps]) -> None:
    resp = client.post("/v1/messages", json=send_body(metadata={"order": 7}), headers=AUTH)
    assert resp.status_code == 202
    body = resp.get_json()
    assert set(body) == {"id", "status"}
    assert body["status"] == "queued"
    message_id = body["id"]

    assert tasks(published) == [(tasknames.DISPATCH, (message_id,))]
    with session_scope() as session:
        message = session.get(Message, message_id)
        assert message is not None
        assert message.status == "queued"
        assert message.recipient == E164
        assert message.route == ["viber", "sms"]
        assert message.request["metadata"] == {"order": 7}


def test_invalid_phone_is_422_naming_to_phone(client: FlaskClient,
                                              published: list[FollowUps]) -> None:
    resp = client.post("/v1/messages", json=send_body(to={"phone": "12345"}), headers=AUTH)
    assert resp.status_code == 422
    body = resp.get_json()
    assert body["error"] == "validation_error"
    assert "to.phone" in [err["field"] for err in body["errors"]]
    assert published == []
    assert count(Message) == 0


def test_unknown_field_is_422(client: FlaskClient, published: list[FollowUps]) -> None:
    resp = client.post("/v1/messages", json=send_body(colour="blue"), headers=AUTH)
    assert resp.status_code == 422
    assert {"field": "colour", "message": "unknown field"} in resp.get_json()["errors"]
    assert published == []


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        pytest.param("not json", "text/plain", id="text-body"),
        pytest.param("{not json", "application/json", id="broken-json"),
        pytest.param("[1, 2]", "application/json", id="json-array"),
        pytest.param("", "application/json", id="empty"),
    ],
)
def test_non_json_body_is_400(client: FlaskClient, published: list[FollowUps], data: str,
                              content_type: str) -> None:
    resp = client.post("/v1/messages", data=data, content_type=content_type, headers=AUTH)
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["error"] == "invalid_json"
    assert body["errors"][0]["field"] == "body"
    assert published == []
    assert count(Message) == 0


def test_same_idempotency_key_returns_the_first_id_and_sends_nothing_new(
    client: FlaskClient, published: list[FollowUps],
) -> None:
    first = client.post("/v1/messages", json=send_body(idempotency_key="order-42"), headers=AUTH)
    assert first.status_code == 202
    message_id = first.get_json()["id"]

    again = client.post("/v1/messages", json=send_body(idempotency_key="order-42"),
                        headers={"Authorization": "Bearer k2"})
    assert again.status_code == 200
    assert again.get_json()["id"] == message_id
    assert again.get_json()["status"] == "queued"

    assert tasks(published) == [(tasknames.DISPATCH, (message_id,))]
    assert count(Message) == 1
    assert count(Event, Event.type == "queued") == 1


def test_same_idempotency_key_with_another_body_is_a_409_naming_the_key(
    client: FlaskClient, published: list[FollowUps],
) -> None:
    first = client.post("/v1/messages", json=send_body(idempotency_key="order-43"), headers=AUTH)
    assert first.status_code == 202

    again = client.post("/v1/messages", json=send_body(idempotency_key="order-43",
                                                       text="Something else"), headers=AUTH)
    assert again.status_code == 409
    body = again.get_json()
    assert body["error"] == "idempotency_conflict"
    assert [e["field"] for e in body["errors"]] == ["idempotency_key"]
    assert "idempotency_key" in body["message"]

    assert len(tasks(published)) == 1  # only the first message's dispatch
    assert count(Message) == 1
    with session_scope() as session:
        assert session.scalars(select(Message.request)).one()["text"] == "Hello"


def test_a_replay_is_recognised_whatever_the_key_order_spacing_or_phone_spelling(
    client: FlaskClient, published: list[FollowUps],
) -> None:
    body = send_body(idempotency_key="order-44")
    first = client.post("/v1/messages", json=body, headers=AUTH)
    reordered = '{ "idempotency_key" : "order-44", "text": "Hello",\n "route": ["viber","sms"],' \
        ' "to": {"phone": "+32470123456"} }'
    again = client.post("/v1/messages", data=reordered, headers=AUTH,
                        content_type="application/json")
    assert again.status_code == 200
    assert again.get_json() == {"id": first.get_json()["id"], "status": "queued",
                                "idempotent_replay": True}
    other = client.post("/v1/messages", json=send_body(idempotency_key="order-44",
                                                       route=["sms"]), headers=AUTH)
    assert other.status_code == 409
    assert len(tasks(published)) == 1


def test_a_message_stored_before_request_hashes_replays_for_any_body(
    client: FlaskClient, published: list[FollowUps],
) -> None:
    first = client.post("/v1/messages", json=send_body(idempotency_key="old"), headers=AUTH)
    with session_scope() as session:  # as migration 0005 leaves rows that existed before it
        session.get_one(Message, first.get_json()["id"]).request_hash = None
    again = client.post("/v1/messages", json=send_body(idempotency_key="old", text="Other"),
                        headers=AUTH)
    assert again.status_code == 200 and again.get_json()["idempotent_replay"] is True


def test_different_idempotency_keys_make_different_messages(client: FlaskClient,
                                                            published: list[FollowUps]) -> None:
    a = client.post("/v1/messages", json=send_body(idempotency_key="a"), headers=AUTH)
    b = client.post("/v1/messages", json=send_body(idempotency_key="b"), headers=AUTH)
    assert a.status_code == b.status_code == 202
    assert a.get_json()["id"] != b.get_json()["id"]
    assert len(tasks(published)) == 2


def test_requests_without_a_key_are_never_deduplicated(client: FlaskClient,
                                                       published: list[FollowUps]) -> None:
    a = client.post("/v1/messages", json=send_body(), headers=AUTH)
    b = client.post("/v1/messages", json=send_body(), headers=AUTH)
    assert a.get_json()["id"] != b.get_json()["id"]
    assert count(Message) == 2
    assert len(tasks(published)) == 2


def test_broker_down_still_answers_202_with_the_row_stored(client: FlaskClient,
                                                           published: list[FollowUps]) -> None:
    def broker_down(_followups: FollowUps) -> None:
        raise ConnectionError("broker down")

    uow.set_publisher(broker_down)  # the published fixture puts the previous one back
    resp = client.post("/v1/messages", json=send_body(), headers=AUTH)
    assert resp.status_code == 202
    assert count(Message, Message.id == resp.get_json()["id"]) == 1


# --------------------------------------------------------------------------------------
# GET /v1/messages/<id>
# --------------------------------------------------------------------------------------

def test_get_returns_status_attempts_and_events(client: FlaskClient) -> None:
    message_id = client.post("/v1/messages", json=send_body(idempotency_key="k"),
                             headers=AUTH).get_json()["id"]
    with session_scope() as session:
        session.add(Attempt(id="att-1", message_id=message_id, hop=0, channel="viber",
                            provider="messaggio", status="submitted",
                            provider_message_id="pm-1"))
        session.flush()
        add_event(session, message_id, "submitted", "att-1", channel="viber")

    resp = client.get(f"/v1/messages/{message_id}", headers=AUTH)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["id"] == message_id
    assert body["status"] == "queued"
    assert body["to"] == {"phone": E164}
    assert body["route"] == ["viber", "sms"]
    assert body["current_channel"] == "viber"
    assert body["idempotency_key"] == "k"

    assert len(body["attempts"]) == 1
    attempt = body["attempts"][0]
    assert attempt["id"] == "att-1"
    assert attempt["channel"] == "viber"
    assert attempt["status"] == "submitted"
    assert attempt["provider_message_id"] == "pm-1"
    assert attempt["error"] is None

    assert [e["type"] for e in body["events"]] == ["queued", "submitted"]
    assert body["events"][0]["detail"] == {"route": ["viber", "sms"]}
    assert body["events"][1]["attempt_id"] == "att-1"


def test_get_unknown_id_is_404_json(client: FlaskClient) -> None:
    resp = client.get("/v1/messages/00000000-0000-0000-0000-000000000000", headers=AUTH)
    assert resp.status_code == 404
    assert resp.is_json
    assert resp.get_json()["error"] == "not_found"


# --------------------------------------------------------------------------------------
# Messaggio callbacks
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("token", ["wrong", "to", "tokk", "TOK"])
def test_wrong_token_is_404_and_stores_nothing(client: FlaskClient,
                                               published: list[FollowUps],
                                               method: str, token: str) -> None:
    url = f"/callbacks/messaggio/{token}"
    if method == "GET":
        resp = client.get(url, query_string=REPORT)
    else:
        resp = client.post(url, data=REPORT)
    assert resp.status_code == 404
    assert resp.is_json
    assert count(Callback) == 0
    assert published == []


def _only_callback() -> Callback:
    with session_scope() as session:
        rows = session.scalars(select(Callback)).all()
        assert len(rows) == 1, rows
        return rows[0]


def test_delivery_report_is_stored_and_published(client: FlaskClient,
                                                 published: list[FollowUps]) -> None:
    resp = client.post(CALLBACK, data=REPORT)
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "accepted"}

    row = _only_callback()
    assert row.provider == "messaggio"
    assert row.status == "received"
    assert row.method == "POST"
    assert row.params == REPORT
    assert row.dedupe_key
    assert tasks(published) == [(tasknames.HANDLE_CALLBACK, (row.id,))]


def test_duplicate_delivery_report_is_stored_once(client: FlaskClient,
                                                  published: list[FollowUps]) -> None:
    assert client.post(CALLBACK, data=REPORT).status_code == 200
    again = client.post(CALLBACK, data=REPORT)
    assert again.status_code == 200
    assert again.get_json() == {"status": "duplicate"}
    # the gateway may redeliver with the other method: still the same report
    assert client.get(CALLBACK, query_string=REPORT).status_code == 200

    row = _only_callback()
    assert tasks(published) == [(tasknames.HANDLE_CALLBACK, (row.id,))]


def test_delivery_report_by_get(client: FlaskClient, published: list[FollowUps]) -> None:
    resp = client.get(CALLBACK, query_string=REPORT)
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "accepted"}
    row = _only_callback()
    assert row.method == "GET"
    assert row.status == "received"
    assert row.params == REPORT
    assert tasks(published) == [(tasknames.HANDLE_CALLBACK, (row.id,))]


def test_different_reports_for_one_message_are_all_stored(client: FlaskClient,
                                                          published: list[FollowUps]) -> None:
    assert client.get(CALLBACK, query_string=REPORT).status_code == 200
    seen = {**REPORT, "type": "seen", "status": "seen"}
    assert client.get(CALLBACK, query_string=seen).status_code == 200
    assert count(Callback) == 2
    assert [name for name, _ in tasks(published)] == [tasknames.HANDLE_CALLBACK] * 2


MALFORMED = {"type": "delivery", "status": "delivered"}  # neither msg_id nor p_transaction_id


def _assert_invalid_row(method: str) -> Callback:
    row = _only_callback()
    assert row.status == "invalid"
    assert row.method == method
    assert row.params == MALFORMED
    assert row.error and "msg_id" in row.error
    assert row.dedupe_key is None
    return row


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_malformed_report_is_400_and_kept_for_audit(client: FlaskClient,
                                                    published: list[FollowUps],
                                                    method: str) -> None:
    if method == "GET":
        resp = client.get(CALLBACK, query_string=MALFORMED)
    else:
        resp = client.post(CALLBACK, data=MALFORMED)
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["error"] == "invalid_callback"
    assert body["field"] == "msg_id"
    assert body["message"]
    _assert_invalid_row(method)
    assert published == []


def test_malformed_posted_report_keeps_its_raw_body(client: FlaskClient) -> None:
    """The issue: a malformed callback's body is kept for audit, byte for byte."""
    raw = "type=delivery&status=delivered"
    resp = client.post(CALLBACK, data=raw, content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 400
    row = _assert_invalid_row("POST")
    assert row.body == raw


def test_unknown_report_type_is_400_naming_type(client: FlaskClient,
                                                published: list[FollowUps]) -> None:
    resp = client.get(CALLBACK, query_string={**REPORT, "type": "bogus"})
    assert resp.status_code == 400
    assert resp.get_json()["field"] == "type"
    assert _only_callback().status == "invalid"
    assert published == []


def test_repeated_malformed_reports_are_all_kept(client: FlaskClient) -> None:
    for _ in range(2):
        assert client.get(CALLBACK, query_string=MALFORMED).status_code == 400
    assert count(Callback, Callback.status == "invalid") == 2


# --------------------------------------------------------------------------------------
# Health and errors
# --------------------------------------------------------------------------------------

def test_healthz(client: FlaskClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    body = resp.get_json()
    assert {k: v for k, v in body.items() if k != "providers"} == {"status": "ok",
                                                                  "database": "ok"}
    assert set(body["providers"]) >= {"messaggio", "rogerthat", "contactatonce"}


def test_unknown_path_is_404_json(client: FlaskClient) -> None:
    resp = client.get("/nope")
    assert resp.status_code == 404
    assert resp.is_json


# --- time-aware delivery (issue 17): schedule, cancel, app quiet hours ---------------------------

def _ahead(seconds: float) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def test_a_send_at_ahead_is_scheduled_and_publishes_nothing(
        client: FlaskClient, published: list[FollowUps]) -> None:
    resp = client.post("/v1/messages", json=send_body(send_at=_ahead(3600)), headers=AUTH)
    assert resp.status_code == 202 and resp.get_json()["status"] == "scheduled"
    assert tasks(published) == []
    view = client.get(f"/v1/messages/{resp.get_json()['id']}", headers=AUTH).get_json()
    assert view["status"] == "scheduled" and view["events"][0]["type"] == "scheduled"


def test_a_send_at_in_the_past_means_now(client: FlaskClient,
                                        published: list[FollowUps]) -> None:
    resp = client.post("/v1/messages", json=send_body(send_at=_ahead(-60)), headers=AUTH)
    assert resp.status_code == 202 and resp.get_json()["status"] == "queued"
    assert tasks(published) == [(tasknames.DISPATCH, (resp.get_json()["id"],))]


def test_a_critical_message_is_dispatched_on_the_critical_queue(
        client: FlaskClient, published: list[FollowUps]) -> None:
    resp = client.post("/v1/messages", json=send_body(priority="critical"), headers=AUTH)
    assert resp.status_code == 202
    assert [t.queue for f in published for t in f.tasks] == [tasknames.CRITICAL_QUEUE]


def test_a_valid_until_in_the_past_is_a_422_naming_it(
        client: FlaskClient, published: list[FollowUps]) -> None:
    resp = client.post("/v1/messages", json=send_body(valid_until=_ahead(-1)), headers=AUTH)
    assert resp.status_code == 422
    assert [e["field"] for e in resp.get_json()["errors"]] == ["valid_until"]


def test_cancel_over_http(client: FlaskClient, published: list[FollowUps]) -> None:
    message_id = client.post("/v1/messages", json=send_body(send_at=_ahead(3600)),
                             headers=AUTH).get_json()["id"]
    from shared import apps

    with session_scope() as session:
        other = apps.create(session, "other")
        session.commit()
    assert client.delete(f"/v1/messages/{message_id}", headers={
        "Authorization": f"Bearer {other.api_key}"}).status_code == 404  # not theirs
    resp = client.delete(f"/v1/messages/{message_id}", headers=AUTH)
    assert resp.status_code == 200 and resp.get_json() == {"id": message_id,
                                                            "status": "cancelled"}
    assert client.delete(f"/v1/messages/{message_id}", headers=AUTH).status_code == 200
    sent = client.post("/v1/messages", json=send_body(), headers=AUTH).get_json()["id"]
    from worker import engine

    attempt_id = engine.dispatch(sent)
    with session_scope() as session:
        session.get_one(Attempt, attempt_id).status = "sending"
        session.commit()
    refused = client.delete(f"/v1/messages/{sent}", headers=AUTH)
    assert refused.status_code == 409
    assert refused.get_json()["hop"] == {"hop": 0, "channel": "viber", "status": "sending"}


def test_app_quiet_hours_over_http_apply_to_its_messages(
        client: FlaskClient, published: list[FollowUps]) -> None:
    from shared import apps

    with session_scope() as session:
        shop = apps.create(session, "shop")
        session.commit()
    auth = {"Authorization": f"Bearer {shop.api_key}"}
    quiet = {"start": "21:00", "end": "08:00", "timezone": "auto"}
    resp = client.patch("/v1/app", json={"quiet_hours": quiet}, headers=auth)
    assert resp.status_code == 200 and resp.get_json()["quiet_hours"] == quiet
    assert client.get("/v1/app", headers=auth).get_json()["quiet_hours"] == quiet
    message_id = client.post("/v1/messages", json=send_body(), headers=auth).get_json()["id"]
    with session_scope() as session:
        kept = session.get_one(Message, message_id).quiet_hours
    assert kept == {**quiet, "timezone": "Europe/Brussels", "zone_source": "phone"}
    bad = client.patch("/v1/app", json={"quiet_hours": {"start": "9pm", "end": "08:00"}},
                       headers=auth)
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["field"] == "quiet_hours.start"
    assert client.patch("/v1/app", json={"quiet_hours": None},
                        headers=auth).get_json()["quiet_hours"] is None
    assert client.get("/v1/app", headers=AUTH).get_json() == {  # the bootstrap app: its own
        "id": "default", "name": "default", "quiet_hours": None}
    assert client.patch("/v1/app", json={"quiet_hours": quiet},
                        headers=AUTH).get_json()["quiet_hours"] == quiet
    assert client.get("/v1/app", headers=auth).get_json()["quiet_hours"] is None
