"""Message flows through real workers and the simulators: answers by messenger buttons and by
numbered SMS replies, a timeout branch, a delivery-failure branch, a poke trigger, a native
messenger flow, and the result posted once to a producer endpoint."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from sqlalchemy import select

from shared import apps
from shared.db import session_scope
from shared.models import Flow, FlowRun
from tests.integration.conftest import DEADLINE_SECONDS, Stack, wait_for
from tests.integration.producer import Producer

pytestmark = pytest.mark.integration


class App:
    """A producer app of its own (flows and results are per app), with its endpoint."""

    def __init__(self, stack: Stack, producer: Producer) -> None:
        with session_scope() as session:
            created = apps.create(session, f"flows-{uuid.uuid4().hex[:8]}", producer.url)
            self.key = created.api_key
        self.stack, self.producer = stack, producer

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.stack.api_url}{path}", timeout=10,
                                headers={"Authorization": f"Bearer {self.key}",
                                         **kwargs.pop("headers", {})}, **kwargs)

    def load(self, document: str) -> dict[str, Any]:
        response = self.call("POST", "/v1/flows", data=document.encode(),
                             headers={"Content-Type": "application/yaml"})
        assert response.status_code == 201, response.text
        return response.json()

    def start(self, name: str, *contacts: dict[str, Any]) -> str:
        response = self.call("POST", f"/v1/flows/{name}/start", json={"contacts": contacts})
        assert response.status_code == 202, response.text
        return response.json()["runs"][0]["id"]

    def message(self, message_id: str) -> dict[str, Any] | None:
        response = self.call("GET", f"/v1/messages/{message_id}")
        return response.json() if response.status_code == 200 else None

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.call("GET", f"/v1/flow-runs/{run_id}")
        response.raise_for_status()
        return response.json()

    def wait_run(self, run_id: str, predicate: Any, message: str,
                 timeout: float = 40) -> dict[str, Any]:
        return wait_for(lambda: (r := self.run(run_id)) and predicate(r) and r, timeout, 0.1,
                        message)

    def current_message(self, run_id: str, step: str, reasked: bool = False) -> str:
        """The message id of ``step`` (or of its re-ask), once the run has sent it."""
        def find() -> str | None:
            visits = [s for s in self.run(run_id)["steps"] if s.get("step_id") == step]
            if not visits:
                return None
            return visits[-1].get("reasked_message_id") if reasked else visits[-1][
                "message_id"]
        return wait_for(find, 30, 0.1, f"step {step} to be sent")


@pytest.fixture()
def flow_app(stack: Stack) -> Any:
    producer = Producer([])
    yield App(stack, producer)
    producer.server.shutdown()


def _flow(name: str, route: str, extra: str = "", timeout: int | None = None) -> str:
    """A three-step booking flow; the first step times out after ``timeout`` s if given."""
    on_timeout = f"    on_timeout: {{after: {timeout}, next: no_answer}}\n" if timeout else ""
    return f"""
name: {name}
route: [{route}]
{extra}
steps:
  - id: day
    type: message
    text: Which day suits you?
    buttons:
      - {{id: mon, caption: Monday, next: time}}
      - {{id: tue, caption: Tuesday, next: time}}
{on_timeout}    on_failed: unreachable
  - id: time
    type: message
    text: Morning or afternoon?
    buttons:
      - {{id: am, caption: Morning, next: confirm}}
      - {{id: pm, caption: Afternoon, next: confirm}}
  - id: confirm
    type: message
    text: Shall I book it?
    buttons:
      - {{id: yes, caption: Yes please, next: booked}}
      - {{id: no, caption: No, next: cancelled}}
  - {{id: booked, type: end}}
  - {{id: cancelled, type: end}}
  - {{id: unreachable, type: end}}
