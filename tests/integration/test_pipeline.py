"""End to end: HTTP API → broker → worker → simulator over HTTP → callbacks → status."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator

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
                               text="Your order is ready", sms_text="Order ready (SMS)",
                               idempotency_key=key)
    assert again.status_code == 200 and again.json()["id"] == first
    other = stack.post_message(to={"phone": "+32470120000"}, route=["viber", "sms"],
                               text="Another body", idempotency_key=key)
    assert other.status_code == 409, other.text
    assert [e["field"] for e in other.json()["errors"]] == ["idempotency_key"]
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


# --- the gateway as its documents describe it ------------------------------------------

STATUS_EXTENDED_PHONES = {  # the simulator's ...01NN phones, expiry (0104) aside
    "0101": "VIBER_BLOCKED_BY_USER", "0102": "VIBER_USER_NOT_FOUND", "0103": "VIBER_NO_DEVICE",
    "0105": "VIBER_UNKNOWN_ERROR", "0106": "INVALID_SESSION", "0107": "PHONE_BLACKLISTED",
    "0108": "SPAM_DETECTED", "0109": "FROM_NOT_ALLOWED", "0110": "BAD_WORDS_FOUND",
    "0111": "PHONE_INCORRECT", "0112": "OPERATOR_NOT_ALLOWED"}


def test_every_undelivered_reason_falls_back_to_sms_at_once(stack: Stack) -> None:
    sent = {suffix: _send(stack, f"+3247012{suffix}") for suffix in STATUS_EXTENDED_PHONES}
    for suffix, message_id in sent.items():
        view = stack.wait_status(message_id, {"delivered"})
        assert [(a["channel"], a["status"]) for a in view["attempts"]] == [
            ("viber", "undelivered"), ("sms", "delivered")], suffix
        assert view["attempts"][0]["error"]["reason"] == STATUS_EXTENDED_PHONES[suffix].lower()
        assert "deadline_passed" not in [e["type"] for e in view["events"]]


def test_a_viber_expiry_report_falls_back_before_our_deadline(stack: Stack) -> None:
    """The gateway's VIBER_EXPIRED after its dlr_timeout (60 s, one simulated minute of 1 s
    here) moves the route on; the 8 s test deadline never fires."""
    stack.sim_config(minute_seconds=1.0)
    try:
        message_id = _send(stack, "+32470120104", dlr_timeout=60)
        view = stack.wait_status(message_id, {"delivered"})
    finally:
        stack.sim_config(minute_seconds=60.0)
    assert [(a["channel"], a["status"]) for a in view["attempts"]] == [
        ("viber", "expired"), ("sms", "delivered")]
    assert view["attempts"][0]["error"]["reason"] == "viber_expired"
    assert view["attempts"][0]["request"]["dlr_timeout"] == "60"
    assert "deadline_passed" not in [e["type"] for e in view["events"]]


def test_reports_without_p_transaction_id_match_by_msg_id(stack: Stack) -> None:
    stack.sim_config(echo_transaction_id=False)
    try:
        message_id = _send(stack, "+32470120000")
        view = stack.wait_status(message_id, {"seen"})
    finally:
        stack.sim_config(echo_transaction_id=True)
    reports = [e["detail"] for e in view["events"] if e["type"] == "report"]
    assert [r["kind"] for r in reports] == ["delivered", "seen"]
    assert all("p_transaction_id" not in r["raw"] and r["applied"] for r in reports)
    assert _channels_sent(stack, view) == ["viber"]


def test_a_report_before_the_sends_answer_is_applied_and_nothing_is_resent(
        stack: Stack) -> None:
    """The gateway reports before it answers the send. Whether the worker handles that
    report while the attempt is still ``sending`` (matched by attempt id) or after the
    answer is up to scheduling; either way one send, its answer recorded, no fallback."""
    stack.sim_config(report_before_answer=True)
    try:
        message_id = _send(stack, "+32470120000")
        view = stack.wait_status(message_id, {"seen"})
    finally:
        stack.sim_config(report_before_answer=False)
    attempt = view["attempts"][0]
    (sent,) = stack.sim_messages(attempt["id"])
    first_report = min(r["at"] for r in stack.simulator.state.reports()
                       if r["msg_id"] == sent["msg_id"])
    assert first_report < sent["answered_at"]  # the report did come first
    assert attempt["provider_message_id"] == sent["msg_id"]
    assert attempt["response"] == {"code": "0", "text": "OK"}
    assert [a["channel"] for a in view["attempts"]] == ["viber"]


# --- the account's own SMS fallback (SWITCHBOARD_MESSAGGIO_GATEWAY_FALLBACK=on) -------------

def _restart_worker(stack: Stack, **env: str) -> None:
    """Stop the worker gently (its tasks finish) and start one with ``env`` on top of the
    stack's environment (variables set to "" are dropped): the mode is a deployment setting,
    read when the adapter is built."""
    assert stack.worker is not None
    os.killpg(stack.worker.pid, signal.SIGTERM)
    stack.worker.wait(timeout=60)
    for name, value in env.items():
        if value:
            stack.env[name] = value
        else:
            stack.env.pop(name, None)
    stack.start_worker()


@pytest.fixture
def gateway_fallback(stack: Stack) -> Iterator[None]:
    """The account's SMS fallback switched on at the gateway, and Switchboard told so."""
    _restart_worker(stack, SWITCHBOARD_MESSAGGIO_GATEWAY_FALLBACK="on")
    stack.sim_config(sms_fallback=True, minute_seconds=1.0)
    try:
        yield
    finally:
        stack.sim_config(sms_fallback=False, minute_seconds=60.0)
        _restart_worker(stack, SWITCHBOARD_MESSAGGIO_GATEWAY_FALLBACK="")


def _person_got(stack: Stack, view: dict) -> list[tuple[str, str | None, bool]]:
    """Every message the gateway sent this person for this message: ours and its own."""
    return [(m["channel"], m["txt"], m["by_gateway"])
            for a in view["attempts"] for m in stack.sim_messages(a["id"])]


@pytest.mark.parametrize(("phone", "extra", "viber"), [
    ("+32470120102", {}, ("undelivered", "viber_user_not_found")),
    ("+32470120104", {"dlr_timeout": 60}, ("expired", "viber_expired")),
])
def test_with_the_gateways_own_fallback_the_person_gets_one_sms_and_the_timeline_shows_it(
        stack: Stack, gateway_fallback: None, phone: str, extra: dict,
        viber: tuple[str, str]) -> None:
    message_id = _send(stack, phone, **extra)
    view = stack.wait_status(message_id, {"delivered"})
    assert [(a["channel"], a["status"]) for a in view["attempts"]] == [
        ("viber", viber[0]), ("sms", "delivered")]
    viber_attempt, sms_attempt = view["attempts"]
    assert viber_attempt["error"]["reason"] == viber[1]
    assert _person_got(stack, view) == [("viber", "Your order is ready", False),
                                        ("sms", "Order ready (SMS)", True)]
    assert stack.sim_messages(sms_attempt["id"]) == []  # we sent no SMS
    assert sms_attempt["request"]["sent_by"] == "gateway"
    assert sms_attempt["provider_message_id"] == viber_attempt["provider_message_id"]
    fallback = [e for e in view["events"] if e["type"] == "fallback"]
    assert len(fallback) == 1 and fallback[0]["detail"]["by_provider"] is True
    sms_reports = [e["detail"] for e in view["events"]
                   if e["type"] == "report" and e["attempt_id"] == sms_attempt["id"]]
    assert [(r["kind"], r["applied"]) for r in sms_reports] == [("delivered", True)]
