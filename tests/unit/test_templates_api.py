"""The templates API and templated sends against a temporary database: versions, refusals
that name locale, field and line, previews with the SMS cost, per-app scoping, and a
message that stores the rendered text and the template version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from shared import apps, tasknames
from shared.db import session_scope
from shared.models import Message
from tests.unit.conftest import tasks
from webhooks.app import create_app

AUTH = {"Authorization": "Bearer tpl-key"}
DOC: dict[str, Any] = {
    "name": "order_shipped", "default_locale": "en",
    "locales": {
        "en": {"text": "Order {{ order.id }} has shipped."},
        "nl": {"text": "Bestelling {{ order.id }} is verzonden.",
               "sms_text": "Bestelling {{ order.id }}: {{ order.total | currency('EUR') }}"},
    },
}
TO = {"to": {"phone": "+32470123456"}, "route": ["viber", "sms"]}


@pytest.fixture()
def api(published: list, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    monkeypatch.setenv("SWITCHBOARD_API_KEYS", "tpl-key")
    from tests.unit.conftest import clear_caches

    clear_caches()
    return create_app().test_client()


def _save(api: FlaskClient, body: Any = None, headers: dict | None = None) -> Any:
    return api.post("/v1/templates", json=body or DOC, headers=headers or AUTH)


def test_each_save_is_a_version_and_get_lists_them(api: FlaskClient) -> None:
    assert _save(api).get_json() == {"name": "order_shipped", "version": 1}
    yaml_doc = ("name: order_shipped\nlocales:\n  en:\n    text: 'Shipped: {{ order.id }}'\n")
    saved = api.post("/v1/templates", data=yaml_doc,
                     headers={**AUTH, "Content-Type": "application/yaml"})
    assert saved.status_code == 201 and saved.get_json()["version"] == 2
    shown = api.get("/v1/templates/order_shipped", headers=AUTH).get_json()
    assert shown["version"] == 2
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert shown["versions"][0]["locales"] == ["en", "nl"]
    assert shown["document"]["locales"]["en"]["text"] == "Shipped: {{ order.id }}"
    first = api.get("/v1/templates/order_shipped?version=1", headers=AUTH).get_json()
    assert first["document"]["default_locale"] == "en"
    listed = api.get("/v1/templates", headers=AUTH).get_json()["templates"]
    assert [(t["name"], t["version"]) for t in listed] == [("order_shipped", 2)]


def test_a_template_that_does_not_compile_is_a_422_naming_locale_field_and_line(
        api: FlaskClient) -> None:
    broken = {**DOC, "locales": {**DOC["locales"],
                                 "nl-BE": {"text": "Hallo\n{{ order.id "}}}
    answer = _save(api, broken)
    assert answer.status_code == 422
    [error] = answer.get_json()["errors"]
    assert error["field"] == "locales.nl-BE.text"
    assert (error["locale"], error["line"]) == ("nl-BE", 2)
    assert api.get("/v1/templates/order_shipped", headers=AUTH).status_code == 404


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"name": "bad name!", "locales": {"en": {"text": "a"}}}, 422, "name"),
    ({"name": "x", "locales": {}}, 422, "locales"),
    ({"name": "x", "locales": {"en": {"txt": "a"}}}, 422, "locales.en.txt"),
])
def test_invalid_documents_name_the_field(api: FlaskClient, body: dict, status: int,
                                          field: str) -> None:
    answer = _save(api, body)
    assert answer.status_code == status
    assert field in [e["field"] for e in answer.get_json()["errors"]]


def test_preview_renders_per_channel_with_the_sms_cost(api: FlaskClient) -> None:
    _save(api)
    answer = api.post("/v1/templates/order_shipped/preview", headers=AUTH, json={
        "locale": "nl-BE", "data": {"order": {"id": "A-17", "total": 12.5}}})
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["version"], body["locale"]) == (1, "nl")
    assert body["channels"]["viber"]["text"] == "Bestelling A-17 is verzonden."
    assert body["sms"]["text"] == "Bestelling A-17: € 12,50"
    assert (body["sms"]["encoding"], body["sms"]["segments"]) == ("GSM-7", 1)
    assert body["sms"]["length"] == len("Bestelling A-17: € 12,50") + 1  # € counts twice


def test_preview_of_an_unsaved_draft_and_its_errors(api: FlaskClient) -> None:
    draft = {"locales": {"en": {"text": "Hi {{ name }} 😀"}}}
    answer = api.post("/v1/templates/draft/preview", headers=AUTH,
                      json={"document": draft, "data": {"name": "Ann"}})
    assert answer.status_code == 200
    assert answer.get_json()["sms"]["encoding"] == "UCS-2"
    assert answer.get_json()["version"] is None
    broken = api.post("/v1/templates/draft/preview", headers=AUTH,
                      json={"document": {"locales": {"en": {"text": "{% for %}"}}}})
    assert broken.status_code == 422
    assert broken.get_json()["errors"][0]["field"] == "locales.en.text"


def test_preview_with_a_missing_placeholder_names_it(api: FlaskClient) -> None:
    _save(api)
    answer = api.post("/v1/templates/order_shipped/preview", headers=AUTH,
                      json={"locale": "en", "data": {"order": {}}})
    assert answer.status_code == 422
    assert answer.get_json()["errors"][0]["field"] == "template.data.order.id"


def test_templated_send_stores_the_rendered_text_and_version(
        api: FlaskClient, published: list) -> None:
    _save(api)
    _save(api, {**DOC, "locales": {"en": {"text": "v2 {{ order.id }}"}}})
    answer = api.post("/v1/messages", headers=AUTH, json={**TO, "template": {
        "name": "order_shipped", "version": 1, "locale": "nl-BE",
        "data": {"order": {"id": "A-17", "total": "3"}}}})
    assert answer.status_code == 202
    message_id = answer.get_json()["id"]
    with session_scope() as session:
        message = session.get_one(Message, message_id)
        assert message.request["text"] == "Bestelling A-17 is verzonden."
        assert message.request["sms_text"] == "Bestelling A-17: € 3,00"
        assert message.request["template"] is None
        assert (message.template_name, message.template_version,
                message.template_locale) == ("order_shipped", 1, "nl")
    view = api.get(f"/v1/messages/{message_id}", headers=AUTH).get_json()
    assert view["template"] == {"name": "order_shipped", "version": 1, "locale": "nl"}
    assert [e["type"] for e in view["events"]][:2] == ["queued", "templated"]
    assert (tasknames.DISPATCH, (message_id,)) in tasks(published)


def test_templated_send_without_version_takes_the_latest(api: FlaskClient) -> None:
    _save(api)
    _save(api, {**DOC, "locales": {"en": {"text": "v2 {{ order.id }}"}}})
    answer = api.post("/v1/messages", headers=AUTH, json={**TO, "template": {
        "name": "order_shipped", "data": {"order": {"id": "9"}}}})
    with session_scope() as session:
        message = session.get_one(Message, answer.get_json()["id"])
        assert (message.request["text"], message.template_version) == ("v2 9", 2)


@pytest.mark.parametrize(("template", "field"), [
    ({"name": "order_shipped", "data": {"order": {"total": 1}}}, "template.data.order.id"),
    ({"name": "nope"}, "template.name"),
    ({"name": "order_shipped", "version": 7}, "template.version"),
])
def test_a_templated_send_that_cannot_render_is_a_422_and_stores_nothing(
        api: FlaskClient, published: list, template: dict, field: str) -> None:
    _save(api)
    answer = api.post("/v1/messages", headers=AUTH, json={**TO, "template": template})
    assert answer.status_code == 422
    assert answer.get_json()["errors"][0]["field"] == field
    with session_scope() as session:
        assert session.query(Message).count() == 0
    assert tasks(published) == []


def test_an_idempotent_replay_of_a_templated_send(api: FlaskClient) -> None:
    _save(api)
    body = {**TO, "idempotency_key": "k1", "template": {
        "name": "order_shipped", "data": {"order": {"id": "1"}}}}
    first = api.post("/v1/messages", headers=AUTH, json=body)
    again = api.post("/v1/messages", headers=AUTH, json=body)
    assert first.status_code == 202 and again.status_code == 200
    assert again.get_json()["idempotent_replay"] is True
    other = api.post("/v1/messages", headers=AUTH, json={**body, "template": {
        "name": "order_shipped", "data": {"order": {"id": "2"}}}})
    assert other.status_code == 409


def test_an_app_sees_and_uses_only_its_own_templates(api: FlaskClient, temp_db: Path) -> None:
    with session_scope() as session:
        shop = apps.create(session, "shop")
    as_shop = {"Authorization": f"Bearer {shop.api_key}"}
    _save(api)  # the default app's
    assert api.get("/v1/templates/order_shipped", headers=as_shop).status_code == 404
    assert api.get("/v1/templates", headers=as_shop).get_json() == {"templates": []}
    assert api.post("/v1/templates/order_shipped/preview", headers=as_shop,
                    json={}).status_code == 404
    refused = api.post("/v1/messages", headers=as_shop, json={**TO, "template": {
        "name": "order_shipped", "data": {"order": {"id": "1"}}}})
    assert refused.status_code == 422
    assert refused.get_json()["errors"][0]["field"] == "template.name"
    assert _save(api, headers=as_shop).get_json()["version"] == 1  # its own numbering


def test_the_broker_path_stores_a_failed_message_when_rendering_fails(
        published: list) -> None:
    from shared.messages import create_message
    from shared.schemas import SendRequest

    request = SendRequest.model_validate({**TO, "template": {"name": "nope"}})
    with session_scope() as session:
        message, created = create_message(session, "m-1", request)
        assert created and (message.status, message.reason) == ("failed", "template_error")
    with session_scope() as session:
        message = session.get_one(Message, "m-1")
        assert message.request["template"]["name"] == "nope"
        assert message.template_name is None


# --- campaigns: data and locale per recipient --------------------------------------------

def _campaign(**template: Any) -> dict[str, Any]:
    return {"route": ["viber", "sms"], "template": {"name": "order_shipped", **template},
            "recipients": [
                {"phone": "+32470000101", "data": {"order": {"id": "A1", "total": 1}}},
                {"phone": "+32470000102", "locale": "nl-BE",
                 "data": {"order": {"id": "B2", "total": 2}}}]}


def test_a_templated_campaign_renders_each_recipient(api: FlaskClient, published: list) -> None:
    _save(api)
    answer = api.post("/v1/campaigns", headers=AUTH, json=_campaign(locale="en"))
    assert answer.status_code == 202, answer.get_json()
    with session_scope() as session:
        rows = {m.recipient: m for m in session.query(Message)}
        assert rows["+32470000101"].request["text"] == "Order A1 has shipped."
        assert rows["+32470000102"].request["text"] == "Bestelling B2 is verzonden."
        assert rows["+32470000102"].request["sms_text"] == "Bestelling B2: € 2,00"
        assert [(m.template_version, m.template_locale) for m in rows.values()] == [
            (1, "en"), (1, "nl")]


def test_a_campaign_recipient_missing_a_placeholder_is_named(api: FlaskClient,
                                                             published: list) -> None:
    _save(api)
    bad = _campaign()
    bad["recipients"][1]["data"] = {"order": {"total": 2}}
    answer = api.post("/v1/campaigns", headers=AUTH, json=bad)
    assert answer.status_code == 422
    assert answer.get_json()["errors"][0]["field"] == "recipients.1.template.data.order.id"
    with session_scope() as session:
        assert session.query(Message).count() == 0


def test_recipient_data_without_a_template_is_refused(api: FlaskClient) -> None:
    body = {"route": ["sms"], "text": "hi", "recipients": [{"phone": "+32470000101",
                                                            "data": {"a": 1}}]}
    answer = api.post("/v1/campaigns", headers=AUTH, json=body)
    assert answer.status_code == 422
    assert answer.get_json()["errors"][0]["field"] == "recipients.0.data"