""" + ("  - {id: no_answer, type: end}\n" if timeout else "")


def _answer_messenger(stack: Stack, app: App, message_id: str, answer_id: str) -> None:
    """The person presses a button: the messenger posts messaging.update with answer_id."""
    view = wait_for(lambda: (v := app.message(message_id)) and v["attempts"]
                    and v["attempts"][0]["provider_message_id"] and v, 30, 0.1,
                    "the step's messenger message key")
    key = view["attempts"][0]["provider_message_id"]
    email = view["to"]["email"]
    requests.post(f"{stack.messenger.base_url}/_sim/callback", timeout=5, json={
        "method": "messaging.update", "params": {
            "status": 7, "answer_id": answer_id, "received_timestamp": 1,
            "acked_timestamp": 2, "member": email, "message_key": key,
            "parent_message_key": key, "tag": None, "result_key": str(uuid.uuid4()),
            "service_identity": "+default+", "user_details": [
                {"email": email, "name": "F", "language": "en", "avatar_url": None,
                 "app_id": "rogerthat"}]}}).raise_for_status()


def _reply_sms(stack: Stack, app: App, message_id: str, text: str) -> None:
    """The person answers the SMS: the gateway reports a reply to our message."""
    view = wait_for(lambda: (v := app.message(message_id)) and v["attempts"]
                    and v["attempts"][-1]["provider_message_id"] and v, 30, 0.1,
                    "the step's SMS to be sent")
    msg_id = view["attempts"][-1]["provider_message_id"]
    requests.post(f"{stack.simulator.url}_sim/report", timeout=5, json={
        "msg_id": msg_id, "params": {"type": "reply", "text": text}}).raise_for_status()


def test_three_step_flow_answered_by_messenger_buttons(stack: Stack, flow_app: App) -> None:
    name = f"booking-{uuid.uuid4().hex[:6]}"
    assert flow_app.load(_flow(name, "rogerthat")) == {"name": name, "version": 1}
    email = f"silent.friend-{uuid.uuid4().hex[:6]}@example.com"
    run_id = flow_app.start(name, {"to": {"email": email}})
    for step, answer in (("day", "tue"), ("time", "pm"), ("confirm", "yes")):
        _answer_messenger(stack, flow_app, flow_app.current_message(run_id, step), answer)
    result = flow_app.wait_run(run_id, lambda r: r["status"] == "finished", "the run to end")
    assert result["end_id"] == "booked"
    assert [(s["step_id"], s["answer"]["button_id"], s["answer"]["caption"])
            for s in result["steps"]] == [("day", "tue", "Tuesday"),
                                           ("time", "pm", "Afternoon"),
                                           ("confirm", "yes", "Yes please")]
    sent = [m for m in stack.messenger.state.messages() if m["members"][0]["member"] == email]
    assert [len(m["answers"]) for m in sent] == [2, 2, 2]
    posted = wait_for(lambda: flow_app.producer.results(run_id), 30, 0.2, "the posted result")
    assert posted[0]["data"]["end_id"] == "booked"
    assert posted[0]["data"]["flow"] == {"name": name, "version": 1}
    # Posted once, even after more sweeps had the chance to resend it.
    wait_for(lambda: flow_app.message(flow_app.current_message(run_id, "confirm")), 5)
    assert len(flow_app.producer.results(run_id)) == 1

    stats = flow_app.call("GET", f"/v1/flows/{name}/stats").json()["versions"][0]
    assert (stats["started"], stats["finished"]) == (1, 1)
    day = next(s for s in stats["steps"] if s["step"] == "day")
    assert day["answers"]["tue"]["count"] == 1 and day["answers"]["mon"]["count"] == 0
    page = requests.get(f"{stack.api_url}/console/flows", auth=("ops", flow_app.key), timeout=10)
    assert page.status_code == 200 and name in page.text
    assert "Tuesday (tue): 1" in page.text and "Monday (mon): 0" in page.text


def test_same_flow_over_sms_with_numbered_replies(stack: Stack, flow_app: App) -> None:
    name = f"booking-sms-{uuid.uuid4().hex[:6]}"
    flow_app.load(_flow(name, "sms"))
    run_id = flow_app.start(name, {"to": {"phone": "+32470990005"}})
    day = flow_app.current_message(run_id, "day")
    _reply_sms(stack, flow_app, day, "banana")  # unmatched: asked again once
    reask = flow_app.current_message(run_id, "day", reasked=True)
    assert reask != day
    _reply_sms(stack, flow_app, reask, " 1) ")
    _reply_sms(stack, flow_app, flow_app.current_message(run_id, "time"), "afternoon")
    _reply_sms(stack, flow_app, flow_app.current_message(run_id, "confirm"), "NO")
    result = flow_app.wait_run(run_id, lambda r: r["status"] == "finished", "the run to end")
    assert result["end_id"] == "cancelled"
    assert [s["answer"].get("button_id") for s in result["steps"]] == ["mon", "pm", "no"]
    sms_texts = [m["txt"] for m in stack.sim_messages() if m["phone"] == "32470990005"]
    assert any("1) Monday" in (t or "") and "2) Tuesday" in (t or "") for t in sms_texts)


def test_no_answer_follows_the_timeout_branch(stack: Stack, flow_app: App) -> None:
    name = f"booking-to-{uuid.uuid4().hex[:6]}"
    flow_app.load(_flow(name, "rogerthat", timeout=3))
    run_id = flow_app.start(name, {"to": {"email": f"silent.friend-{uuid.uuid4().hex[:6]}@x.org"}})
    result = flow_app.wait_run(run_id, lambda r: r["status"] == "finished",
                               "the timeout branch to end the run", timeout=60)
    assert result["end_id"] == "no_answer" and result["timed_out"] is True
    assert result["steps"][0]["outcome"] == "timeout"


def test_delivery_failure_follows_the_failed_branch(stack: Stack, flow_app: App) -> None:
    name = f"booking-fail-{uuid.uuid4().hex[:6]}"
    flow_app.load(_flow(name, "sms"))
    run_id = flow_app.start(name, {"to": {"phone": "+32470990004"}})  # 0004: SMS undelivered
    result = flow_app.wait_run(run_id, lambda r: r["status"] == "finished",
                               "the failure branch", timeout=DEADLINE_SECONDS * 4)
    assert result["end_id"] == "unreachable"
    assert result["steps"][0]["outcome"] == "failed"


def test_poke_starts_the_flow_for_the_person_who_poked(stack: Stack, flow_app: App) -> None:
    name = f"poked-{uuid.uuid4().hex[:6]}"
    tag = f"menu-{uuid.uuid4().hex[:6]}"
    flow_app.load(_flow(name, "rogerthat", f"triggers: {{poke_tags: [{tag}]}}"))
    email = f"silent.friend-{uuid.uuid4().hex[:6]}@example.com"
    requests.post(f"{stack.messenger.base_url}/_sim/callback", timeout=5, json={
        "method": "messaging.poke", "params": {
            "email": email, "tag": tag, "result_key": str(uuid.uuid4()), "context": None,
            "service_identity": "+default+", "timestamp": 1, "user_details": [
                {"email": email, "name": "P", "language": "en", "avatar_url": None,
                 "app_id": "rogerthat"}]}}).raise_for_status()
    sent = wait_for(lambda: [m for m in stack.messenger.state.messages()
                             if m["members"][0]["member"] == email], 30, 0.1,
                    "the flow's first step on the messenger")
    assert sent[0]["message"] == "Which day suits you?"
    stats = flow_app.call("GET", f"/v1/flows/{name}/stats").json()["versions"][0]
    assert stats["started"] == 1


def test_native_messenger_flow_results_come_back_as_flow_member_result(
        stack: Stack, flow_app: App) -> None:
    name = f"native-{uuid.uuid4().hex[:6]}"
    flow_app.load(_flow(name, "rogerthat").replace("    on_failed: unreachable\n", "")
                  .replace("  - {id: unreachable, type: end}\n", "") + "native: true\n")
    email = f"silent.friend-{uuid.uuid4().hex[:6]}@example.com"
    run_id = flow_app.start(name, {"to": {"email": email}})
    started = wait_for(lambda: [f for f in stack.messenger.state.flows()
                                if f.get("tag") == f"switchboard-flow:{run_id}"], 30, 0.1,
                       "the native flow to start on the messenger")
    assert "<messageFlowDefinition" in started[0]["xml"]
    provider_run = started[0]["run_id"]
    steps = [{"step_type": "message_step", "step_id": sid, "message_flow_id": None,
              "received_timestamp": 10, "acknowledged_timestamp": 20, "answer_id": aid,
              "message": text, "button": caption}
             for sid, aid, caption, text in (("day", "mon", "Monday", "Which day suits you?"),
                                             ("time", "am", "Morning", "Morning or afternoon?"),
                                             ("confirm", "yes", "Yes please", "Shall I book it?"))]
    requests.post(f"{stack.messenger.base_url}/_sim/callback", timeout=5, json={
        "method": "messaging.flow_member_result", "params": {
            "message_flow_run_id": provider_run, "member": email, "steps": steps,
            "end_id": "booked", "end_message_flow_id": None, "flush_id": None,
            "flush_message_flow_id": None, "parent_message_key": None,
            "tag": f"switchboard-flow:{run_id}", "result_key": str(uuid.uuid4()),
            "service_identity": "+default+", "user_details": []}}).raise_for_status()
    result = flow_app.wait_run(run_id, lambda r: r["status"] == "finished", "native results")
    assert result["native"] is True and result["end_id"] == "booked"
    assert [s["answer"]["button_id"] for s in result["steps"]] == ["mon", "am", "yes"]
    posted = wait_for(lambda: flow_app.producer.results(run_id), 30, 0.2, "the posted result")
    assert len(posted) == 1


def test_action_link_starts_the_flow_once(stack: Stack, flow_app: App) -> None:
    name = f"linked-{uuid.uuid4().hex[:6]}"
    flow_app.load(_flow(name, "rogerthat"))
    email = f"silent.friend-{uuid.uuid4().hex[:6]}@example.com"
    made = flow_app.call("POST", f"/v1/flows/{name}/links",
                         json={"contact": {"to": {"email": email}}})
    assert made.status_code == 201, made.text
    url = made.json()["url"]
    first = requests.get(url, timeout=10, headers={"Accept": "application/json"})
    assert first.status_code == 200 and first.json()["run_id"]
    again = requests.get(url, timeout=10, headers={"Accept": "application/json"})
    assert again.status_code == 410
    forged = requests.get(url[:-3] + "abc", timeout=10)
    assert forged.status_code == 404
    wait_for(lambda: [m for m in stack.messenger.state.messages()
                      if m["members"][0]["member"] == email], 30, 0.1, "the first step")


def test_keyword_reply_starts_a_flow_and_a_flush_posts_partial_results(
        stack: Stack, flow_app: App) -> None:
    """A reply "JOIN" to an ordinary SMS starts the keyword's flow for that phone; its flush
    step posts the results so far, and its end posts the whole result."""
    name = f"join-{uuid.uuid4().hex[:6]}"
    keyword = f"JOIN{uuid.uuid4().hex[:4]}"
    flow_app.load(f"""
