"""GET /v1/stats/overview (webhooks.stats): API-key and console-login auth, the app's own
numbers only, ``hours`` refused with a 422 naming it, and its place in the OpenAPI document."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from shared import apps
from shared.db import session_scope
from shared.models import DEFAULT_APP, Message, utcnow
from shared.settings import get_settings
from webhooks.app import create_app

BOOTSTRAP_KEY = "stats-key"


@pytest.fixture
def client(temp_db, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    monkeypatch.setenv("SWITCHBOARD_API_KEYS", BOOTSTRAP_KEY)
    get_settings.cache_clear()
    app = create_app()
    app.config["TESTING"] = True
    yield app.test_client()
    get_settings.cache_clear()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def login(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{key}".encode()).decode()}


def add_message(app_id: str, status: str = "delivered") -> None:
    with session_scope() as session:
        session.add(Message(id=str(uuid.uuid4()), app_id=app_id, status=status,
                            recipient="+32470", route=["sms"], request={},
                            created_at=utcnow()))


def test_an_app_key_reads_its_own_apps_numbers(client: FlaskClient) -> None:
    with session_scope() as session:
        shop = apps.create(session, "shop")
    add_message(shop.app.id)
    add_message(DEFAULT_APP, "failed")
    mine = client.get("/v1/stats/overview?hours=24", headers=bearer(shop.api_key))
    assert mine.status_code == 200, mine.get_data(as_text=True)
    body = mine.get_json()
    assert body["app_id"] == shop.app.id and body["hours"] == 24
    assert body["messages"]["by_status"] == {"delivered": 1}
    everyone = client.get("/v1/stats/overview", headers=bearer(BOOTSTRAP_KEY)).get_json()
    assert everyone["app_id"] is None and everyone["messages"]["total"] == 2


def test_the_console_login_reads_the_same_endpoint(client: FlaskClient) -> None:
    add_message(DEFAULT_APP)
    response = client.get("/v1/stats/overview", headers=login(BOOTSTRAP_KEY))
    assert response.status_code == 200
    assert response.get_json()["messages"]["total"] == 1


@pytest.mark.parametrize("headers", [{}, bearer("nope"), login("nope"), login("")])
def test_unknown_credentials_are_a_json_401(client: FlaskClient, headers) -> None:
    response = client.get("/v1/stats/overview", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"


@pytest.mark.parametrize("hours", ["0", "721", "abc", "-5", "2.5"])
def test_bad_hours_is_a_422_naming_the_field(client: FlaskClient, hours: str) -> None:
    response = client.get(f"/v1/stats/overview?hours={hours}", headers=bearer(BOOTSTRAP_KEY))
    assert response.status_code == 422
    body = response.get_json()
    assert body["error"] == "validation_error"
    assert [e["field"] for e in body["errors"]] == ["hours"]


def test_documented_in_the_openapi_document(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    operation = document["paths"]["/v1/stats/overview"]["get"]
    assert [p["name"] for p in operation["parameters"]] == ["hours"]
    assert {"200", "401", "422"} <= set(operation["responses"])
