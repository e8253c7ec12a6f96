"""The console's template pages: list, editor, the live preview endpoint it calls, saving,
the refusals of cross-origin or non-JSON writes, and per-app scoping."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from shared import apps, templates
from shared.db import session_scope
from webhooks.app import create_app

KEY = "console-tpl-key"
DOC = "name: hello\nlocales:\n  en:\n    text: 'Hello {{ name }}'\n"


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"op:{key}".encode()).decode()}


ADMIN = basic(KEY)


@pytest.fixture
def client(temp_db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    monkeypatch.setenv("SWITCHBOARD_API_KEYS", KEY)
    from tests.unit.conftest import clear_caches

    clear_caches()
    yield create_app().test_client()


def _save(client: FlaskClient, text: str = DOC, headers: dict | None = None):  # noqa: ANN202
    return client.post("/console/templates", json={"document": text},
                       headers=headers or ADMIN)


def test_save_list_and_edit(client: FlaskClient) -> None:
    saved = _save(client)
    assert saved.status_code == 201 and saved.get_json()["version"] == 1
    assert _save(client).get_json()["version"] == 2
    page = client.get("/console/templates", headers=ADMIN)
    assert page.status_code == 200 and b"hello" in page.data and b"v2" in page.data
    editor = client.get("/console/templates/hello", headers=ADMIN)
    assert editor.status_code == 200
    assert b"Hello {{ name }}" in editor.data  # the YAML, autoescaped by the page
    assert b"console/templates.js" in editor.data
    assert "script-src 'self'" in editor.headers["Content-Security-Policy"]
    assert client.get("/console/templates/hello?version=1", headers=ADMIN).status_code == 200
    assert client.get("/console/templates/hello?version=9", headers=ADMIN).status_code == 404
    assert client.get("/console/templates/new", headers=ADMIN).status_code == 200


def test_the_live_preview_renders_the_unsaved_text(client: FlaskClient) -> None:
    answer = client.post("/console/templates/preview", headers=ADMIN, json={
        "document": DOC.replace("Hello", "Hallo €"), "data": {"name": "Ann"}, "locale": "en"})
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["channels"]["sms"]["text"] == "Hallo € Ann"
    assert (body["sms"]["encoding"], body["sms"]["length"]) == ("GSM-7", 12)


def test_the_live_preview_names_locale_field_and_line(client: FlaskClient) -> None:
    broken = "name: x\nlocales:\n  nl:\n    text: 'a {{ b'\n"
    answer = client.post("/console/templates/preview", headers=ADMIN, json={"document": broken})
    assert answer.status_code == 422
    [error] = answer.get_json()["errors"]
    assert (error["field"], error["locale"], error["line"]) == ("locales.nl.text", "nl", 1)
    missing = client.post("/console/templates/preview", headers=ADMIN,
                          json={"document": DOC, "data": {}})
    assert missing.get_json()["errors"][0]["field"] == "template.data.name"


def test_writes_must_be_json_from_this_origin(client: FlaskClient) -> None:
    form = client.post("/console/templates", data={"document": DOC}, headers=ADMIN)
    assert form.status_code == 415
    cross = client.post("/console/templates/preview", json={"document": DOC},
                        headers={**ADMIN, "Origin": "https://evil.example"})
    assert cross.status_code == 403
    assert client.get("/console/templates").status_code == 401


def test_an_app_sees_only_its_own_templates(client: FlaskClient) -> None:
    _save(client)  # the default app's
    with session_scope() as session:
        shop = apps.create(session, "shop")
    as_shop = basic(shop.api_key)
    assert b"hello" not in client.get("/console/templates", headers=as_shop).data
    assert client.get("/console/templates/hello", headers=as_shop).status_code == 404
    assert _save(client, headers=as_shop).get_json()["version"] == 1
    with session_scope() as session:
        assert templates.find_template(session, shop.app.id, "hello").version == 1
