"""The messenger channel end to end: JSON-RPC to the simulator, callbacks back over HTTP."""

from __future__ import annotations

import inspect
import uuid

import pytest
import requests
from sqlalchemy import select

from shared.db import session_scope
from shared.models import Callback
from worker import content

from tests.integration.conftest import (
    API_KEY,
    CLIENT_TIMEOUT,
    ROGERTHAT_SERVICE_KEY,
    Stack,
    wait_for,
)

pytestmark = pytest.mark.integration
BUTTONS = [{"id": "yes", "caption": "Yes"}, {"id": "no", "caption": "No"}]


def _send(stack: Stack, email: str, route: list[str], **extra: object) -> str:
    to = {"email": email, **({"phone": "+32470120000"} if "sms" in route else {})}
    response = stack.post_message(to=to, route=route, text="Table for two at 8?",
                                  buttons=BUTTONS, **extra)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _sim_get(stack: Stack, what: str) -> list[dict]:
    return requests.get(f"{stack.messenger.base_url}/_sim/{what}", timeout=5).json()[what]


def _calls_for(stack: Stack, rpc_id: str) -> list[dict]:
    return [c for c in _sim_get(stack, "calls") if c.get("id") == rpc_id]


def _messages_for(stack: Stack, attempt_id: str) -> list[dict]:
    return [m for m in _sim_get(stack, "messages") if m.get("context") == attempt_id]


def test_answered_with_a_button_is_seen_with_a_replied_event(stack: Stack) -> None:
    message_id = _send(stack, f"friend-{uuid.uuid4().hex[:8]}@example.com", ["rogerthat"])
    view = wait_for(lambda: (v := stack.get_message(message_id)) and any(
        e["type"] == "replied" for e in v["events"]) and v, 20, message="the answer")
    view = stack.wait_status(message_id, {"seen"})
    replied = [e for e in view["events"] if e["type"] == "replied"]
    assert replied[0]["detail"]["button_id"] == "yes"
    assert replied[0]["detail"]["dismissed"] is False
    attempt = view["attempts"][0]
    assert attempt["channel"] == "rogerthat" and attempt["provider_message_id"]
    sent = _messages_for(stack, attempt["id"])
    assert len(sent) == 1 and [a["id"] for a in sent[0]["answers"]] == ["yes", "no"]


def test_non_friend_moves_on_and_is_then_skipped_without_a_call(stack: Stack) -> None:
    stranger = f"stranger-{uuid.uuid4().hex[:8]}@example.com"
    first = _send(stack, stranger, ["rogerthat", "sms"])
    view = stack.wait_status(first, {"delivered"})
    assert [(a["channel"], a["status"]) for a in view["attempts"]] == [
        ("rogerthat", "failed"), ("sms", "delivered")]
    assert view["attempts"][0]["error"]["reason"] == "not_a_friend"
    assert len(_calls_for(stack, view["attempts"][0]["id"])) == 1  # the provider said 30000

    second = _send(stack, stranger, ["rogerthat", "sms"])
    view = stack.wait_status(second, {"delivered"})
    # The refusal is a consent record now: the hop is suppressed, not failed, before any call.
    assert view["attempts"][0]["status"] == "suppressed"
    assert view["attempts"][0]["error"]["reason"] == "opted_out"
    why = next(e for e in view["events"] if e["type"] == "suppressed")["detail"]
    assert (why["source"], why["channel"]) == ("friendship", "rogerthat")
    assert _calls_for(stack, view["attempts"][0]["id"]) == []  # refused before any call


def test_friend_invited_gets_the_policy_answer_and_becomes_a_friend(stack: Stack) -> None:
    email = f"newbie-{uuid.uuid4().hex[:8]}@example.com"
    requests.post(f"{stack.messenger.base_url}/_sim/invited", timeout=5,
                  json={"email": email, "app_id": "rogerthat", "name": "New Bie"}
                  ).raise_for_status()

    def answered() -> dict | None:
        for cb in _sim_get(stack, "callbacks"):
            if cb.get("method") == "friend.invited" and cb["params"].get("email") == email \
                    and cb.get("response"):
                return cb
        return None
    callback = wait_for(answered, 20, message="friend.invited to be answered")
    assert callback["response"]["result"] == "accepted"  # the default policy: accept_all

    def friend() -> bool:
        contacts = requests.get(f"{stack.api_url}/v1/contacts", timeout=5,
                                headers={"Authorization": f"Bearer {API_KEY}"}).json()
        return any(c["address"] == email and c["status"] == "friend"
                   for c in contacts["contacts"])
    wait_for(friend, 20, message="the contact record to say friend")


