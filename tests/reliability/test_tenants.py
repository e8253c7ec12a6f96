"""Tenant isolation: one app's key never reaches another app's resources.

Two apps are created through the real CLI (``switchboard apps create``). App A creates one of
each kind of resource (a message, its events, a campaign, a flow with a run and a link, an
in-app conversation, a messenger contact); app B's key then gets 404 on every detail URL and
never sees them in any list. The cases are checked against the Flask url_map: every ``/v1``
GET route, every ``/v1`` POST route that names a resource in its path and every console page
must have a case here, so a new endpoint without one fails ``test_every_route_has_a_case``.

Then the leaks issue 14 found, each through the path production takes: contacts listed per
app, invitations and break-ups told to the app that asked, keyword and poke triggers owned by
one app (a second app saving the same trigger is a 409), and an in-app agent text matched to
flow runs within its conversation's app only.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from shared import conversations, feed, handlers, uow
from shared.cli import main as cli_main
from shared.db import session_scope
from shared.flows import runtime
from shared.models import Flow, FlowRun
from shared.providers.base import ProviderEvent
from shared.schemas import ConversationRef
from tests.reliability.conftest import AUTH, Recorder

EMAIL_A = "alice@tenant-a.example"
PHONE_A = "+32470120001"
CONSUMER = "consumer-shared-1"  # both apps talk to a consumer of this id
OPTED_OUT_A = "32470120077"  # app A opted this phone out of SMS (the registry is shared)
SMS_FLOW = {"name": "survey-a", "route": ["sms"], "steps": [
    {"id": "q1", "type": "message", "text": "Did you like it?",
     "buttons": [{"id": "y", "caption": "Yes", "next": "done"},
                 {"id": "n", "caption": "No", "next": "done"}]},
    {"id": "done", "type": "end"}]}
TEMPLATE_A = {"name": "tpl-of-a", "locales": {"en": {"text": "Hi {{ name }}"}}}


@pytest.fixture(autouse=True)
def _recorded_publishing(published: Recorder) -> Iterator[None]:
    """Every follow-up (the web's, the handlers', the worker task's) into the recorder: the
    worker's app, once imported, would install its own publisher and dial the broker."""
    from worker.tasks import messenger  # installs the worker's publisher: replaced below

    assert messenger.invite is not None

    def record(followups: uow.FollowUps) -> None:
        published.calls.extend((task.name, tuple(task.args)) for task in followups.tasks)

    previous = uow.set_publisher(record)
    yield
    uow.set_publisher(previous)


@dataclass
class Tenant:
    id: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class World:
    """App A's resources, and both apps."""

    a: Tenant
    b: Tenant
    message: str
    campaign: str
    flow: str
    run: str
    conversation: str


def create_app_by_cli(name: str) -> Tenant:
    """``switchboard apps create <name>`` as a user runs it; its printed id and key."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["apps", "create", name]) == 0
    text = out.getvalue()
    app_id = re.search(r"app id:\s+(\S+)", text)
    key = re.search(r"api key:\s+(\S+)", text)
    assert app_id and key, text
    return Tenant(app_id.group(1), key.group(1))


def _post(client: Any, path: str, body: dict[str, Any], auth: dict[str, str]) -> dict[str, Any]:
    resp = client.post(path, json=body, headers=auth)
    assert resp.status_code in (200, 201, 202), (path, resp.status_code, resp.get_data()[:300])
    return resp.get_json()


def _conversation_of(app_id: str) -> str:
    """The conversation the engine makes when the app's first in-app hop is sent."""
    with session_scope() as session:
        ref = ConversationRef(consumer_id=CONSUMER, session_id=f"s-{app_id[:8]}")
        return conversations.resolve(session, app_id, ref, "adv-1").id


@pytest.fixture(scope="module")
def world(app: Flask, published: Recorder) -> World:
    a, b = create_app_by_cli("tenant-a"), create_app_by_cli("tenant-b")
    client = app.test_client()
    message = _post(client, "/v1/messages", {"to": {"email": EMAIL_A}, "route": ["rogerthat"],
                                             "text": "hello from A"}, a.auth)["id"]
    campaign = _post(client, "/v1/campaigns", {"route": ["sms"], "text": "sale",
                                               "recipients": [{"phone": PHONE_A}]},
                     a.auth)["id"]
    flow = _post(client, "/v1/flows", SMS_FLOW, a.auth)["name"]
    _post(client, "/v1/templates", TEMPLATE_A, a.auth)
    run = _post(client, f"/v1/flows/{flow}/start", {"contacts": [{"to": {"phone": PHONE_A}}]},
                a.auth)["runs"][0]["id"]
    _post(client, f"/v1/flows/{flow}/links", {"contact": {"to": {"phone": PHONE_A}}}, a.auth)
    conversation = _conversation_of(a.id)
    resp = client.put(f"/v1/consent/sms/{OPTED_OUT_A}", json={"status": "opted_out"},
                      headers=a.auth)
    assert resp.status_code == 200, resp.get_data()[:300]
    with session_scope() as session:
        feed.number_events(session)
    return World(a, b, message, campaign, flow, run, conversation)


# --------------------------------------------------------------------------------------
# The matrix
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """``detail``: B gets 404 where A gets 2xx. ``listing``: A's answer names ``marker`` and
    B's never does."""

    method: str
    url: Callable[[World], str]
    marker: Callable[[World], str] | None = None  # None: a detail URL
    body: Callable[[World], dict[str, Any]] | None = None


CASES: dict[tuple[str, str], Case] = {
    ("GET", "/v1/messages/<message_id>"): Case("GET", lambda w: f"/v1/messages/{w.message}"),
    ("GET", "/v1/campaigns/<campaign_id>"):
        Case("GET", lambda w: f"/v1/campaigns/{w.campaign}"),
    ("GET", "/v1/flows/<name>"): Case("GET", lambda w: f"/v1/flows/{w.flow}"),
    ("GET", "/v1/flows/<name>/stats"): Case("GET", lambda w: f"/v1/flows/{w.flow}/stats"),
    ("GET", "/v1/flow-runs/<run_id>"): Case("GET", lambda w: f"/v1/flow-runs/{w.run}"),
    ("GET", "/v1/conversations/<key>"):
        Case("GET", lambda w: f"/v1/conversations/{w.conversation}"),
    ("GET", "/console/messages/<message_id>"):
        Case("GET", lambda w: f"/console/messages/{w.message}"),
    ("POST", "/v1/messages/<message_id>/seal"):
        Case("POST", lambda w: f"/v1/messages/{w.message}/seal", body=lambda w: {}),
    ("POST", "/v1/flows/<name>/start"):
        Case("POST", lambda w: f"/v1/flows/{w.flow}/start",
             body=lambda w: {"contacts": [{"to": {"phone": "+32470120009"}}]}),
    ("POST", "/v1/flows/<name>/links"):
        Case("POST", lambda w: f"/v1/flows/{w.flow}/links",
             body=lambda w: {"contact": {"to": {"phone": "+32470120009"}}}),
    ("GET", "/v1/contacts"): Case("GET", lambda w: "/v1/contacts", lambda w: EMAIL_A),
    ("GET", "/v1/events"): Case("GET", lambda w: "/v1/events", lambda w: w.message),
    ("GET", "/v1/flows"): Case("GET", lambda w: "/v1/flows", lambda w: w.flow),
    ("GET", "/v1/conversations"):
        Case("GET", lambda w: f"/v1/conversations?consumer_id={CONSUMER}",
             lambda w: w.conversation),
    ("GET", "/console/messages"):
        Case("GET", lambda w: "/console/messages", lambda w: w.message),
    ("GET", "/console/flows"): Case("GET", lambda w: "/console/flows", lambda w: w.flow),
    ("GET", "/v1/templates/<name>"): Case("GET", lambda w: "/v1/templates/tpl-of-a"),
    ("POST", "/v1/templates/<name>/preview"):
        Case("POST", lambda w: "/v1/templates/tpl-of-a/preview",
             body=lambda w: {"data": {"name": "Ann"}}),
    ("GET", "/v1/templates"): Case("GET", lambda w: "/v1/templates", lambda w: "tpl-of-a"),
    ("GET", "/console/templates/<name>"): Case("GET", lambda w: "/console/templates/tpl-of-a"),
    ("GET", "/console/templates"):
        Case("GET", lambda w: "/console/templates", lambda w: "tpl-of-a"),
    ("GET", "/console/flows/<name>"): Case("GET", lambda w: f"/console/flows/{w.flow}"),
    ("GET", "/console/flows/<name>/edit"):
        Case("GET", lambda w: f"/console/flows/{w.flow}/edit"),
    ("GET", "/console/flows/<name>/results.csv"):
        Case("GET", lambda w: f"/console/flows/{w.flow}/results.csv"),
    ("POST", "/console/flows/<name>/try"):
        Case("POST", lambda w: f"/console/flows/{w.flow}/try",
             body=lambda w: {"contact": {"to": {"phone": "+32470120009"}}}),
    ("GET", "/console/flow-runs/<run_id>"): Case("GET", lambda w: f"/console/flow-runs/{w.run}"),
    # The consent registry is the provider account's: B reads the status (it decides
    # whether B's messages go) but never who changed it, and lists only its own changes.
    ("GET", "/v1/consent/<channel>/<address>"):
        Case("GET", lambda w: f"/v1/consent/sms/{OPTED_OUT_A}", lambda w: w.a.id),
    ("GET", "/v1/consent"): Case("GET", lambda w: "/v1/consent", lambda w: OPTED_OUT_A),
    ("GET", "/console/consent/<channel>/<address>"):
        Case("GET", lambda w: f"/console/consent/sms/{OPTED_OUT_A}", lambda w: w.a.id),
    # Cancels (time-aware delivery): A cancels its own message and campaign (nothing of them
    # was sent here: no worker runs), B's attempt is a 404 that changes nothing. They sort
    # before the GETs, which then read the cancelled message and campaign, still A's alone.
    ("DELETE", "/v1/messages/<message_id>"):
        Case("DELETE", lambda w: f"/v1/messages/{w.message}"),
    ("DELETE", "/v1/campaigns/<campaign_id>"):
        Case("DELETE", lambda w: f"/v1/campaigns/{w.campaign}"),
    ("POST", "/console/messages/<message_id>/cancel"):
        Case("POST", lambda w: f"/console/messages/{w.message}/cancel", body=lambda w: {}),
}
# Routes that name no stored resource of an app: creating one, replaying one's own events.
NOT_LOOKUPS = {("POST", "/v1/messages"), ("POST", "/v1/campaigns"), ("POST", "/v1/flows"),
               ("POST", "/v1/events/replay"), ("POST", "/v1/contacts/rogerthat/<action>"),
               ("POST", "/v1/templates"), ("POST", "/console/templates"),
               ("POST", "/console/templates/preview"), ("GET", "/console/templates/new")}
# Any app may opt an address out of the shared registry; opting in what another app opted
# out is a 409 (tests/unit/test_consent_api.py). An import creates, it names nothing.
NOT_LOOKUPS |= {("PUT", "/v1/consent/<channel>/<address>"), ("POST", "/v1/consent/import")}
# The console's pages and checks that name no stored resource: the dashboard (its numbers
# come from /v1/stats/overview), a blank designer, checking or saving a flow of one's own,
# the static files.
NOT_LOOKUPS |= {("GET", "/console"), ("GET", "/console/"), ("GET", "/console/flows/new"),
                ("POST", "/console/flows"), ("POST", "/console/flows/check"),
                ("GET", "/console/static/<path:filename>")}
# The caller's own settings (its default quiet hours): there is no other app's to name.
NOT_LOOKUPS |= {("GET", "/v1/app"), ("PATCH", "/v1/app")}
# Routes that answer counts, not resources: checked by test_stats_count_only_the_own_app.
AGGREGATES = {("GET", "/v1/stats/overview")}


def _tenant_routes(app: Flask) -> set[tuple[str, str]]:
    """Every (method, rule) an app's key can call: the /v1 API and the console."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(("/v1/", "/console")):
            found.update((m, rule.rule) for m in rule.methods - {"HEAD", "OPTIONS"})
    return found


def test_every_route_has_a_case(app: Flask) -> None:
    """A new tenant route must say how it is isolated: a case here (or a reason above)."""
    assert _tenant_routes(app) - NOT_LOOKUPS - AGGREGATES == set(CASES)


def test_stats_count_only_the_own_app(app: Flask, world: World) -> None:
    """A's message and campaign are in A's overview; B's overview counts none of them."""
    client = app.test_client()
    own = client.get("/v1/stats/overview", headers=world.a.auth).get_json()
    other = client.get("/v1/stats/overview", headers=world.b.auth).get_json()
    assert own["app_id"] == world.a.id and own["messages"]["total"] >= 2
    assert {f["route"] for f in own["fallback"]} >= {"rogerthat", "sms"}
    assert other["app_id"] == world.b.id and world.a.id not in json.dumps(other)
    assert other["messages"]["total"] == 0 and other["fallback"] == []


def _call(client: Any, case: Case, world: World, auth: dict[str, str]) -> Any:
    body = case.body(world) if case.body else None
    return client.open(case.url(world), method=case.method, headers=auth, json=body)


@pytest.mark.parametrize("route", sorted(CASES), ids=lambda r: f"{r[0]} {r[1]}")
def test_second_app_never_reaches_the_first_apps_resources(
        app: Flask, world: World, published: Recorder, route: tuple[str, str]) -> None:
    case, client = CASES[route], app.test_client()
    own = _call(client, case, world, world.a.auth)
    assert own.status_code < 300, (own.status_code, own.get_data()[:300])
    before = len(published.calls)
    other = _call(client, case, world, world.b.auth)
    text = other.get_data(as_text=True)
    if case.marker is None:
        assert other.status_code == 404, (other.status_code, text[:300])
        assert len(published.calls) == before  # nothing was set in motion for B
    else:
        assert case.marker(world) in own.get_data(as_text=True)  # the case can fail
        assert other.status_code == 200, (other.status_code, text[:300])
        assert case.marker(world) not in text
    for secret in (world.message, world.campaign, world.run, world.conversation, EMAIL_A):
        if secret not in case.url(world):  # a 404 may echo the id B itself asked for
            assert secret not in text, f"{secret} leaked to app B"


# --------------------------------------------------------------------------------------
# Friendships: recorded with the app that asked
# --------------------------------------------------------------------------------------

class FakeFriendships:
    """The messenger's friendship calls, answered at once."""

    def invite(self, *args: Any, **kwargs: Any) -> None:
        return None

    def break_up(self, *args: Any, **kwargs: Any) -> None:
        return None


def _events(client: Any, auth: dict[str, str]) -> list[dict[str, Any]]:
    with session_scope() as session:
        feed.number_events(session)
    return client.get("/v1/events?limit=1000", headers=auth).get_json()["events"]


def _contact_events(events: list[dict[str, Any]], email: str) -> list[str]:
    return [json.dumps(e) for e in events if email in json.dumps(e)]


def _run_published(published: Recorder, name: str, since: int) -> None:
    """Run the friendship task the API published, as the worker would (its args as sent)."""
    from worker.tasks import messenger as tasks

    calls = [args for task, args in published.calls[since:] if task == name]
    assert len(calls) == 1, published.calls[since:]
    task = {"switchboard.friend_invite": tasks.invite,
            "switchboard.friend_break_up": tasks.break_up}[name]
    result = task.apply(args=calls[0])
    assert result.successful(), result.result


def test_invite_and_break_up_are_the_asking_apps(app: Flask, world: World, published: Recorder,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("worker.messenger.provider_for", lambda op: FakeFriendships())
    client, email = app.test_client(), "invited-by-b@tenant-b.example"
    for action, task in (("invite", "switchboard.friend_invite"),
                         ("break-up", "switchboard.friend_break_up")):
        since = len(published.calls)
        _post(client, f"/v1/contacts/rogerthat/{action}", {"email": email}, world.b.auth)
        _run_published(published, task, since)
    listed = client.get("/v1/contacts", headers=world.b.auth).get_data(as_text=True)
    assert email in listed
    assert email not in client.get("/v1/contacts", headers=world.a.auth).get_data(as_text=True)
    told_b = _contact_events(_events(client, world.b.auth), email)
    assert ['"change": "break_up"' in e for e in told_b] == [True]  # an invite sent says nothing
    assert _contact_events(_events(client, AUTH), email) == []  # not the default app's
    assert _contact_events(_events(client, world.a.auth), email) == []


def test_a_contact_no_app_reached_is_listed_for_the_default_app_only(
        app: Flask, world: World) -> None:
    """Someone who befriended the service from the messenger (friend.invited, no app asked):
    the operator's default app lists them and hears of it; no producer app does."""
    email = "walked-in@example.com"
    event = ProviderEvent(kind="contact", dedupe_key="invited-walk-in", data={
        "change": "invited", "email": email, "app_id": "rogerthat"})
    with uow.unit_of_work() as work:
        handlers.dispatch(work, handlers.Occurrence("contact", provider="rogerthat",
                                                    event=event, answer="accepted"))
    client = app.test_client()
    assert email in client.get("/v1/contacts", headers=AUTH).get_data(as_text=True)
    for tenant in (world.a, world.b):
        assert email not in client.get("/v1/contacts", headers=tenant.auth).get_data(
            as_text=True)
        assert _contact_events(_events(client, tenant.auth), email) == []
    assert len(_contact_events(_events(client, AUTH), email)) == 1


def test_an_invitation_answer_goes_to_the_app_that_invited(
        app: Flask, world: World, published: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """friend.invite_result carries our tag: the inviting app hears it, no other."""
    monkeypatch.setattr("worker.messenger.provider_for", lambda op: FakeFriendships())
    client, email = app.test_client(), "answers-b@tenant-b.example"
    since = len(published.calls)
    _post(client, "/v1/contacts/rogerthat/invite", {"email": email}, world.b.auth)
    _run_published(published, "switchboard.friend_invite", since)
    tag = next(args for name, args in published.calls[since:])[2]  # the rpc id
    event = ProviderEvent(kind="contact", dedupe_key=f"invite-result-{tag}", data={
        "change": "invite_result", "result": "accepted", "email": email,
        "app_id": "rogerthat", "tag": f"switchboard-invite:{tag}"})
    with uow.unit_of_work() as work:
        handlers.dispatch(work, handlers.Occurrence("contact", provider="rogerthat",
                                                    event=event))
    answers = [e for e in _contact_events(_events(client, world.b.auth), email)
               if "invite_result" in e]
    assert len(answers) == 1
    assert _contact_events(_events(client, AUTH), email) == []


# --------------------------------------------------------------------------------------
# Flow triggers: one app's
# --------------------------------------------------------------------------------------

def _flow(name: str, route: list[str], **triggers: list[str]) -> dict[str, Any]:
    return {**SMS_FLOW, "name": name, "route": route, "triggers": triggers}


def test_a_trigger_another_app_uses_is_a_409_naming_it(app: Flask, world: World) -> None:
    client = app.test_client()
    _post(client, "/v1/flows", _flow("owned-a", ["sms"], keywords=["JOIN-A"],
                                     poke_tags=["menu-a"]), world.a.auth)
    for triggers, field in (({"keywords": ["other", " join-a "]}, "triggers.keywords.1"),
                            ({"poke_tags": ["menu-a"]}, "triggers.poke_tags.0")):
        resp = client.post("/v1/flows", json=_flow("taken-b", ["sms"], **triggers),
                           headers=world.b.auth)
        assert resp.status_code == 409, resp.get_data()[:300]
        assert [e["field"] for e in resp.get_json()["errors"]] == [field]
    again = client.post("/v1/flows", json=_flow("owned-a", ["sms"], keywords=["JOIN-A"]),
                        headers=world.a.auth)
    assert again.status_code == 201  # the owner saves new versions freely


def test_the_cli_refuses_a_trigger_another_app_uses(app: Flask, world: World, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _post(app.test_client(), "/v1/flows", _flow("cli-a", ["sms"], keywords=["cli-word"]),
          world.a.auth)
    document = tmp_path / "flow.json"
    document.write_text(json.dumps(_flow("cli-b", ["sms"], keywords=["CLI-WORD"])))
    assert cli_main(["flows", "load", str(document), "--app", "tenant-b"]) != 0
    assert "triggers.keywords.0" in capsys.readouterr().err
    with session_scope() as session:
        assert session.scalar(select(Flow.id).where(Flow.name == "cli-b")) is None


def _reply(message_id: str, text: str) -> None:
    """A reply to one of our messages, as the engine dispatches it."""
    event = ProviderEvent(kind="reply", dedupe_key=f"reply-{message_id}-{text}", text=text)
    with uow.unit_of_work() as work:
        handlers.dispatch(work, handlers.Occurrence("reply", provider="messaggio", event=event,
                                                    message_id=message_id))


def _runs(app_id: str, trigger: str) -> list[FlowRun]:
    with session_scope() as session:
        return list(session.scalars(select(FlowRun).where(FlowRun.app_id == app_id,
                                                          FlowRun.trigger == trigger)))


def test_a_keyword_reply_starts_only_the_replied_apps_flow(app: Flask, world: World) -> None:
    client = app.test_client()
    _post(client, "/v1/flows", _flow("keyword-a", ["sms"], keywords=["STOPWORD-A"]),
          world.a.auth)
    to_b = _post(client, "/v1/messages", {"to": {"phone": "+32470120077"}, "route": ["sms"],
                                          "text": "B asks"}, world.b.auth)["id"]
    _reply(to_b, "stopword-a")
    assert [r.contact for r in _runs(world.a.id, "keyword")] == []
    to_a = _post(client, "/v1/messages", {"to": {"phone": "+32470120078"}, "route": ["sms"],
                                          "text": "A asks"}, world.a.auth)["id"]
    _reply(to_a, "stopword-a")
    assert [r.contact["to"]["phone"] for r in _runs(world.a.id, "keyword")] == ["+32470120078"]


def test_a_poke_belongs_to_the_app_owning_its_tag(app: Flask, world: World) -> None:
    client = app.test_client()
    flow = {"name": "poke-a", "route": ["rogerthat"], "triggers": {"poke_tags": ["poke-a"]},
            "steps": [{"id": "q1", "type": "message", "text": "Hi",
                       "buttons": [{"id": "ok", "caption": "OK", "next": "done"}]},
                      {"id": "done", "type": "end"}]}
    _post(client, "/v1/flows", flow, world.a.auth)
    email = "poker@tenant-a.example"
    event = ProviderEvent(kind="poke", dedupe_key="poke-1", data={
        "email": email, "tag": "poke-a", "app_id": "rogerthat"})
    with uow.unit_of_work() as work:
        handlers.dispatch(work, handlers.Occurrence("poke", provider="rogerthat", event=event))
    assert len(_runs(world.a.id, "poke")) == 1
    assert len(_contact_events(_events(client, world.a.auth), email)) == 1
    assert _contact_events(_events(client, AUTH), email) == []  # not the default app's


# --------------------------------------------------------------------------------------
# In-app: an agent's text is matched within its conversation's app
# --------------------------------------------------------------------------------------

def _agent_text(conversation_id: str, text: str, message_id: str) -> None:
    """An agent's message in the conversation, as the in-app receiver hands it over."""
    with session_scope() as session:
        conversation = session.get(conversations.Conversation, conversation_id)
        assert conversation is not None
        conversation.visit_id = conversation.visit_id or f"V{conversation_id[:8]}"
        data = {"visit_id": conversation.visit_id, "message_id": message_id,
                "consumer_id": conversation.consumer_id,
                "session_id": conversation.session_id}
    event = ProviderEvent(kind="inbound", dedupe_key=message_id, text=text, data=data)
    with uow.unit_of_work() as work:
        handlers.dispatch(work, handlers.Occurrence("inbound", provider="contactatonce",
                                                    event=event))


def test_an_agent_text_answers_only_its_own_apps_run(app: Flask, world: World) -> None:
    client = app.test_client()
    flow = {**SMS_FLOW, "name": "inapp-a", "route": ["inapp"],
            "triggers": {"keywords": ["inapp-go-a"]}}
    _post(client, "/v1/flows", flow, world.a.auth)
    contact = {"conversation": {"consumer_id": CONSUMER, "session_id": f"s-{world.a.id[:8]}"}}
    run_id = _post(client, "/v1/flows/inapp-a/start", {"contacts": [contact]},
                   world.a.auth)["runs"][0]["id"]
    with uow.unit_of_work() as work:
        assert runtime.begin(work.session, run_id, work.followups) is not None
    conversation_b = _conversation_of(world.b.id)
    _agent_text(conversation_b, "Yes", "agent-b-1")
    _agent_text(conversation_b, "inapp-go-a", "agent-b-2")
    with session_scope() as session:
        run = session.get(FlowRun, run_id)
        assert run is not None and run.status == "running" and run.current_step == "q1"
        assert run.steps == [] or all(not step.get("answer") for step in run.steps)
    started = [r for r in _runs(world.a.id, "keyword") if "conversation" in r.contact]
    assert started == []  # B's conversation started no flow of A's
