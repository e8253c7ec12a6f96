"""End to end, the consent registry through the real stack: a STOP reply in the gateway's
reply report suppresses the next SMS to that number before any provider call, STOPALL also
stops its Viber hop, the gateway's "blocked by the user" report stops Viber only, and a
campaign suppresses its opted-out phones in its batch while the rest go in one request."""

from __future__ import annotations

import random
from typing import Any

import pytest
import requests

from tests.integration.conftest import API_KEY, Stack, wait_for

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _phone() -> str:
    """A number no other test uses, whose last four digits pick no special scenario."""
    return f"+32477{random.randint(10, 99)}{random.randint(2000, 9999)}"


def _send(stack: Stack, phone: str, route: list[str], text: str = "Hi") -> str:
    response = stack.post_message(to={"phone": phone}, route=route, text=text)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _sent_to(stack: Stack, phone: str, channel: str) -> list[dict[str, Any]]:
    return [m for m in stack.sim_messages() if m["phone"] == phone.lstrip("+")
            and m["channel"] == channel]


def _reply(stack: Stack, view: dict[str, Any], text: str) -> None:
    """The subscriber answers the message's last hop: the gateway's reply report."""
    msg_id = view["attempts"][-1]["provider_message_id"]
    requests.post(f"{stack.simulator.url}_sim/report", timeout=5, json={
        "msg_id": msg_id, "params": {"type": "reply", "text": text}}).raise_for_status()


def _consent(stack: Stack, channel: str, phone: str) -> dict[str, Any]:
    response = requests.get(f"{stack.api_url}/v1/consent/{channel}/{phone}", headers=AUTH,
                            timeout=10)
    response.raise_for_status()
    return response.json()


def _feed(stack: Stack) -> list[dict[str, Any]]:
    """The app's public events, as a producer polls them (``GET /v1/events``)."""
    events, after = [], 0
    while True:
        page = requests.get(f"{stack.api_url}/v1/events?after={after}&limit=1000",
                            headers=AUTH, timeout=10).json()
        events += page["events"]
        if not page["events"]:
            return events
        after = page["next"]


def _wait_opted_out(stack: Stack, channel: str, phone: str) -> dict[str, Any]:
    return wait_for(lambda: (c := _consent(stack, channel, phone))["status"] == "opted_out"
                    and c, 20, 0.1, f"{channel} {phone} to be opted out")


def test_a_stop_reply_suppresses_the_next_sms_before_any_call(stack: Stack) -> None:
    phone = _phone()
    first = stack.wait_status(_send(stack, phone, ["sms"]), {"delivered", "seen"})
    _reply(stack, first, "Stop!")
    record = _wait_opted_out(stack, "sms", phone)
    assert (record["source"], record["history"][0]["message_id"]) == ("keyword", first["id"])
    assert _consent(stack, "viber", phone)["status"] == "opted_in"  # STOP: this channel only
    told = wait_for(lambda: [e for e in _feed(stack) if e["type"] == "consent"
                             and e["data"].get("address") == phone.lstrip("+")], 20, 0.2,
                    "the consent event in the app's feed")
    assert told[0]["data"]["status"] == "opted_out" and told[0]["data"]["source"] == "keyword"

    second = stack.wait_status(_send(stack, phone, ["sms"], "Sale!"), {"suppressed"})
    assert [(a["channel"], a["status"]) for a in second["attempts"]] == [("sms", "suppressed")]
    why = next(e for e in second["events"] if e["type"] == "suppressed")["detail"]
    assert (why["source"], why["via_message_id"], why["address"]) == (
        "keyword", first["id"], phone.lstrip("+"))
    assert len(_sent_to(stack, phone, "sms")) == 1  # only the first ever reached the gateway


def test_stopall_also_stops_the_viber_hop(stack: Stack) -> None:
    phone = _phone()
    first = stack.wait_status(_send(stack, phone, ["sms"]), {"delivered", "seen"})
    _reply(stack, first, "stop all")
    _wait_opted_out(stack, "sms", phone)
    assert _consent(stack, "viber", phone)["status"] == "opted_out"

    second = stack.wait_status(_send(stack, phone, ["viber", "sms"]), {"suppressed"})
    assert [(a["channel"], a["status"]) for a in second["attempts"]] == [
        ("viber", "suppressed"), ("sms", "suppressed")]
    fallback = next(e for e in second["events"] if e["type"] == "fallback")["detail"]
    assert fallback["reason"] == "opted_out"
    assert _sent_to(stack, phone, "viber") == [] and len(_sent_to(stack, phone, "sms")) == 1


def test_blocking_the_sender_on_viber_stops_viber_and_the_sms_still_goes(stack: Stack) -> None:
    phone = f"+32477{random.randint(10, 99)}0004"  # the simulator: blocked on Viber
    stack.wait_status(_send(stack, phone, ["viber"]), {"failed"})
    record = _wait_opted_out(stack, "viber", phone)
    assert record["source"] == "provider_report"

    second = stack.wait_status(_send(stack, phone, ["viber", "sms"]), {"failed", "delivered"})
    assert second["attempts"][0]["status"] == "suppressed"
    assert second["attempts"][1]["channel"] == "sms"  # …0004's SMS fails too, but it left
    wait_for(lambda: len(_sent_to(stack, phone, "sms")) == 1, 20, 0.1, "the SMS to go")
    assert len(_sent_to(stack, phone, "viber")) == 1  # only the first message's


def test_a_campaign_suppresses_its_opted_out_phones_and_sends_the_rest_in_one_request(
        stack: Stack) -> None:
    phones = [_phone() for _ in range(6)]
    for phone in phones[1::2]:
        response = requests.put(f"{stack.api_url}/v1/consent/sms/{phone}", headers=AUTH,
                                json={"status": "opted_out", "categories": ["marketing"]},
                                timeout=10)
        assert response.status_code == 200, response.text
    response = requests.post(f"{stack.api_url}/v1/campaigns", headers=AUTH, timeout=30, json={
        "route": ["sms"], "text": "Spring sale", "category": "marketing",
        "recipients": [{"phone": p} for p in phones]})
    assert response.status_code == 202, response.text
    campaign_id = response.json()["id"]

    def view() -> dict[str, Any]:
        answer = requests.get(f"{stack.api_url}/v1/campaigns/{campaign_id}", headers=AUTH,
                              timeout=10)
        answer.raise_for_status()
        return answer.json()

    done = wait_for(lambda: (v := view())["counts"].get("suppressed") == 3
                    and sum(v["counts"].values()) == 6 and "queued" not in v["counts"] and v,
                    60, 0.2, "the campaign to settle")
    assert done["attempts"]["sms"]["suppressed"] == 3
    sent = [m for m in stack.sim_messages() if m["phone"] in {p.lstrip("+") for p in phones}]
    assert sorted(m["phone"] for m in sent) == sorted(p.lstrip("+") for p in phones[0::2])
    assert len({m["p_transaction_id"] for m in sent}) == 1  # one gateway request