def test_duplicate_callback_changes_nothing(stack: Stack) -> None:
    message_id = _send(stack, f"friend-{uuid.uuid4().hex[:8]}@example.com", ["rogerthat"])
    view = stack.wait_status(message_id, {"seen"})
    key = view["attempts"][0]["provider_message_id"]
    envelope = {"id": str(uuid.uuid1()), "method": "messaging.update", "params": {
        "status": 1, "answer_id": None, "received_timestamp": 1, "acked_timestamp": 0,
        "member": "x@example.com", "message_key": key, "parent_message_key": key,
        "tag": None, "service_identity": "+default+", "user_details": []}}
    headers = {"X-Nuntiuz-Service-Key": ROGERTHAT_SERVICE_KEY,
               "Content-Type": "application/json-rpc; charset=utf-8"}
    answers = [requests.post(f"{stack.api_url}/callbacks/rogerthat", json=envelope,
                             headers=headers, timeout=5) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json() == {
        "id": envelope["id"], "result": None, "error": None}

    def reports() -> list[dict]:
        v = stack.get_message(message_id)
        return [e for e in v["events"] if e["type"] == "report"
                and e["detail"]["raw"].get("id") == envelope["id"]]
    wait_for(lambda: reports(), 20, message="the late 'received' report")
    assert len(reports()) == 1 and reports()[0]["detail"]["applied"] is False
    assert stack.get_message(message_id)["status"] == "seen"  # never backwards


def test_wrong_service_key_is_401_and_nothing_is_stored(stack: Stack) -> None:
    envelope = {"id": str(uuid.uuid1()), "method": "test.test", "params": {"value": "v"}}
    response = requests.post(f"{stack.api_url}/callbacks/rogerthat", json=envelope,
                             headers={"X-Nuntiuz-Service-Key": "wrong"}, timeout=5)
    assert response.status_code == 401
    ok = requests.post(f"{stack.api_url}/callbacks/rogerthat", json=envelope, timeout=5,
                       headers={"X-Nuntiuz-Service-Key": ROGERTHAT_SERVICE_KEY})
    assert ok.json()["result"] == "v"  # the first (refused) call stored nothing to replay


def test_a_send_retried_after_a_timeout_reaches_the_simulator_once(stack: Stack) -> None:
    """The simulator answers after our read timeout; the retry reuses the JSON-RPC id."""
    requests.post(f"{stack.messenger.base_url}/_sim/config", timeout=5, json={
        "fail_rate": 1.0, "fail_kinds": ["slow"], "slow_seconds": CLIENT_TIMEOUT + 1.0}
        ).raise_for_status()
    try:
        message_id = _send(stack, f"friend-{uuid.uuid4().hex[:8]}@example.com", ["rogerthat"])
        view = wait_for(lambda: (v := stack.get_message(message_id)) and v["attempts"] and any(
            e["type"] == "retry_scheduled" for e in v["events"]) and v, 30,
            message="a retry after the timeout")
    finally:
        requests.post(f"{stack.messenger.base_url}/_sim/config", timeout=5,
                      json={"fail_rate": 0.0}).raise_for_status()
    view = stack.wait_status(message_id, {"seen"}, timeout=40)
    attempt_id = view["attempts"][0]["id"]
    assert len(_calls_for(stack, attempt_id)) >= 2
    assert len(_messages_for(stack, attempt_id)) == 1


def test_seal_locks_the_message_at_the_provider(stack: Stack) -> None:
    message_id = _send(stack, f"silent.friend-{uuid.uuid4().hex[:6]}@example.com",
                       ["rogerthat"])
    view = stack.wait_status(message_id, {"delivered"})
    key = view["attempts"][0]["provider_message_id"]
    response = requests.post(f"{stack.api_url}/v1/messages/{message_id}/seal", timeout=5,
                             headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 202
    view = wait_for(lambda: (v := stack.get_message(message_id)) and any(
        e["type"] == "sealed" for e in v["events"]) and v, 20, message="the sealed event")
    seals = [c for c in _sim_get(stack, "calls") if c.get("method") == "messaging.seal"
             and c["params"].get("message_key") == key]
    assert len(seals) == 1


def test_poke_is_stored_and_forwarded_as_an_event(stack: Stack) -> None:
    tag = f"menu-{uuid.uuid4().hex[:8]}"
    requests.post(f"{stack.messenger.base_url}/_sim/callback", timeout=5, json={
        "method": "messaging.poke", "params": {
            "email": "friend.poker@example.com", "tag": tag, "result_key": str(uuid.uuid4()),
            "context": None, "service_identity": "+default+", "timestamp": 1,
            "user_details": [{"email": "friend.poker@example.com", "name": "P",
                              "language": "en", "avatar_url": None, "app_id": "rogerthat"}]}}
                  ).raise_for_status()
    headers = {"Authorization": f"Bearer {API_KEY}"}

    def poke_in_feed() -> dict | None:
        events = requests.get(f"{stack.api_url}/v1/events", params={"limit": 1000},
                              headers=headers, timeout=5).json()["events"]
        return next((e for e in events if e["type"] == "poke" and e["data"].get("tag") == tag),
                    None)
    event = wait_for(poke_in_feed, 20, 0.2, "the poke in the event feed")
    assert event["data"]["email"] == "friend.poker@example.com"
    assert event["message_id"] is None


def _messenger_circuit(stack: Stack) -> str:
    providers = requests.get(f"{stack.api_url}/healthz", timeout=10).json()["providers"]
    return providers["rogerthat"]["circuit"]


def test_messenger_down_past_its_deadline_falls_back_to_sms(stack: Stack) -> None:
    """The messenger answers 500 to everything: three failures open its circuit, the held hop
    keeps its deadline, and the message goes out by SMS when that passes — not never."""
    config = f"{stack.messenger.base_url}/_sim/config"
    requests.post(config, json={"fail_rate": 1.0, "fail_kinds": ["http500"]},
                  timeout=5).raise_for_status()
    try:
        emails = [f"friend-{uuid.uuid4().hex[:8]}@example.com" for _ in range(3)]
        sent = [_send(stack, email, ["rogerthat", "sms"])
                for email in emails]
        for message_id in sent:
            view = stack.wait_status(message_id, {"delivered"}, timeout=60)
            assert [(a["channel"], a["status"]) for a in view["attempts"]] == [
                ("rogerthat", "expired"), ("sms", "delivered")], view["attempts"]
        assert _messenger_circuit(stack) in ("open", "half_open")
    finally:
        requests.post(config, json={"fail_rate": 0.0}, timeout=5).raise_for_status()
    healed = _send(stack, f"friend-{uuid.uuid4().hex[:8]}@example.com", ["rogerthat"])
    stack.wait_status(healed, {"submitted", "delivered", "seen"}, timeout=30)
    wait_for(lambda: _messenger_circuit(stack) == "closed", 20, 0.1, "the circuit to close")


# --------------------------------------------------------------------------------------
# What the real server does (issue 15): callback answers, the documents' shapes, retries
# --------------------------------------------------------------------------------------

# The callbacks Switchboard handles; every other documented one is answered with an error.
HANDLED = {"test.test", "messaging.update", "messaging.poke", "messaging.flow_member_result",
           "friend.invited", "friend.invite_result", "friend.broke_up", "friend.update"}


def _deliveries(stack: Stack, ids: set[str]) -> dict[str, dict]:
    return {d["callback_id"]: d for d in _sim_get(stack, "deliveries")
            if d["callback_id"] in ids}


def _rows(callback_id: str) -> list[str]:
    with session_scope() as session:
        return list(session.scalars(select(Callback.status).where(
            Callback.dedupe_key == f"rogerthat:{callback_id}")))


def _answered(stack: Stack, ids: set[str], attempts: int) -> dict[str, dict]:
    def done() -> dict[str, dict] | None:
        seen = _deliveries(stack, ids)
        finished = all(d["attempts"] >= attempts and d["outcome"] not in ("retry", None)
                       for d in seen.values())
        return seen if len(seen) == len(ids) and finished else None
    return wait_for(done, 30, 0.1, f"{len(ids)} callbacks answered {attempts}x")


def test_every_documented_callback_gets_200_and_an_unhandled_one_an_error_stored_once(
        stack: Stack) -> None:
    """A non-200 would be retried by the messenger until it mails the admins; a 200 with a
    JSON-RPC error ends it. The server's retries reuse the id: stored once."""
    email = f"friend.every-{uuid.uuid4().hex[:8]}@example.com"
    sent = requests.post(f"{stack.messenger.base_url}/_sim/every-callback", timeout=5,
                         json={"email": email}).json()["callbacks"]
    methods = {c["callback_id"]: c["method"] for c in sent}
    assert HANDLED < set(methods.values())  # and methods Switchboard does not handle
    first = _answered(stack, set(methods), 1)
    for callback_id, delivery in first.items():
        expected = "delivered" if methods[callback_id] in HANDLED else "rpc_error"
        assert (delivery["outcome"], delivery["status_codes"]) == (expected, [200]), delivery
    unhandled = {i for i, m in methods.items() if m not in HANDLED}
    assert all(_rows(i) == ["invalid"] for i in unhandled)

    params = {c["callback_id"]: c for c in _sim_get(stack, "callbacks")
              if c["callback_id"] in unhandled}
    for callback_id in unhandled:  # the server sending them again under the same id
        requests.post(f"{stack.messenger.base_url}/_sim/callback", timeout=5, json={
            "method": methods[callback_id], "id": callback_id,
            "params": params[callback_id]["params"]}).raise_for_status()
    again = _answered(stack, unhandled, 2)
    assert all(d["status_codes"] == [200, 200] and d["outcome"] == "rpc_error"
               for d in again.values()), again
    assert all(_rows(i) == ["invalid"] for i in unhandled)  # not stored a second time
    assert not [w for w in _sim_get(stack, "warnings") if w["callback_id"] in methods]


def test_a_plain_text_message_goes_out_dismissable(stack: Stack) -> None:
    response = stack.post_message(to={"email": f"friend-{uuid.uuid4().hex[:8]}@example.com"},
                                  route=["rogerthat"], text="Your table is ready")
    assert response.status_code == 202, response.text
    view = stack.wait_status(response.json()["id"], {"seen"})
    (sent,) = _messages_for(stack, view["attempts"][0]["id"])
    assert sent["answers"] == [] and sent["flags"] & 1  # ALLOW_DISMISS
    replied = [e for e in view["events"] if e["type"] == "replied"]
    assert replied and replied[0]["detail"]["dismissed"] is True


def test_an_update_in_the_getting_started_shape_delivers(stack: Stack) -> None:
    """The simulator's ``minimal`` member reports as the seed's example: no status."""
    message_id = _send(stack, f"minimal.friend-{uuid.uuid4().hex[:8]}@example.com",
                       ["rogerthat"])
    view = stack.wait_status(message_id, {"delivered"})
    attempt = view["attempts"][0]
    updates = [c for c in _sim_get(stack, "callbacks") if c["method"] == "messaging.update"
               and c["params"]["message_key"] == attempt["provider_message_id"]]
    assert [set(u["params"]) for u in updates] == [
        {"received_timestamp", "member", "message_key"}]
    assert updates[0]["response"] == {"id": updates[0]["callback_id"], "result": None,
                                      "error": None}


def test_a_declined_invitation_is_matched_by_our_tag(stack: Stack) -> None:
    """The decline carries no e-mail, only the tag we sent with friend.invite."""
    email = f"decline-{uuid.uuid4().hex[:8]}@example.com"
    response = requests.post(f"{stack.api_url}/v1/contacts/rogerthat/invite", timeout=5,
                             headers={"Authorization": f"Bearer {API_KEY}"},
                             json={"email": email, "name": "Dee"})
    assert response.status_code == 202, response.text
    invite = wait_for(lambda: next((i for i in _sim_get(stack, "invites")
                                    if i["email"] == email), None), 20, message="the invite")
    assert invite["tag"] and invite["tag"].startswith("switchboard-invite:")

    def status() -> str | None:
        listed = requests.get(f"{stack.api_url}/v1/contacts", timeout=5,
                              headers={"Authorization": f"Bearer {API_KEY}"}).json()
        return next((c["status"] for c in listed["contacts"] if c["address"] == email), None)
    wait_for(lambda: status() == "declined", 20, 0.1, "the contact to be declined")
    result = [c for c in _sim_get(stack, "callbacks") if c["method"] == "friend.invite_result"
              and c["params"]["tag"] == invite["tag"]]
    assert result[0]["params"]["email"] is None  # matched by the tag alone


def _engine_passes_retries() -> bool:
    """The engine tells the adapter an attempt's retry count (``SendContext.retries``)."""
    return "retries" in inspect.signature(content.outbound).parameters


@pytest.mark.skipif(not _engine_passes_retries(),
                    reason="worker/content.outbound does not pass SendContext.retries yet")
def test_a_send_retried_after_error_1000_executes_once_under_a_new_id(stack: Stack) -> None:
    """The messenger caches the 1000 under its id: only a new id sends the message."""
    config = f"{stack.messenger.base_url}/_sim/config"
    requests.post(config, json={"fail_rate": 1.0, "fail_kinds": ["provider_error"]},
                  timeout=5).raise_for_status()
    try:
        message_id = _send(stack, f"friend-{uuid.uuid4().hex[:8]}@example.com", ["rogerthat"])
        view = wait_for(lambda: (v := stack.get_message(message_id)) and v["attempts"] and v,
                        20, message="the attempt")
        attempt_id = view["attempts"][0]["id"]
        wait_for(lambda: _calls_for(stack, attempt_id), 20, 0.1, "the first call")
    finally:
        requests.post(config, json={"fail_rate": 0.0}, timeout=5).raise_for_status()
    stack.wait_status(message_id, {"seen"}, timeout=40)
    calls = [c for c in _sim_get(stack, "calls") if str(c.get("id")).startswith(attempt_id)]
    executed = [c["id"] for c in calls if c["outcome"] in ("executed", "injected")]
    assert len(executed) == len(set(executed))  # no id ran twice: the rest were replays
    assert calls[0]["id"] == attempt_id and calls[0]["outcome"] == "injected"
    assert [c["id"] for c in calls if c["outcome"] == "executed"] != [attempt_id]
    assert len(_messages_for(stack, attempt_id)) == 1
