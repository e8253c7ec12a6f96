"""Templates through the real stack: saved over HTTP (shared.client), rendered once at accept,
and what the gateway simulator receives is the rendered text, on the fallback hop too."""

from __future__ import annotations

import uuid

import pytest

from shared import client
from tests.integration.conftest import API_KEY, Stack, wait_for

pytestmark = pytest.mark.integration

TEMPLATE = """
name: parcel_ready
default_locale: en
locales:
  en:
    text: "Parcel {{ parcel.id }} is ready"
  nl-BE:
    text: "Pakket {{ parcel.id }} ligt klaar: {{ parcel.fee | currency('EUR') }}"
    sms_text: "Pakket {{ parcel.id }} (SMS)"
"""


@pytest.fixture(scope="module")
def template(stack: Stack) -> dict:
    saved = client.load_template(TEMPLATE, api_url=stack.api_url, api_key=API_KEY)
    assert saved["name"] == "parcel_ready"
    return saved


def test_a_templated_message_falls_back_with_the_rendered_sms(stack: Stack,
                                                              template: dict) -> None:
    response = stack.post_message(to={"phone": "+32470120001"}, route=["viber", "sms"],
                                  template={"name": "parcel_ready", "locale": "nl-BE",
                                            "data": {"parcel": {"id": "P-9", "fee": 2.5}}})
    assert response.status_code == 202, response.text
    view = stack.wait_status(response.json()["id"], {"delivered"})
    assert view["template"] == {"name": "parcel_ready", "version": template["version"],
                                "locale": "nl-BE"}
    viber, sms = (stack.sim_messages(a["id"])[0] for a in view["attempts"])
    assert viber["txt"] == "Pakket P-9 ligt klaar: € 2,50"
    assert sms["txt"] == "Pakket P-9 (SMS)"


def test_the_broker_path_renders_at_accept(stack: Stack, template: dict) -> None:
    preview = client.preview_template("parcel_ready", {"parcel": {"id": "Q-1"}},
                                      locale="fr-BE", api_url=stack.api_url, api_key=API_KEY)
    assert (preview["locale"], preview["sms"]["segments"]) == ("en", 1)
    message_id = client.send(to={"phone": "+32470120000"}, route=["viber", "sms"],
                             idempotency_key=f"tpl-{uuid.uuid4()}",
                             template={"name": "parcel_ready", "locale": "fr-BE",
                                       "data": {"parcel": {"id": "Q-1"}}})
    view = wait_for(lambda: (v := stack.get_message(message_id)) and v["attempts"]
                    and stack.sim_messages(v["attempts"][0]["id"]) and v, 30,
                    message="the templated message at the gateway")
    assert stack.sim_messages(view["attempts"][0]["id"])[0]["txt"] == (
        preview["channels"]["viber"]["text"]) == "Parcel Q-1 is ready"


def test_the_broker_path_refuses_a_missing_placeholder_without_sending(stack: Stack,
                                                                       template: dict) -> None:
    message_id = client.send(to={"phone": "+32470120000"}, route=["viber", "sms"],
                             template={"name": "parcel_ready", "data": {}})
    view = stack.wait_status(message_id, {"failed"})
    assert view["reason"] == "template_error" and view["attempts"] == []
    failed = [e for e in view["events"] if e["type"] == "status"][0]
    assert failed["detail"]["errors"][0]["field"] == "template.data.parcel.id"
