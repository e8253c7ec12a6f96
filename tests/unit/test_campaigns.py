"""Campaigns (``shared.campaigns`` and ``POST/GET /v1/campaigns``): validation that names the
field, one message per phone with keys derived from the campaign, idempotent retries, counts.

The real app runs against a temporary SQLite database; the ``published`` fixture records the
follow-ups, so every test sees exactly which batches would be published (and ``send_task``,
the producer client's own call, is replaced too).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from pydantic import ValidationError
from sqlalchemy import func, select, update

from shared import campaigns, client, db, migrations, tasknames
from shared.db import session_scope
from shared.messages import new_message_id
from shared.models import Attempt, Campaign, Delivery, Event, Message
from shared.providers import get_provider
from shared.settings import get_settings
from shared.uow import FollowUps
from tests.unit.conftest import tasks
from webhooks.app import create_app

AUTH = {"Authorization": "Bearer k1"}


def phones(n: int, start: int = 100) -> list[str]:
    return [f"+3247012{start + i:04d}" for i in range(n)]


def body(n: int = 3, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"route": ["viber", "sms"], "text": "Sale", "sms_text": "Sale (sms)",
                            "recipients": [{"phone": p} for p in phones(n)]}
    data.update(overrides)
    return data


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __call__(self, name: str, *args: Any, **_: Any) -> None:
        self.calls.append((name, args))


def _clear() -> None:
    if db.get_engine.cache_info().currsize:
        db.get_engine().dispose()
    get_settings.cache_clear()
    get_provider.cache_clear()
    db.reset()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """What the producer client (``shared.client.send_campaign``) hands to the broker."""
    recorder = Recorder()
    monkeypatch.setattr("shared.client.send_task", recorder)
    return recorder


@pytest.fixture
def api(tmp_path, monkeypatch: pytest.MonkeyPatch, published: list[FollowUps],
        ) -> Iterator[FlaskClient]:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SWITCHBOARD_API_KEYS", "k1")
    monkeypatch.setenv("SWITCHBOARD_BULK_BATCH_SIZE", "2")
    monkeypatch.delenv("SWITCHBOARD_DATABASE_URL", raising=False)
    monkeypatch.delenv("SWITCHBOARD_DEFAULT_CALLBACK_URL", raising=False)
    _clear()
    migrations.upgrade()
    app = create_app()
    app.config["TESTING"] = True
    try:
        yield app.test_client()
    finally:
        _clear()


def count(model: type, *where: Any) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


# --- validation ---------------------------------------------------------------------------

def fields(exc: ValidationError) -> set[str]:
    return {e["field"] for e in _errors(exc)}


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    from shared.schemas import error_list

    return error_list(exc)


@pytest.mark.parametrize(("change", "field"), [
    ({"recipients": [{"phone": "+32470120100"}, {"phone": "12"}]}, "recipients.1.phone"),
    ({"recipients": [{"phone": "+32470120100"}, {"phone": "+32 470 12 01 00"}]},
     "recipients.1.phone"),
    ({"recipients": []}, "recipients"),
    ({"recipients": [{"phone": "+32470120100", "email": "a@b.c"}]}, "recipients.0.email"),
    ({"route": ["rogerthat", "sms"]}, "route"),
    ({"route": ["viber", "inapp"]}, "route"),
    ({"to": {"phone": "+32470120100"}}, "to"),
    ({"text": None, "sms_text": None}, "text"),
    ({"idempotency_key": "k" * 151}, "idempotency_key"),
])
def test_refusals_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        campaigns.CampaignRequest.model_validate(body(**change))
    assert field in fields(info.value)


def test_too_many_recipients_is_refused() -> None:
    many = [{"phone": p} for p in phones(2, 0)] * (campaigns.MAX_RECIPIENTS // 2 + 1)
    with pytest.raises(ValidationError) as info:
        campaigns.CampaignRequest.model_validate(body(recipients=many))
    assert "recipients" in fields(info.value)


def test_http_refusal_is_422_naming_the_recipient(api: FlaskClient,
                                                  published: list[FollowUps]) -> None:
    bad = body(recipients=[{"phone": "+32470120100"}, {"phone": "+32470120101"},
                           {"phone": "not a phone"}])
    resp = api.post("/v1/campaigns", json=bad, headers=AUTH)
    assert resp.status_code == 422
    assert [e["field"] for e in resp.get_json()["errors"]] == ["recipients.2.phone"]
    assert count(Message) == 0 and published == []


# --- creating -----------------------------------------------------------------------------

def test_each_phone_gets_its_own_message_attempt_and_event(api: FlaskClient,
                                                           published: list[FollowUps]) -> None:
    resp = api.post("/v1/campaigns", json=body(5, idempotency_key="spring",
                                                metadata={"wave": 1}), headers=AUTH)
    assert resp.status_code == 202
    data = resp.get_json()
    assert data["messages"] == 5 and data["batches"] == 3  # bulk_batch_size=2
    sent = [args[0] for name, args in tasks(published) if name == tasknames.SEND_BULK]
    assert [len(batch) for batch in sent] == [2, 2, 1]
    with session_scope() as session:
        messages = session.scalars(select(Message).where(
            Message.campaign_id == data["id"])).all()
        assert sorted(m.recipient for m in messages) == phones(5)
        for m in messages:
            assert m.idempotency_key == f"spring:{m.recipient}"
            assert m.id == new_message_id(f"spring:{m.recipient}", "default")
            assert m.request["to"]["phone"] == m.recipient
            assert m.request["metadata"] == {"wave": 1}
            assert m.status == "queued" and m.event_seq == 1
        attempts = session.scalars(select(Attempt)).all()
    assert sorted(a.id for a in attempts) == sorted(a for batch in sent for a in batch)
    assert {(a.channel, a.hop, a.status) for a in attempts} == {("viber", 0, "pending")}
    assert count(Event, Event.type == "queued", Event.seq == 1) == 5


def test_recipient_metadata_is_merged_over_the_campaigns(api: FlaskClient) -> None:
    recipients = [{"phone": "+32470120100", "metadata": {"name": "Ann", "wave": 2}}]
    resp = api.post("/v1/campaigns", json=body(recipients=recipients, metadata={"wave": 1}),
                    headers=AUTH)
    with session_scope() as session:
        message = session.scalars(select(Message).where(
            Message.campaign_id == resp.get_json()["id"])).one()
    assert message.request["metadata"] == {"name": "Ann", "wave": 2}


def test_a_retried_campaign_creates_nothing_new(api: FlaskClient,
                                                published: list[FollowUps]) -> None:
    first = api.post("/v1/campaigns", json=body(4, idempotency_key="k1"), headers=AUTH)
    calls = len(tasks(published))
    again = api.post("/v1/campaigns", json=body(4, idempotency_key="k1"), headers=AUTH)
    assert again.status_code == 200
    assert again.get_json() == {"id": first.get_json()["id"], "messages": 4,
                                "idempotent_replay": True}
    assert count(Message) == 4 and count(Attempt) == 4 and count(Campaign) == 1
    assert len(tasks(published)) == calls


def test_a_campaign_key_reused_with_other_recipients_is_a_409_naming_the_key(
        api: FlaskClient, published: list[FollowUps]) -> None:
    api.post("/v1/campaigns", json=body(4, idempotency_key="k5"), headers=AUTH)
    calls = len(tasks(published))
    again = api.post("/v1/campaigns", json=body(5, idempotency_key="k5"), headers=AUTH)
    assert again.status_code == 409
    assert again.get_json()["error"] == "idempotency_conflict"
    assert [e["field"] for e in again.get_json()["errors"]] == ["idempotency_key"]
    assert count(Message) == 4 and count(Campaign) == 1
    assert len(tasks(published)) == calls


def test_a_campaign_replay_ignores_key_order_and_phone_spelling(api: FlaskClient) -> None:
    first = api.post("/v1/campaigns", json=body(2, idempotency_key="k6"), headers=AUTH)
    spelled = dict(reversed(list(body(2, idempotency_key="k6").items())))
    spelled["recipients"] = [{"phone": p[:3] + " " + p[3:]} for p in phones(2)]
    again = api.post("/v1/campaigns", json=spelled, headers=AUTH)
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]


def test_a_campaign_message_replays_as_the_same_send(api: FlaskClient) -> None:
    api.post("/v1/campaigns", json=body(1, idempotency_key="k7"), headers=AUTH)
    single = {"to": {"phone": phones(1)[0]}, "route": ["viber", "sms"], "text": "Sale",
              "sms_text": "Sale (sms)", "idempotency_key": "k7:" + phones(1)[0]}
    assert api.post("/v1/messages", json=single, headers=AUTH).status_code == 200
    changed = {**single, "text": "Other"}
    assert api.post("/v1/messages", json=changed, headers=AUTH).status_code == 409


def test_the_worker_keeps_the_first_campaign_for_a_conflicting_send_campaign(
        api: FlaskClient, published: list[FollowUps], caplog: pytest.LogCaptureFixture,
) -> None:
    from shared import uow
    from worker.tasks.bulk import accept_campaign

    uow.set_publisher(published.append)  # importing the worker installed its own
    campaign_id = campaigns.new_campaign_id("k8", "default")
    assert accept_campaign(campaign_id, body(2, idempotency_key="k8")) == 1
    with caplog.at_level("WARNING", logger="worker.tasks.bulk"):
        assert accept_campaign(campaign_id, body(3, idempotency_key="k8")) == 0
    assert count(Message) == 2 and count(Campaign) == 1
    assert any("'k8'" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_send_campaign_after_the_same_http_campaign_is_a_quiet_replay(
        api: FlaskClient, published: list[FollowUps], caplog: pytest.LogCaptureFixture,
) -> None:
    """The client publishes only the fields it was given; the worker hashes the validated
    request whole, as the API did, so the same campaign is recognised on both paths."""
    from shared import uow
    from worker.tasks.bulk import accept_campaign

    uow.set_publisher(published.append)
    first = api.post("/v1/campaigns", json=body(2, idempotency_key="k9"), headers=AUTH)
    sent = campaigns.CampaignRequest.model_validate(body(2, idempotency_key="k9")).model_dump(
        mode="json", exclude_unset=True)  # what shared.client.send_campaign publishes
    with caplog.at_level("WARNING", logger="worker.tasks.bulk"):
        assert accept_campaign(first.get_json()["id"], sent) == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert count(Message) == 2


def test_a_phone_already_sent_with_the_derived_key_is_left_alone(api: FlaskClient) -> None:
    api.post("/v1/messages", json={"to": {"phone": phones(1)[0]}, "route": ["sms"],
                                   "text": "Hi", "idempotency_key": "k2:" + phones(1)[0]},
             headers=AUTH)
    resp = api.post("/v1/campaigns", json=body(3, idempotency_key="k2"), headers=AUTH)
    assert resp.get_json()["messages"] == 2
    assert count(Message) == 3


def test_webhook_deliveries_are_created_for_the_queued_events(
        api: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    resp = api.post("/v1/campaigns", json=body(3, callback_url="https://shop.example/hook"),
                    headers=AUTH)
    assert resp.status_code == 202
    with session_scope() as session:
        urls = session.scalars(select(Delivery.url)).all()
    assert urls == ["https://shop.example/hook"] * 3


# --- reading ------------------------------------------------------------------------------

def test_counts_by_status(api: FlaskClient) -> None:
    campaign_id = api.post("/v1/campaigns", json=body(3), headers=AUTH).get_json()["id"]
    with session_scope() as session:
        first = session.scalars(select(Message.id).where(
            Message.campaign_id == campaign_id).order_by(Message.id).limit(1)).one()
        session.execute(update(Message).where(Message.id == first).values(status="delivered"))
        session.execute(update(Attempt).where(Attempt.message_id == first)
                        .values(status="delivered"))
    view = api.get(f"/v1/campaigns/{campaign_id}", headers=AUTH).get_json()
    assert view["messages"] == 3
    assert view["counts"] == {"queued": 2, "delivered": 1}
    assert view["attempts"] == {"viber": {"pending": 2, "delivered": 1}}
    assert api.get("/v1/campaigns/nope", headers=AUTH).status_code == 404


# --- the producer client ------------------------------------------------------------------

def test_send_campaign_publishes_one_task_with_a_derived_id(sent: Recorder) -> None:
    campaign_id = client.send_campaign(**body(2, idempotency_key="k3"))
    assert campaign_id == campaigns.new_campaign_id("k3", "default")
    [(name, args)] = sent.calls
    assert name == tasknames.ACCEPT_CAMPAIGN
    assert args[0] == campaign_id and len(args[1]["recipients"]) == 2
    campaigns.CampaignRequest.model_validate(args[1])  # the worker can read it back


def test_send_campaign_refuses_locally() -> None:
    with pytest.raises(ValidationError) as info:
        client.send_campaign(**body(recipients=[{"phone": "x"}]))
    assert "recipients.0.phone" in fields(info.value)


# --- the worker's batching ----------------------------------------------------------------

def _row(n: int, phone: str) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(id=f"a{n}", message_id=f"m{n}", channel="viber",
                           provider="messaggio", hop=0, retries=n % 3, app_id="default",
                           valid_until=None, quiet_hours=None, priority="normal",
                           request={**{k: v for k, v in body(1).items() if k != "recipients"},
                                    "to": {"phone": phone}})


def test_batches_hold_each_phone_once_and_respect_the_size() -> None:
    from worker.bulk import _split

    rows = [_row(i, f"+3247012{i % 5:04d}") for i in range(12)]  # each phone 2-3 times
    batches = _split(rows, 4)
    for batch in batches:
        phones = [item.key for item in batch.items]
        assert len(phones) == len(set(phones)) <= 4
        assert batch.retries == max(item.retries for item in batch.items)
    assert sorted(i.attempt_id for b in batches for i in b.items) == sorted(r.id for r in rows)
    assert batches[0].items[0].key == "32470120000"  # the gateway's form: no "+"
