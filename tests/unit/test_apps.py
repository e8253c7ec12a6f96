"""Producer apps end to end on a temporary SQLite database: the real ``switchboard apps`` CLI
creates them, their keys authenticate the real Flask app, and every read, the event feed and
event replay are scoped to the calling app. The broker is never touched (the ``published``
fixture records the follow-ups instead).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from shared import apps as apps_module
from shared import db, migrations, tasknames
from shared.cli import main as cli_main
from shared.db import session_scope
from shared.feed import number_events
from shared.messages import PUBLIC_EVENTS, add_event
from shared.models import DEFAULT_APP, App, Delivery, Event, Message
from shared.providers import get_provider
from shared.settings import get_settings
from shared.uow import FollowUps
from tests.unit.conftest import tasks
from webhooks.app import create_app

BOOTSTRAP_KEY = "bootstrap-key-1"
SHOP_CALLBACK = "https://shop.example/hooks"
PHONE = "+32 470 12 34 56"


def _clear_caches() -> None:
    if db.get_engine.cache_info().currsize:
        db.get_engine().dispose()
    get_settings.cache_clear()
    get_provider.cache_clear()
    db.reset()


@pytest.fixture
def client(tmp_path, monkeypatch: pytest.MonkeyPatch,
           published: list[FollowUps]) -> Iterator[FlaskClient]:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SWITCHBOARD_API_KEYS", BOOTSTRAP_KEY)
    for name in ("SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_DEFAULT_CALLBACK_URL",
                 "SWITCHBOARD_CALLBACK_SIGNING_SECRET"):
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


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------

def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop anything captured before
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _field(output: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)}:\s+(\S+)\s*$", output, re.MULTILINE)
    assert match, f"no {label!r} line in CLI output:\n{output}"
    return match.group(1)


def create_app_cli(capsys: pytest.CaptureFixture[str], name: str,
                   callback_url: str | None = None) -> dict[str, str]:
    argv = ["apps", "create", name]
    if callback_url:
        argv += ["--callback-url", callback_url]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    return {"id": _field(out, "app id"), "name": _field(out, "name"),
            "api_key": _field(out, "api key"), "secret": _field(out, "signing secret"),
            "output": out}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def send_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"to": {"phone": PHONE}, "route": ["viber", "sms"], "text": "Hello"}
    body.update(overrides)
    return body


def post_message(client: FlaskClient, key: str, **overrides: Any) -> str:
    resp = client.post("/v1/messages", json=send_body(**overrides), headers=auth(key))
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()["id"]


def count(model: type, *where: Any) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def public_event_ids(message_id: str) -> list[int]:
    with session_scope() as session:
        return list(session.scalars(select(Event.id).where(
            Event.message_id == message_id, Event.type.in_(sorted(PUBLIC_EVENTS)))
            .order_by(Event.id)))


@pytest.fixture
def shop(client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    return create_app_cli(capsys, "shop", SHOP_CALLBACK)


@pytest.fixture
def other(client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    return create_app_cli(capsys, "other")


# --------------------------------------------------------------------------------------
# switchboard apps create: the key authenticates, and is stored only hashed
# --------------------------------------------------------------------------------------

def test_created_app_key_authenticates_and_message_belongs_to_the_app(
        client: FlaskClient, published: list[FollowUps], shop: dict[str, str]) -> None:
    assert shop["name"] == "shop"
    assert shop["api_key"] != shop["secret"]
    resp = client.post("/v1/messages", json=send_body(), headers=auth(shop["api_key"]))
    assert resp.status_code == 202, resp.get_json()
    message_id = resp.get_json()["id"]
    assert resp.get_json()["status"] == "queued"
    assert tasks(published) == [(tasknames.DISPATCH, (message_id,))]
    with session_scope() as session:
        message = session.get(Message, message_id)
        assert message is not None
        assert message.app_id == shop["id"]

    shown = client.get(f"/v1/messages/{message_id}", headers=auth(shop["api_key"]))
    assert shown.status_code == 200
    assert shown.get_json()["id"] == message_id


def test_unknown_key_is_still_refused(client: FlaskClient, shop: dict[str, str]) -> None:
    resp = client.post("/v1/messages", json=send_body(),
                       headers=auth(shop["api_key"] + "x"))
    assert resp.status_code == 401
    assert count(Message) == 0


def test_only_the_sha256_of_the_key_is_stored(client: FlaskClient,
                                              shop: dict[str, str]) -> None:
    key = shop["api_key"]
    with session_scope() as session:
        rows = session.execute(text("SELECT * FROM apps")).mappings().all()
    assert len(rows) == 1
    row = dict(rows[0])
    for column, value in row.items():
        assert key not in str(value), f"plain API key stored in apps.{column}"
    assert row["api_key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert row["id"] == shop["id"]
    assert row["name"] == "shop"
    assert row["callback_url"] == SHOP_CALLBACK
    assert row["signing_secret"] == shop["secret"]  # needed to sign, so stored as is


def test_cli_create_output_says_the_key_is_shown_once(shop: dict[str, str]) -> None:
    assert "shown only now" in shop["output"]
    assert shop["api_key"] in shop["output"]


# --------------------------------------------------------------------------------------
# Isolation between apps
# --------------------------------------------------------------------------------------

def test_another_app_cannot_read_the_message(client: FlaskClient, shop: dict[str, str],
                                             other: dict[str, str]) -> None:
    message_id = post_message(client, shop["api_key"])
    resp = client.get(f"/v1/messages/{message_id}", headers=auth(other["api_key"]))
    assert resp.status_code == 404
    assert resp.get_json()["error"] == "not_found"
    # the bootstrap ("default") app is another app too
    assert client.get(f"/v1/messages/{message_id}",
                      headers=auth(BOOTSTRAP_KEY)).status_code == 404
    assert client.get(f"/v1/messages/{message_id}",
                      headers=auth(shop["api_key"])).status_code == 200


def test_event_feed_is_scoped_to_the_app(client: FlaskClient, shop: dict[str, str],
                                         other: dict[str, str]) -> None:
    shop_message = post_message(client, shop["api_key"])
    other_message = post_message(client, other["api_key"])
    with session_scope() as session:  # what the beat task switchboard.number_events does
        assert number_events(session) == 2

    other_feed = client.get("/v1/events", headers=auth(other["api_key"]))
    assert other_feed.status_code == 200
    other_events = other_feed.get_json()["events"]
    assert {e["message_id"] for e in other_events} == {other_message}
    assert all(e["message_id"] != shop_message for e in other_events)

    shop_feed = client.get("/v1/events", headers=auth(shop["api_key"])).get_json()["events"]
    assert [(e["message_id"], e["type"], e["seq"]) for e in shop_feed] == [
        (shop_message, "queued", 1)]

    boot_feed = client.get("/v1/events", headers=auth(BOOTSTRAP_KEY)).get_json()
    assert boot_feed["events"] == []

    # a cursor past another app's events does not reveal them either
    after = client.get("/v1/events?after=0", headers=auth(other["api_key"])).get_json()
    assert shop_message not in {e["message_id"] for e in after["events"]}


def test_bootstrap_key_still_works_as_the_default_app(client: FlaskClient,
                                                      shop: dict[str, str]) -> None:
    message_id = post_message(client, BOOTSTRAP_KEY)
    with session_scope() as session:
        assert session.get(Message, message_id).app_id == DEFAULT_APP
    assert client.get(f"/v1/messages/{message_id}",
                      headers=auth(BOOTSTRAP_KEY)).status_code == 200
    assert client.get(f"/v1/messages/{message_id}",
                      headers=auth(shop["api_key"])).status_code == 404


def test_idempotency_keys_are_per_app(client: FlaskClient, shop: dict[str, str],
                                      other: dict[str, str]) -> None:
    first = post_message(client, shop["api_key"], idempotency_key="order-42")
    second = post_message(client, other["api_key"], idempotency_key="order-42")
    third = post_message(client, BOOTSTRAP_KEY, idempotency_key="order-42")
    assert len({first, second, third}) == 3
    assert count(Message) == 3

    # within one app the key still dedupes
    again = client.post("/v1/messages", json=send_body(idempotency_key="order-42"),
                        headers=auth(shop["api_key"]))
    assert again.status_code == 200
    assert again.get_json()["id"] == first
    assert again.get_json()["idempotent_replay"] is True
    assert count(Message) == 3


# --------------------------------------------------------------------------------------
# switchboard apps list / rotate-secret / refusals
# --------------------------------------------------------------------------------------

def test_apps_list_prints_every_app(capsys: pytest.CaptureFixture[str],
                                    shop: dict[str, str], other: dict[str, str]) -> None:
    code, out, err = run_cli(capsys, "apps", "list")
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 2
    shop_line = next(line for line in lines if shop["id"] in line)
    other_line = next(line for line in lines if other["id"] in line)
    assert "shop" in shop_line and SHOP_CALLBACK in shop_line
    assert "other" in other_line
    for line in lines:  # neither keys nor secrets are listed
        assert shop["api_key"] not in line and shop["secret"] not in line
        assert other["api_key"] not in line and other["secret"] not in line


def test_rotate_secret_prints_and_stores_a_new_secret(
        client: FlaskClient, capsys: pytest.CaptureFixture[str], shop: dict[str, str]) -> None:
    with session_scope() as session:
        before = session.get(App, shop["id"])
        assert before.signing_secret == shop["secret"]
        assert before.secret_rotated_at is None
        old_hash = before.api_key_hash

    code, out, err = run_cli(capsys, "apps", "rotate-secret", "shop")
    assert code == 0, err
    new_secret = _field(out, "signing secret")
    assert new_secret != shop["secret"]
    assert new_secret.startswith("whsec_")

    with session_scope() as session:
        after = session.get(App, shop["id"])
        assert after.signing_secret == new_secret
        assert after.secret_rotated_at is not None
        assert after.api_key_hash == old_hash  # the API key is untouched

    # by id as well
    code, out, err = run_cli(capsys, "apps", "rotate-secret", shop["id"])
    assert code == 0, err
    third = _field(out, "signing secret")
    assert third not in (new_secret, shop["secret"])
    # and the key still authenticates
    assert client.post("/v1/messages", json=send_body(),
                       headers=auth(shop["api_key"])).status_code == 202


def test_rotate_secret_of_unknown_app_is_exit_2(capsys: pytest.CaptureFixture[str],
                                               client: FlaskClient) -> None:
    code, out, err = run_cli(capsys, "apps", "rotate-secret", "nope")
    assert code == 2
    assert "nope" in err
    assert "Traceback" not in err + out


def test_creating_an_app_twice_is_exit_2_with_a_clear_message(
        capsys: pytest.CaptureFixture[str], shop: dict[str, str]) -> None:
    code, out, err = run_cli(capsys, "apps", "create", "shop", "--callback-url",
                             "https://elsewhere.example/hooks")
    assert code == 2
    assert "shop" in err and "exists" in err
    assert "Traceback" not in err + out
    assert "api key" not in out  # no key was handed out for an app that was not created
    assert count(App) == 1
    with session_scope() as session:
        assert session.get(App, shop["id"]).callback_url == SHOP_CALLBACK


@pytest.mark.parametrize("url", ["ftp://shop.example/hooks", "shop.example/hooks", "nope",
                                 "https://"])
def test_bad_callback_url_is_exit_2(capsys: pytest.CaptureFixture[str], client: FlaskClient,
                                    url: str) -> None:
    code, out, err = run_cli(capsys, "apps", "create", "shop", "--callback-url", url)
    assert code == 2
    assert "--callback-url" in err
    assert "Traceback" not in err + out
    assert count(App) == 0


# --------------------------------------------------------------------------------------
# POST /v1/events/replay
# --------------------------------------------------------------------------------------

def _message_with_more_events(client: FlaskClient, key: str) -> str:
    """A message with a queued event (from the API), one more public event and one private."""
    message_id = post_message(client, key)
    with session_scope() as session:
        add_event(session, message_id, "status", status="submitted")
        add_event(session, message_id, "submitted", channel="viber")  # timeline detail only
    return message_id


def test_replay_by_message_requeues_each_public_event(client: FlaskClient,
                                                     shop: dict[str, str]) -> None:
    message_id = _message_with_more_events(client, shop["api_key"])
    public = public_event_ids(message_id)
    assert len(public) == 2
    deliveries_before = count(Delivery)
    assert deliveries_before == 2  # one per public event, to the app's callback URL

    resp = client.post("/v1/events/replay", json={"message_id": message_id},
                       headers=auth(shop["api_key"]))
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json() == {"replayed": len(public)}
    assert count(Delivery) == deliveries_before + len(public)
    with session_scope() as session:
        new = session.scalars(select(Delivery).order_by(Delivery.id)
                              .offset(deliveries_before)).all()
    assert sorted(d.event_id for d in new) == public
    assert {d.url for d in new} == {SHOP_CALLBACK}
    assert {d.status for d in new} == {"pending"}
    assert {d.message_id for d in new} == {message_id}


def test_replay_since_a_time(client: FlaskClient, shop: dict[str, str],
                             other: dict[str, str]) -> None:
    first = _message_with_more_events(client, shop["api_key"])
    second = post_message(client, shop["api_key"])
    post_message(client, other["api_key"])  # another app's: never replayed for shop
    expected = len(public_event_ids(first)) + len(public_event_ids(second))
    before = count(Delivery)

    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert since.endswith("+00:00")
    resp = client.post("/v1/events/replay", json={"since": since},
                       headers=auth(shop["api_key"]))
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json() == {"replayed": expected}
    assert count(Delivery) == before + expected


def test_replay_since_honours_the_offset(client: FlaskClient, shop: dict[str, str]) -> None:
    post_message(client, shop["api_key"])
    # an hour ago, written in UTC+05:00: still in the past once converted
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).astimezone(
        timezone(timedelta(hours=5))).isoformat()
    resp = client.post("/v1/events/replay", json={"since": an_hour_ago},
                       headers=auth(shop["api_key"]))
    assert resp.get_json() == {"replayed": 1}
    # ten minutes from now (UTC): no event is that recent
    later = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    before = count(Delivery)
    resp = client.post("/v1/events/replay", json={"since": later},
                       headers=auth(shop["api_key"]))
    assert resp.status_code == 202
    assert resp.get_json() == {"replayed": 0}
    assert count(Delivery) == before


@pytest.mark.parametrize("body", [{}, {"since": "x"}], ids=["empty", "bad-since"])
def test_replay_refuses_a_bad_body_naming_the_field(client: FlaskClient, shop: dict[str, str],
                                                    body: dict[str, Any]) -> None:
    post_message(client, shop["api_key"])
    before = count(Delivery)
    resp = client.post("/v1/events/replay", json=body, headers=auth(shop["api_key"]))
    assert resp.status_code == 422
    data = resp.get_json()
    assert data["error"] == "validation_error"
    assert "since" in [e["field"] for e in data["errors"]]
    assert count(Delivery) == before


def test_replay_with_both_since_and_message_is_refused(client: FlaskClient,
                                                       shop: dict[str, str]) -> None:
    message_id = post_message(client, shop["api_key"])
    resp = client.post("/v1/events/replay", headers=auth(shop["api_key"]), json={
        "message_id": message_id, "since": datetime.now(UTC).isoformat()})
    assert resp.status_code == 422


def test_replay_needs_a_key(client: FlaskClient, shop: dict[str, str]) -> None:
    message_id = post_message(client, shop["api_key"])
    resp = client.post("/v1/events/replay", json={"message_id": message_id})
    assert resp.status_code == 401


def test_replay_of_another_apps_message_replays_nothing(
        client: FlaskClient, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        shop: dict[str, str]) -> None:
    # both callers have somewhere to deliver to, so only the app scoping can make this 0
    rival = create_app_cli(capsys, "rival", "https://rival.example/hooks")
    monkeypatch.setenv("SWITCHBOARD_DEFAULT_CALLBACK_URL", "https://default.example/hooks")
    get_settings.cache_clear()
    message_id = _message_with_more_events(client, shop["api_key"])
    before = count(Delivery)
    for key in (rival["api_key"], BOOTSTRAP_KEY):
        resp = client.post("/v1/events/replay", json={"message_id": message_id},
                           headers=auth(key))
        assert resp.status_code == 202
        assert resp.get_json() == {"replayed": 0}
    assert count(Delivery) == before


# --------------------------------------------------------------------------------------
# rotate-secret --overlap: the old secret keeps signing beside the new one for a while
# --------------------------------------------------------------------------------------

def _rotate(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[str, datetime, datetime]:
    """rotate-secret shop with ``extra`` options: (new secret, clock before, clock after)."""
    before = datetime.now(UTC).replace(tzinfo=None)
    code, out, err = run_cli(capsys, "apps", "rotate-secret", "shop", *extra)
    assert code == 0, err
    return _field(out, "signing secret"), before, datetime.now(UTC).replace(tzinfo=None)


@pytest.mark.parametrize("extra, overlap", [((), timedelta(hours=24)),
                                            (("--overlap", "2h"), timedelta(hours=2)),
                                            (("--overlap", "90m"), timedelta(minutes=90)),
                                            (("--overlap", "3600"), timedelta(hours=1))])
def test_rotate_keeps_the_old_secret_signing_for_the_overlap(
        client: FlaskClient, capsys: pytest.CaptureFixture[str], shop: dict[str, str],
        extra: tuple[str, ...], overlap: timedelta) -> None:
    new_secret, before, after = _rotate(capsys, *extra)
    with session_scope() as session:
        row = session.get(App, shop["id"])
        assert row.signing_secret == new_secret
        assert row.previous_signing_secret == shop["secret"]
        assert before + overlap <= row.previous_secret_until <= after + overlap
        assert apps_module.signing_secrets(session, shop["id"]) == [new_secret, shop["secret"]]


def test_rotate_with_no_overlap_drops_the_old_secret(
        client: FlaskClient, capsys: pytest.CaptureFixture[str], shop: dict[str, str]) -> None:
    _rotate(capsys)  # a first rotation with the default overlap
    new_secret, _, _ = _rotate(capsys, "--overlap", "0")
    with session_scope() as session:
        row = session.get(App, shop["id"])
        assert row.previous_signing_secret is None and row.previous_secret_until is None
        assert apps_module.signing_secrets(session, shop["id"]) == [new_secret]


@pytest.mark.parametrize("bad", ["soon", "-1h", "31d", ""])
def test_rotate_refuses_a_bad_overlap_and_changes_nothing(
        client: FlaskClient, capsys: pytest.CaptureFixture[str], shop: dict[str, str],
        bad: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["apps", "rotate-secret", "shop", "--overlap", bad])
    assert exit_info.value.code == 2
    assert "argument --overlap: " in capsys.readouterr().err  # a known option, a bad value
    with session_scope() as session:
        assert session.get(App, shop["id"]).signing_secret == shop["secret"]
