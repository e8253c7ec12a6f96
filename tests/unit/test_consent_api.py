"""The consent API (webhooks/consent.py): read and change an address, page through opt-outs,
import a CSV suppression list; bad input is a 4xx naming the field; apps read only their own
history and list only what they changed, and cannot undo another app's opt-out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from shared import apps
from shared.db import session_scope
from shared.uow import FollowUps
from tests.unit.test_api import AUTH, client  # noqa: F401  (the fixture)

URL = "/v1/consent/sms/+32470123456"


@pytest.fixture()
def shop(client: FlaskClient) -> Iterator[dict[str, str]]:  # noqa: F811
    with session_scope() as session:
        key = apps.create(session, "shop").api_key
    yield {"Authorization": f"Bearer {key}"}


def test_an_address_never_recorded_is_opted_in(client: FlaskClient) -> None:  # noqa: F811
    body = client.get(URL, headers=AUTH).get_json()
    assert body == {"channel": "sms", "account": "", "address": "32470123456",
                    "status": "opted_in", "categories": [], "recorded": False, "history": []}


def test_put_opts_out_and_the_history_records_who(client: FlaskClient,  # noqa: F811
                                                  published: list[FollowUps]) -> None:
    put = client.put(URL, json={"status": "opted_out", "categories": ["marketing"]},
                     headers=AUTH)
    assert put.status_code == 200 and put.get_json()["changed"] is True
    body = client.get("/v1/consent/sms/32470123456", headers=AUTH).get_json()
    assert (body["status"], body["categories"], body["source"]) == (
        "opted_out", ["marketing"], "api")
    assert [(h["status"], h["source"], h["app_id"]) for h in body["history"]] == [
        ("opted_out", "api", "default")]
    again = client.put(URL, json={"status": "opted_out", "categories": ["marketing"]},
                       headers=AUTH)
    assert again.get_json()["changed"] is False


@pytest.mark.parametrize(("url", "body", "status", "field"), [
    ("/v1/consent/pigeon/1", {"status": "opted_out"}, 422, "channel"),
    ("/v1/consent/sms/not-a-phone", {"status": "opted_out"}, 422, "address"),
    (URL, {"status": "maybe"}, 422, "status"),
    (URL, {"status": "opted_out", "categories": [""]}, 422, "categories"),
    (URL, {"status": "opted_out", "extra": 1}, 422, "extra"),
    (URL, [1], 400, "body"),
])
def test_bad_input_is_refused_naming_the_field(client: FlaskClient, url: str,  # noqa: F811
                                               body: object, status: int, field: str) -> None:
    response = client.put(url, json=body, headers=AUTH)
    assert response.status_code == status
    assert field in [e["field"].split(".")[0] for e in response.get_json()["errors"]]


def test_opting_in_to_a_category_of_a_full_opt_out_is_a_409(
        client: FlaskClient) -> None:  # noqa: F811
    client.put(URL, json={"status": "opted_out"}, headers=AUTH)
    refused = client.put(URL, json={"status": "opted_in", "categories": ["news"]},
                         headers=AUTH)
    assert refused.status_code == 409
    assert refused.get_json()["errors"][0]["field"] == "categories"


def test_the_list_pages_through_opt_outs(client: FlaskClient) -> None:  # noqa: F811
    for n in range(3):
        client.put(f"/v1/consent/sms/+3247012340{n}", json={"status": "opted_out"},
                   headers=AUTH)
    client.put("/v1/consent/sms/+32470123409", json={"status": "opted_in"}, headers=AUTH)
    first = client.get("/v1/consent?status=opted_out&limit=2", headers=AUTH).get_json()
    rest = client.get(f"/v1/consent?status=opted_out&after={first['next']}",
                      headers=AUTH).get_json()
    addresses = [c["address"] for c in first["consents"] + rest["consents"]]
    assert addresses == ["32470123400", "32470123401", "32470123402"]
    assert client.get("/v1/consent?status=gone", headers=AUTH).status_code == 422
    assert client.get("/v1/consent?limit=x", headers=AUTH).status_code == 422


def test_a_csv_list_is_imported_or_refused_naming_the_cell(client: FlaskClient) -> None:  # noqa: F811
    csv = "channel,address,categories\nsms,+32470123456,\nviber,+32470123457,marketing\n"
    imported = client.post("/v1/consent/import", data=csv, content_type="text/csv",
                           headers=AUTH)
    assert imported.status_code == 200
    assert imported.get_json() == {"rows": 2, "changed": 2, "skipped": 0}
    viber = client.get("/v1/consent/viber/32470123457", headers=AUTH).get_json()
    assert (viber["status"], viber["categories"], viber["source"]) == (
        "opted_out", ["marketing"], "import")
    bad = client.post("/v1/consent/import", data="channel,address\nsms,nope\n",
                      content_type="text/csv", headers=AUTH)
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["field"] == "rows.0.address"
    assert client.post("/v1/consent/import", json={"a": 1}, headers=AUTH).status_code == 400


def test_apps_share_the_status_but_not_each_others_history(client: FlaskClient,  # noqa: F811
                                                           shop: dict[str, str]) -> None:
    client.put(URL, json={"status": "opted_out"}, headers=shop)
    seen_by_default = client.get(URL, headers=AUTH).get_json()
    other = "/v1/consent/sms/+32470999999"
    client.put(other, json={"status": "opted_out"}, headers=AUTH)
    seen_by_shop = client.get(other, headers=shop).get_json()
    assert seen_by_shop["status"] == "opted_out"  # it decides whether shop's SMS go
    assert seen_by_shop["history"][0]["app_id"] is None  # but whose change it was is not its
    assert seen_by_default["history"][0]["app_id"] not in (None, "default")  # the operator's
    listed = client.get("/v1/consent", headers=shop).get_json()["consents"]
    assert [c["address"] for c in listed] == ["32470123456"]  # only what it changed


def test_an_app_cannot_opt_in_what_another_app_opted_out(client: FlaskClient,  # noqa: F811
                                                        shop: dict[str, str]) -> None:
    client.put(URL, json={"status": "opted_out"}, headers=AUTH)
    refused = client.put(URL, json={"status": "opted_in"}, headers=shop)
    assert refused.status_code == 409 and refused.get_json()["errors"][0]["field"] == "status"
    assert client.put(URL, json={"status": "opted_in"}, headers=AUTH).status_code == 200
