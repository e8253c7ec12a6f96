"""The in-app channel end to end: a real worker, the web app over HTTP and the ContactAtOnce
simulator, which calls our callbacks back with its receipts and agent replies."""

from __future__ import annotations

import uuid
from typing import Any

import requests
from sqlalchemy import func, select

from shared import client
from shared.db import session_scope
from shared.models import Callback
from tests.integration.conftest import API_KEY, CAO_API_KEY, Stack, wait_for

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _send(stack: Stack, consumer_id: str, text: str, **conversation: Any) -> str:
    response = stack.post_message(route=["inapp"], text=text,
                                  conversation={"consumer_id": consumer_id, **conversation})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _feed(stack: Stack, event_type: str) -> list[dict[str, Any]]:
    body = requests.get(f"{stack.api_url}/v1/events", params={"limit": 1000}, headers=AUTH,
                        timeout=10).json()
    return [e for e in body["events"] if e["type"] == event_type]


def _callbacks(provider: str = "contactatonce") -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Callback)
                              .where(Callback.provider == provider)) or 0


def test_conversation_start_follow_up_agent_reply_and_transcript(stack: Stack) -> None:
    assert stack.inapp is not None
    consumer = f"u{uuid.uuid4().hex[:8]}-agent"
    first = _send(stack, consumer, "Do you offer special financing on this vehicle?",
                  consumer={"first_name": "Bob"}, listing_details={"year": "2014", "make": "Ford"})
    view = stack.wait_status(first, {"seen"})
    visit_id = view["conversation"]["visit_id"]
    assert visit_id and view["conversation"]["consumer_id"] == consumer

    start = [r for r in stack.inapp.state.requests() if r["path"].endswith("/Start")
             and r["body"]["ConsumerId"] == consumer]
    assert len(start) == 1
    assert start[0]["body"]["ListingDetails"] == "year=2014\u00ffmake=Ford"
    assert start[0]["body"]["ExternalMessageId"] == view["attempts"][0]["id"]

    # The agent's reply (scenario "-agent") arrives as an inbound_message event.
    inbound = wait_for(lambda: [e for e in _feed(stack, "inbound_message")
                                if e["data"]["conversation"]["consumer_id"] == consumer],
                       30, 0.2, "the agent's reply in the event feed")
    assert inbound[0]["data"]["agent_name"]
    assert inbound[0]["data"]["conversation"]["visit_id"] == visit_id

    second = _send(stack, consumer, "Can I come by on Saturday?")
    stack.wait_status(second, {"delivered", "seen"})
    sends = [r for r in stack.inapp.state.requests() if r["path"].endswith("/SendMessage")
             and str(r["body"]["VisitId"]) == visit_id]
    assert [str(r["body"]["VisitId"]) for r in sends] == [visit_id]
    assert sends[0]["body"]["MessageId"] == inbound[0]["data"]["provider_message_id"]  # CAO's
    assert stack.inapp.state.visit(visit_id) is not None

    transcript = client.conversation(visit_id, api_url=stack.api_url, api_key=API_KEY)
    texts = [(m["direction"], m["source"]) for m in transcript["messages"]]
    assert ("out", "both") in texts and ("in", "both") in texts, transcript
    ours = [m for m in transcript["messages"] if m["message_id"] == first]
    assert ours and ours[0]["status"] == "seen"
    assert transcript["provider_error"] is None

    listing = client.conversations(consumer, api_url=stack.api_url, api_key=API_KEY)
    assert [c["visit_id"] for c in listing["conversations"]] == [visit_id]
    assert listing["conversations"][0]["provider"]["status_name"] == "active"


def test_read_receipt_moves_the_message_to_seen_and_never_back(stack: Stack) -> None:
    assert stack.inapp is not None
    consumer = f"u{uuid.uuid4().hex[:8]}-silent"
    message_id = _send(stack, consumer, "Hello?")
    view = stack.wait_status(message_id, {"submitted"})
    attempt_id = view["attempts"][0]["id"]
    for status in (2, 1):  # read first, then a late "delivered": seen stays seen
        requests.post(f"{stack.inapp.base_url}/_sim/receipt", timeout=5, json={
            "external_message_id": attempt_id, "status": status}).raise_for_status()
    stack.wait_status(message_id, {"seen"})
    wait_for(lambda: len([c for c in stack.inapp.state.delivered("status")
                          if c["ExternalMessageId"] == attempt_id]) == 2, 10, 0.1,
             "both receipts to be accepted")
    wait_for(lambda: any(e["type"] == "report" and e["detail"].get("kind") == "delivered"
                         for e in (stack.get_message(message_id) or {}).get("events", [])),
             10, 0.1, "the late receipt on the timeline")
    assert stack.get_message(message_id)["status"] == "seen"


