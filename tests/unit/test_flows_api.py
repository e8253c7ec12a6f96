"""The flows API's edges against a temporary database: versions, refusals that name the field,
launches that publish one start per run, action links that refuse forgeries and reuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from shared import tasknames
from shared.uow import FollowUps, Task
from tests.unit.conftest import tasks
from webhooks.app import create_app

AUTH = {"Authorization": "Bearer flows-key"}
FLOW = {"name": "survey", "route": ["sms"], "steps": [
    {"id": "q1", "type": "message", "text": "Did you like it?",
     "buttons": [{"id": "y", "caption": "Yes", "next": "done"},
                 {"id": "n", "caption": "No", "next": "done"}]},
    {"id": "done", "type": "end"}]}


@pytest.fixture()
def api(temp_db: Path, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    monkeypatch.setenv("SWITCHBOARD_API_KEYS", "flows-key")
    from tests.unit.conftest import clear_caches

    clear_caches()
    return create_app().test_client()


def _save(api: FlaskClient, body: Any = None) -> Any:
    return api.post("/v1/flows", json=body or FLOW, headers=AUTH)


def test_saving_again_makes_a_new_version(api: FlaskClient) -> None:
    assert _save(api).get_json() == {"name": "survey", "version": 1}
    assert _save(api).get_json() == {"name": "survey", "version": 2}
    yaml_doc = "name: survey\nroute: [sms]\nsteps:\n  - {id: done, type: end}\n"
    saved = api.post("/v1/flows", data=yaml_doc, headers={**AUTH,
                                                          "Content-Type": "application/yaml"})
    assert saved.status_code == 201 and saved.get_json()["version"] == 3
    assert api.get("/v1/flows/survey?version=1", headers=AUTH).get_json()["definition"][
        "steps"][0]["id"] == "q1"
    assert [f["version"] for f in api.get("/v1/flows", headers=AUTH).get_json()["flows"]] == [3]


@pytest.mark.parametrize(("change", "field"), [
    ({"start": "missing"}, "start"),
    ({"steps": [{**FLOW["steps"][0], "buttons": [
        {"id": "y", "caption": "Yes", "next": "done"},
        {"id": "y", "caption": "Yep", "next": "done"}]}, FLOW["steps"][1]]}, "steps.q1.buttons"),
    ({"steps": [FLOW["steps"][0], FLOW["steps"][1], {"id": "orphan", "type": "end"}]},
     "steps.orphan"),
])
def test_invalid_definitions_name_the_step(api: FlaskClient, change: dict, field: str) -> None:
    answer = _save(api, {**FLOW, **change})
    assert answer.status_code == 422
    assert field in [e["field"] for e in answer.get_json()["errors"]]


def test_unreadable_document_is_400(api: FlaskClient) -> None:
    answer = api.post("/v1/flows", data="{oops", headers={**AUTH,
                                                          "Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.get_json()["errors"][0]["field"] == "body"


def test_start_publishes_one_start_per_run(api: FlaskClient, published: list[FollowUps]) -> None:
    _save(api)
    answer = api.post("/v1/flows/survey/start", headers=AUTH, json={"contacts": [
        {"to": {"phone": "+32470123456"}}, {"to": {"phone": "+32470123457"}}]})
    assert answer.status_code == 202
    runs = [r["id"] for r in answer.get_json()["runs"]]
    assert published == [FollowUps(tasks=[Task(tasknames.START_FLOW_RUN, (r,))
                                       for r in runs])]
    shown = api.get(f"/v1/flow-runs/{runs[0]}", headers=AUTH).get_json()
    assert shown["status"] == "starting" and shown["flow"] == {"name": "survey", "version": 1}


def test_start_refuses_a_contact_the_route_cannot_reach(api: FlaskClient,
                                                        published: list[FollowUps]) -> None:
    _save(api)
    answer = api.post("/v1/flows/survey/start", headers=AUTH, json={"contacts": [
        {"to": {"phone": "+32470123456"}}, {"to": {"email": "a@example.com"}}]})
    assert answer.status_code == 422
    assert answer.get_json()["errors"][0]["field"] == "contacts.1.to.phone"
    assert published == []
    assert api.post("/v1/flows/nope/start", headers=AUTH, json={
        "contacts": [{"to": {"phone": "+32470123456"}}]}).status_code == 404


def test_action_link_single_use_and_forgery(api: FlaskClient, published: list[FollowUps]) -> None:
    _save(api)
    made = api.post("/v1/flows/survey/links", headers=AUTH,
                    json={"contact": {"to": {"phone": "+32470123456"}}}).get_json()
    path = "/l/" + made["token"]
    first = api.get(path, headers={"Accept": "application/json"})
    assert first.status_code == 200 and tasks(published) == [
        (tasknames.START_FLOW_RUN, (first.get_json()["run_id"],))]
    assert api.get(path).status_code == 410
    link_id = made["token"].split(".")[0]
    assert api.get(f"/l/{link_id}.forged").status_code == 404
    assert "<script" not in api.get("/l/x.<script>").get_data(as_text=True)


def test_other_apps_cannot_see_a_run(api: FlaskClient, published: list[FollowUps]) -> None:
    _save(api)
    run = api.post("/v1/flows/survey/start", headers=AUTH, json={
        "contacts": [{"to": {"phone": "+32470123456"}}]}).get_json()["runs"][0]["id"]
    assert api.get(f"/v1/flow-runs/{run}").status_code == 401
    assert api.get(f"/v1/flow-runs/{run}x", headers=AUTH).status_code == 404


def test_a_launch_carries_its_timing_and_category_to_the_steps_messages(
        api: FlaskClient, published: list[FollowUps]) -> None:
    """The first step waits for send_at (scheduled, no dispatch); every step's message keeps
    valid_until, quiet hours, priority and category."""
    from datetime import UTC, datetime, timedelta

    from shared.db import session_scope
    from shared.flows import runtime
    from shared.models import Message
    from shared.uow import unit_of_work

    _save(api)
    later = datetime.now(UTC) + timedelta(hours=1)
    answer = api.post("/v1/flows/survey/start", headers=AUTH, json={
        "contacts": [{"to": {"phone": "+32470123456"}}], "send_at": later.isoformat(),
        "ttl_seconds": 600, "priority": "critical", "category": "surveys"})
    assert answer.status_code == 202
    run_id = answer.get_json()["runs"][0]["id"]
    assert [t.queue for f in published for t in f.tasks] == [tasknames.CRITICAL_QUEUE]
    published.clear()
    with unit_of_work() as work:
        run = runtime.begin(work.session, run_id, work.followups)
        assert run is not None
        message_id = run.current_message_id
    assert tasks(published) == []  # the first step is scheduled: the sweep releases it
    with session_scope() as session:
        message = session.get_one(Message, message_id)
        assert message.status == "scheduled" and message.priority == "critical"
        assert message.send_at is not None
        assert abs((message.send_at - later.replace(tzinfo=None)).total_seconds()) < 1
        assert message.valid_until == message.send_at + timedelta(seconds=600)
        assert message.request["category"] == "surveys"


def test_a_launch_for_all_skips_friends_who_opted_out(
        api: FlaskClient, published: list[FollowUps]) -> None:
    from shared import consent
    from shared.db import session_scope
    from shared.flows import runtime
    from shared.flows.definition import FlowDefinition
    from shared.models import Contact

    definition = FlowDefinition.model_validate({**FLOW, "route": ["rogerthat"]})
    with session_scope() as session:
        for email in ("ann@example.com", "bob@example.com"):
            session.add(Contact(channel="rogerthat", address=email, app_id="rogerthat",
                                status="friend"))
        session.flush()
        consent.change(session, "rogerthat", "rogerthat", "bob@example.com",
                       consent.Change(consent.OPTED_OUT, source=consent.API))
        session.commit()
        everyone = runtime.consenting_contacts(session, definition)
    assert [c["to"]["email"] for c in everyone] == ["ann@example.com"]
