"""The console's flow designer and results (webhooks.designer) against a temporary database:
the live check answers every problem on its step with the rules of POST /v1/flows, saving
makes versions, older versions open read-only, a flow without a layout gets one, Try it
publishes one run start, results and CSV, and another app's flows are a 404 everywhere."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from shared import apps, tasknames
from shared.db import session_scope
from shared.models import FlowRun
from shared.uow import FollowUps
from tests.unit.conftest import clear_caches, tasks
from webhooks.app import create_app

KEY = "designer-key"
FLOW = {"name": "survey", "route": ["rogerthat"], "steps": [
    {"id": "q1", "type": "message", "text": "Did you like it?",
     "buttons": [{"id": "y", "caption": "Yes", "next": "why"},
                 {"id": "n", "caption": "No", "next": "done"}]},
    {"id": "why", "type": "question", "text": "Why?", "next": "done"},
    {"id": "done", "type": "end"}]}


def login(key: str = KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{key}".encode()).decode()}


@pytest.fixture()
def client(temp_db: Path, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    monkeypatch.setenv("SWITCHBOARD_API_KEYS", KEY)
    monkeypatch.setenv("SWITCHBOARD_ROGERTHAT_BRANDINGS", "b1=Blue,b2=Holiday")
    clear_caches()
    return create_app().test_client()


def post(client: FlaskClient, path: str, body: Any, key: str = KEY, **headers: str) -> Any:
    return client.post(path, data=json.dumps(body), headers={
        **login(key), "Content-Type": "application/json", **headers})


def page_data(response: Any) -> dict[str, Any]:
    """The JSON the page hands its script (``<script type="application/json">``)."""
    text = response.get_data(as_text=True)
    found = re.search(r'<script type="application/json" id="[a-z-]+">(.*?)</script>', text, re.S)
    assert found, text[:500]
    return json.loads(found.group(1))


def test_check_answers_every_problem_on_its_step(client: FlaskClient) -> None:
    broken = json.loads(json.dumps(FLOW))
    broken["steps"][0]["buttons"][1]["id"] = "y"  # duplicate button ids
    broken["steps"].append({"id": "lost", "type": "end"})  # unreachable
    answer = post(client, "/console/flows/check", {"definition": broken})
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["valid"] is False
    assert [(e["step"], e["field"]) for e in body["errors"]] == [
        ("q1", "steps.q1.buttons"), ("lost", "steps.lost")]
    # The same document through the API is refused with the first of them.
    api = client.post("/v1/flows", json=broken, headers={"Authorization": f"Bearer {KEY}"})
    assert api.status_code == 422 and api.get_json()["errors"][0]["field"] == "steps.q1.buttons"
    assert set(body["definition"]["layout"]) == {"q1", "why", "done", "lost"}


def test_check_names_the_step_of_a_missing_next_and_no_reachable_end(client) -> None:
    missing = json.loads(json.dumps(FLOW))
    del missing["steps"][1]["next"]
    errors = post(client, "/console/flows/check", {"definition": missing}).get_json()["errors"]
    assert errors == [{"field": "steps.1.question.next", "message": "Field required",
                       "step": "why"}]
    endless = {"name": "loop", "steps": [
        {"id": "a", "type": "question", "text": "?", "next": "a"}]}
    errors = post(client, "/console/flows/check", {"definition": endless}).get_json()["errors"]
    assert errors == [{"field": "steps", "message": "no end step is reachable from the start",
                       "step": None}]


def test_yaml_and_canvas_round_trip(client: FlaskClient) -> None:
    first = post(client, "/console/flows/check", {"definition": FLOW}).get_json()
    assert first["valid"] is True and first["errors"] == []
    back = post(client, "/console/flows/check", {"document": first["document"]}).get_json()
    assert back["valid"] is True
    assert back["definition"]["steps"] == FLOW["steps"]
    assert back["definition"]["layout"] == first["definition"]["layout"]


def test_check_refuses_unreadable_yaml_naming_the_problem(client: FlaskClient) -> None:
    body = post(client, "/console/flows/check", {"document": "name: [unclosed"}).get_json()
    assert body["valid"] is False and body["definition"] is None
    assert body["errors"][0]["field"] == "body" and "line" in body["errors"][0]["message"]
    assert post(client, "/console/flows/check", {}).get_json()["errors"][0][
        "field"] == "definition"


def test_writes_need_json_from_this_origin(client: FlaskClient) -> None:
    form = client.post("/console/flows", data={"definition": "x"}, headers=login())
    assert form.status_code == 415
    cross = post(client, "/console/flows", {"definition": FLOW}, Origin="https://evil.example")
    assert cross.status_code == 403
    same = post(client, "/console/flows", {"definition": FLOW}, Origin="http://localhost")
    assert same.status_code == 201
    assert client.post("/console/flows/check", json={"definition": FLOW}).status_code == 401


def test_saving_makes_versions_and_old_ones_open_read_only(client: FlaskClient) -> None:
    laid_out = {**FLOW, "layout": {"q1": {"x": 11, "y": 22}}}
    first = post(client, "/console/flows", {"definition": laid_out})
    assert first.status_code == 201
    assert first.get_json() == {"name": "survey", "version": 1,
                                "url": "/console/flows/survey/edit",
                                "results": "/console/flows/survey"}
    yaml_text = post(client, "/console/flows/check", {"definition": FLOW}).get_json()["document"]
    assert post(client, "/console/flows", {"document": yaml_text}).get_json()["version"] == 2
    latest = page_data(client.get("/console/flows/survey/edit", headers=login()))
    assert latest["mode"] == "edit" and latest["version"] == 2 and latest["latest"] == 2
    assert [v["version"] for v in latest["versions"]] == [1, 2]
    old = page_data(client.get("/console/flows/survey/edit?version=1", headers=login()))
    assert old["mode"] == "readonly" and old["definition"]["layout"]["q1"] == {"x": 11, "y": 22}
    assert old["brandings"] == [{"id": "b1", "label": "Blue"}, {"id": "b2", "label": "Holiday"}]
    assert client.get("/console/flows/survey/edit?version=9", headers=login()).status_code == 404


def test_saving_an_invalid_flow_is_a_422_on_its_step(client: FlaskClient) -> None:
    broken = {**FLOW, "steps": [*FLOW["steps"], {"id": "lost", "type": "end"}]}
    answer = post(client, "/console/flows", {"definition": broken})
    assert answer.status_code == 422
    assert answer.get_json()["errors"] == [{"field": "steps.lost", "step": "lost",
                                            "message": "no path from the start reaches "
                                                       "this step"}]


def test_a_flow_loaded_without_a_layout_opens_with_a_generated_one(client: FlaskClient) -> None:
    yaml_doc = "name: plain\nroute: [sms]\nsteps:\n  - {id: ask, type: question, text: Hello, " \
               "next: done}\n  - {id: done, type: end}\n"
    saved = client.post("/v1/flows", data=yaml_doc, headers={
        "Authorization": f"Bearer {KEY}", "Content-Type": "application/yaml"})
    assert saved.status_code == 201
    data = page_data(client.get("/console/flows/plain/edit", headers=login()))
    assert data["definition"]["layout"] == {"ask": {"x": 40, "y": 40},
                                            "done": {"x": 320, "y": 40}}


def test_try_starts_one_run_and_the_run_can_be_polled(client: FlaskClient,
                                                      published: list[FollowUps]) -> None:
    post(client, "/console/flows", {"definition": FLOW})
    answer = post(client, "/console/flows/survey/try",
                  {"contact": {"to": {"email": "tester@example.com"}}, "version": 1})
    assert answer.status_code == 202, answer.get_data(as_text=True)
    run_id = answer.get_json()["run_id"]
    assert tasks(published) == [(tasknames.START_FLOW_RUN, (run_id,))]
    with session_scope() as session:
        assert session.get(FlowRun, run_id).trigger == "console"
    polled = client.get(answer.get_json()["url"], headers=login()).get_json()
    assert polled["run_id"] == run_id and polled["status"] == "starting"
    assert "current_step" in polled


@pytest.mark.parametrize(("body", "field"), [
    ({"contact": {"to": {}}}, "contact"),
    ({"contact": {"to": {"phone": "12"}}}, "contact.to.phone"),
    ({"contact": {"to": {"email": "a@example.com"}}, "version": 0}, "version")])
def test_try_refuses_a_bad_contact_naming_the_field(client: FlaskClient, body, field) -> None:
    post(client, "/console/flows", {"definition": FLOW})
    answer = post(client, "/console/flows/survey/try", body)
    assert answer.status_code == 422
    assert any(e["field"].startswith(field) for e in answer.get_json()["errors"]), answer.get_json()


def test_results_page_and_csv(client: FlaskClient, published: list[FollowUps]) -> None:
    post(client, "/console/flows", {"definition": FLOW})
    run_id = post(client, "/console/flows/survey/try",
                  {"contact": {"to": {"email": "tester@example.com"}}}).get_json()["run_id"]
    with session_scope() as session:
        run = session.get(FlowRun, run_id)
        run.status, run.end_id = "finished", "done"
        run.steps = [{"step_id": "q1", "answer": {"button_id": "n", "caption": "No"},
                      "outcome": "answered"}]
    page = client.get("/console/flows/survey", headers=login())
    assert page.status_code == 200
    data = page_data(page)
    q1 = data["versions"][0]["steps"][0]
    assert q1["step"] == "q1" and q1["type"] == "message" and q1["answers"]["n"]["count"] == 1
    assert data["versions"][0]["finished"] == 1
    body = page.get_data(as_text=True)
    assert 'id="chart-1-q1"' in body and 'id="funnel-1"' in body
    exported = client.get("/console/flows/survey/results.csv", headers=login())
    assert exported.content_type.startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.get_data(as_text=True))))
    assert rows[0][-2:] == ["q1", "why"]
    assert rows[1][0] == run_id and rows[1][4] == "finished" and rows[1][-2] == "No (n)"


def test_another_apps_flows_are_not_found(client: FlaskClient,
                                          published: list[FollowUps]) -> None:
    post(client, "/console/flows", {"definition": FLOW})
    run_id = post(client, "/console/flows/survey/try",
                  {"contact": {"to": {"email": "tester@example.com"}}}).get_json()["run_id"]
    with session_scope() as session:
        other = apps.create(session, "other").api_key
    for path in ("/console/flows/survey", "/console/flows/survey/edit",
                 "/console/flows/survey/results.csv", f"/console/flow-runs/{run_id}"):
        assert client.get(path, headers=login(other)).status_code == 404, path
    before = len(tasks(published))
    tried = post(client, "/console/flows/survey/try",
                 {"contact": {"to": {"email": "x@example.com"}}}, key=other)
    assert tried.status_code == 404 and len(tasks(published)) == before
    # Its own save of the same name is its own flow, version 1.
    assert post(client, "/console/flows", {"definition": FLOW}, key=other).get_json()[
        "version"] == 1
    assert post(client, "/console/flows", {"definition": FLOW}).get_json()["version"] == 2


def test_new_designer_page(client: FlaskClient) -> None:
    response = client.get("/console/flows/new", headers=login())
    data = page_data(response)
    assert data["mode"] == "new" and data["definition"]["steps"] == []
    assert data["step_types"] == ["message", "question", "flush", "end"]
    body = response.get_data(as_text=True)
    for kind in ("message", "question", "flush", "end"):
        assert f'id="palette-{kind}"' in body
    assert "/console/static/vendor/drawflow/drawflow.min.js" in body