def test_bad_and_unauthenticated_callbacks_store_nothing(stack: Stack) -> None:
    url = f"{stack.api_url}/callbacks/contactatonce/messages"
    good_auth = {"Authorization": f"Basic {CAO_API_KEY}"}
    before = _callbacks()
    body = {"VisitId": "1", "SessionId": "s", "ConsumerId": "c", "MessageId": "77",
            "Message": "hi", "AgentName": "A"}
    refused = requests.post(url, json=body, timeout=5,
                            headers={"Authorization": "Basic wrong-key"})
    assert refused.status_code == 401
    assert refused.json() == {"Status": 1, "FailureDescription": refused.json()[
        "FailureDescription"]} and refused.json()["FailureDescription"]
    bad = requests.post(url, json={**body, "VisitId": "not-a-number"}, timeout=5,
                        headers=good_auth)
    assert bad.status_code == 400
    assert bad.json()["Status"] == 1 and "VisitId" in bad.json()["FailureDescription"]
    status_bad = requests.post(f"{stack.api_url}/callbacks/contactatonce/status", timeout=5,
                               headers=good_auth, json={"VisitId": 1, "MessageId": 2,
                                                        "ExternalMessageId": "x",
                                                        "MessageStatus": 7})
    assert status_bad.status_code == 400 and "MessageStatus" in status_bad.json()[
        "FailureDescription"]
    not_json = requests.post(url, data=b"\xff\xfe", timeout=5, headers=good_auth)
    assert not_json.status_code == 400 and not_json.json()["Status"] == 1
    assert _callbacks() == before


def test_duplicate_agent_message_is_one_event(stack: Stack) -> None:
    """A provider retry of the same MessageId (strings or integers) is answered like the first
    and produces one inbound event."""
    consumer = f"u{uuid.uuid4().hex[:8]}-silent"
    message_id = _send(stack, consumer, "Anyone there?")
    visit_id = wait_for(lambda: ((stack.get_message(message_id) or {}).get("conversation")
                                 or {}).get("visit_id"), 20, 0.1, "the VisitId")
    url = f"{stack.api_url}/callbacks/contactatonce/messages"
    agent_message_id = 900_000_000 + int(uuid.uuid4().int % 1_000_000)
    body = {"VisitId": int(visit_id), "SessionId": "ignored", "ConsumerId": consumer,
            "DateTime": "2026-11-23T10:00:00 ", "MessageId": agent_message_id,
            "Message": "Yes, how can I help?", "AgentName": "Sally"}
    for variant in (body, {**body, "VisitId": str(visit_id),
                           "MessageId": str(agent_message_id)}):
        answer = requests.post(url, json=variant, timeout=5,
                               headers={"Authorization": f"Basic {CAO_API_KEY}"})
        assert answer.status_code == 200
        assert answer.json() == {"Status": 0, "FailureDescription": None}
    events = wait_for(lambda: [e for e in _feed(stack, "inbound_message")
                               if e["data"]["provider_message_id"] == str(agent_message_id)],
                      20, 0.2, "the inbound event")
    transcript = requests.get(f"{stack.api_url}/v1/conversations/{visit_id}", headers=AUTH,
                              timeout=10).json()
    assert len([m for m in transcript["messages"]
                if m["provider_message_id"] == str(agent_message_id)]) == 1
    assert len(events) == 1


def _sim_message_id(stack: Stack, visit_id: str, attempt_id: str) -> str:
    """The simulator's MessageId for our message (ExternalMessageId = our attempt id)."""
    assert stack.inapp is not None
    visit = stack.inapp.state.visit(visit_id) or {"messages": []}
    (found,) = [m for m in visit["messages"] if m["external_message_id"] == attempt_id]
    return str(found["message_id"])


def test_follow_ups_name_the_providers_message_and_receipts_reach_their_own_attempt(
        stack: Stack) -> None:
    """Before any agent wrote, SendMessage's MessageId names nothing (our attempt id is not
    CAO's to receive there; the simulator refuses a MessageId that is not the visit's); after
    an agent wrote, it names that message. Each receipt, matched by CAO's MessageId or our
    ExternalMessageId, lands on its own attempt."""
    assert stack.inapp is not None
    consumer = f"u{uuid.uuid4().hex[:8]}-read"
    views = [stack.wait_status(_send(stack, consumer, "Is the red one still there?"), {"seen"})]
    visit_id = views[0]["conversation"]["visit_id"]
    views.append(stack.wait_status(_send(stack, consumer, "And the blue one?"), {"seen"}))
    agent = requests.post(f"{stack.inapp.base_url}/_sim/agent-reply", timeout=5, json={
        "visit_id": int(visit_id), "message": "Both are here."})
    agent.raise_for_status()
    agent_id = str(agent.json()["message_id"])
    wait_for(lambda: [e for e in _feed(stack, "inbound_message")
                      if e["data"]["provider_message_id"] == agent_id], 30, 0.2,
             "the agent's message in the event feed")
    views.append(stack.wait_status(_send(stack, consumer, "Great, see you at 4"), {"seen"}))

    sends = [r["body"] for r in stack.inapp.state.requests()
             if r["path"].endswith("/SendMessage") and str(r["body"]["VisitId"]) == visit_id]
    attempts = [view["attempts"][0] for view in views]
    assert [(b["MessageId"], b["ExternalMessageId"]) for b in sends] == [
        ("", attempts[1]["id"]), (agent_id, attempts[2]["id"])]
    assert all(r["http_status"] == 200 and r["response"]["Status"] == 0
               for r in stack.inapp.state.requests() if r["body"] in sends)
    for attempt in attempts:
        assert attempt["status"] == "seen"
        assert attempt["provider_message_id"] == _sim_message_id(stack, visit_id, attempt["id"])
    assert len({a["provider_message_id"] for a in attempts} | {agent_id}) == 4
