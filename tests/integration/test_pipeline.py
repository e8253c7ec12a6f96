"""End to end: HTTP API → broker → worker → simulator over HTTP → callbacks → status."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.conftest import Stack, wait_for

pytestmark = pytest.mark.integration


def _send(stack: Stack, phone: str, **extra: object) -> str:
    response = stack.post_message(to={"phone": phone}, route=["viber", "sms"],
                                  text="Your order is ready", sms_text="Order ready (SMS)",
                                  **extra)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    return response.json()["id"]


def _channels_sent(stack: Stack, view: dict) -> list[str]:
    """What the gateway really received for this message, attempt by attempt."""
    return [m["channel"] for a in view["attempts"] for m in stack.sim_messages(a["id"])]


def test_viber_message_is_delivered_and_seen(stack: Stack) -> None:
    message_id = _send(stack, "+32470120000")
    view = stack.wait_status(message_id, {"seen"})
    assert [(a["channel"], a["status"]) for a in view["attempts"]] == [("viber", "seen")]
    assert view["attempts"][0]["provider_message_id"]
    assert _channels_sent(stack, view) == ["viber"]
    sent = stack.sim_messages(view["attempts"][0]["id"])[0]
    assert sent["txt"] == "Your order is ready" and sent["expiry_txt"] == "Order ready (SMS)"
    assert [e["type"] for e in view["events"]][:2] == ["queued", "submitted"]


def test_undelivered_viber_falls_back_to_sms_at_once(stack: Stack) -> None:
    message_id = _send(stack, "+32470120001")
    view = stack.wait_status(message_id, {"delivered"})
    assert [(a["channel"], a["status"]) for a in view["attempts"]] == [
        ("viber", "undelivered"), ("sms", "delivered")]
    assert view["attempts"][0]["error"]["reason"] == "viber_user_not_found"
    assert _channels_sent(stack, view) == ["viber", "sms"]
    sms = stack.sim_messages(view["attempts"][1]["id"])[0]
    assert sms["txt"] == "Order ready (SMS)"
    fallback = [e for e in view["events"] if e["type"] == "fallback"]
    assert len(fallback) == 1 and fallback[0]["detail"]["to_channel"] == "sms"


def test_no_report_falls_back_to_sms_after_the_deadline(stack: Stack) -> None:
    message_id = _send(stack, "+32470120002")
    view = stack.wait_status(message_id, {"delivered"}, timeout=40)
    assert [(a["channel"], a["status"]) for a in view["attempts"]] == [
        ("viber", "expired"), ("sms", "delivered")]
    assert view["attempts"][0]["error"]["reason"] == "deadline_passed"
    assert _channels_sent(stack, view) == ["viber", "sms"]
    assert [e["type"] for e in view["events"]].count("deadline_passed") == 1


def test_reply_is_recorded_as_an_event(stack: Stack) -> None:
    message_id = _send(stack, "+32470120003")
    view = wait_for(lambda: (v := stack.get_message(message_id)) and
                    any(e["type"] == "replied" for e in v["events"]) and v, 20,
                    message="the reply event")
    replies = [e for e in view["events"] if e["type"] == "replied"]
    assert replies[0]["detail"]["text"] == "Yes, confirmed"
    assert view["status"] == "seen"


def test_same_idempotency_key_sends_once(stack: Stack) -> None:
    key = f"order-{uuid.uuid4()}"
    first = _send(stack, "+32470120000", idempotency_key=key)
    again = stack.post_message(to={"phone": "+32470120000"}, route=["viber", "sms"],
                               text="Your order is ready", idempotency_key=key)
    assert again.status_code == 200 and again.json()["id"] == first
    view = stack.wait_status(first, {"seen"})
    assert len(view["attempts"]) == 1
    assert _channels_sent(stack, view) == ["viber"]


def test_python_client_send_is_dispatched_and_idempotent(stack: Stack) -> None:
    from shared.client import send

    key = f"client-{uuid.uuid4()}"
    fields = {"to": {"phone": "+32470120000"}, "route": ["viber"], "text": "from the client",
              "idempotency_key": key}
    message_id = send(**fields)
    assert send(**fields) == message_id
    view = stack.wait_status(message_id, {"seen"})
    assert _channels_sent(stack, view) == ["viber"]


def test_killed_worker_mid_send_still_sends_once(stack: Stack) -> None:
    """SIGKILL while the provider call is in flight: the report settles it, no resend."""
    stack.sim_config(latency=1.5)
    try:
        message_id = _send(stack, "+32470120000")
        # In flight: the gateway has the request (it answers only after its latency), and
        # the attempt is still "sending" (no answer yet). "sending" alone is set just before
        # the call, so killing on it could land before the request leaves.
        attempt_id = wait_for(lambda: (a := stack.get_message(message_id)["attempts"]) and
                              a[0]["id"], 20, 0.02, "the attempt")
        wait_for(lambda: stack.sim_messages(attempt_id)
                 and stack.get_message(message_id)["attempts"][0]["status"] == "sending",
                 20, 0.02, "the attempt to be in flight")
        stack.kill_worker()
    finally:
        stack.sim_config(latency=0.0)
    stack.start_worker()
    view = stack.wait_status(message_id, {"delivered", "seen"}, timeout=30)
    assert _channels_sent(stack, view) == ["viber"]
    assert [a["channel"] for a in view["attempts"]] == ["viber"]