name: {name}
route: [sms]
triggers: {{keywords: [{keyword}]}}
steps:
  - id: size
    type: message
    text: Which size?
    buttons:
      - {{id: s, caption: Small, next: saved}}
      - {{id: l, caption: Large, next: saved}}
  - {{id: saved, type: flush, next: name}}
  - {{id: name, type: question, text: "Your name?", next: done}}
  - {{id: done, type: end}}
""")
    phone = "+32470991234"
    sent = flow_app.call("POST", "/v1/messages", json={
        "to": {"phone": phone}, "route": ["sms"], "text": "Text back to join"})
    assert sent.status_code == 202
    _reply_sms(stack, flow_app, sent.json()["id"], keyword.lower())
    run_id = wait_for(lambda: _run_for(name), 30, 0.2, "the keyword to start a run")
    _reply_sms(stack, flow_app, flow_app.current_message(run_id, "size"), "2")
    _reply_sms(stack, flow_app, flow_app.current_message(run_id, "name"), "Ada Lovelace")
    result = flow_app.wait_run(run_id, lambda r: r["status"] == "finished", "the run to end")
    assert result["trigger"] == "keyword" and result["contact"]["to"]["phone"] == phone
    answers = [s.get("answer") for s in result["steps"] if s.get("type") != "flush"]
    assert answers == [{"button_id": "l", "caption": "Large"}, {"text": "Ada Lovelace"}]
    posted = wait_for(lambda: len(flow_app.producer.results(run_id)) >= 2 and
                      flow_app.producer.results(run_id), 30, 0.2, "flush and end results")
    assert sorted((p["data"]["flush_id"] or "", p["data"]["status"]) for p in posted) == [
        ("", "finished"), ("saved", "running")]


def _run_for(name: str) -> str | None:
    """The id of the (single) run of the flow ``name``, once one exists."""
    with session_scope() as session:
        return session.scalar(select(FlowRun.id).join(Flow).where(Flow.name == name))


def test_in_app_flow_is_answered_in_the_conversation(stack: Stack, flow_app: App) -> None:
    """On the in-app channel the answer is the next message in the conversation."""
    name = f"inapp-{uuid.uuid4().hex[:6]}"
    flow_app.load(_flow(name, "inapp"))
    consumer = f"u{uuid.uuid4().hex[:8]}-silent"
    run_id = flow_app.start(name, {"conversation": {"consumer_id": consumer}})

    def visit_id() -> str | None:
        view = flow_app.message(flow_app.current_message(run_id, "day"))
        return ((view or {}).get("conversation") or {}).get("visit_id")
    visit = wait_for(visit_id, 30, 0.1, "the conversation's VisitId")
    for answer in ("Tuesday", "1", "2"):
        step_count = len(flow_app.run(run_id)["steps"])
        requests.post(f"{stack.inapp.base_url}/_sim/agent-reply", timeout=5, json={
            "visit_id": int(visit), "message": answer}).raise_for_status()
        if answer != "2":
            wait_for(lambda n=step_count: len(flow_app.run(run_id)["steps"]) > n, 30, 0.1,
                     "the next step")
    result = flow_app.wait_run(run_id, lambda r: r["status"] == "finished", "the run to end")
    assert [s["answer"]["button_id"] for s in result["steps"]] == ["tue", "am", "no"]
    assert result["end_id"] == "cancelled"
