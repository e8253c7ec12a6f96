"""Provider failures end to end: retries that cannot duplicate, ambiguous timeouts that are
never resent, late reports after a fallback, and images uploaded once."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.integration.conftest import CLIENT_TIMEOUT, Stack, wait_for

pytestmark = pytest.mark.integration

# A 1x1 PNG: the simulator checks the image's magic bytes.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def _send(stack: Stack, phone: str, **extra: object) -> str:
    body = {"to": {"phone": phone}, "route": ["viber", "sms"], "text": "Hello", **extra}
    response = stack.post_message(**body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _events(view: dict, type_: str) -> list[dict]:
    return [e for e in view["events"] if e["type"] == type_]


def test_temporary_error_is_retried_and_sent_once(stack: Stack) -> None:
    stack.sim_config(fail_rate=1.0, fail_kinds=["temporary"])
    try:
        message_id = _send(stack, "+32470120000")
        wait_for(lambda: (v := stack.get_message(message_id)) and _events(v, "retry_scheduled"),
                 20, message="a retry after the gateway's -4")
    finally:
        stack.sim_config(fail_rate=0.0)
    view = stack.wait_status(message_id, {"seen"})
    retry = _events(view, "retry_scheduled")[0]["detail"]
    assert retry["reason"] == "temporary_error" and retry["code"] == "-4"
    attempt = view["attempts"][0]
    assert attempt["retries"] >= 1 and attempt["channel"] == "viber"
    assert len(stack.sim_messages(attempt["id"])) == 1  # -4 means "not accepted": no duplicate


def test_timeout_after_send_is_not_resent(stack: Stack) -> None:
    """The gateway accepts the message but answers after our read timeout: ambiguous."""
    stack.sim_config(fail_rate=1.0, fail_kinds=["slow"], slow_seconds=CLIENT_TIMEOUT + 1.5)
    try:
        message_id = _send(stack, "+32470120000")
        wait_for(lambda: (v := stack.get_message(message_id)) and _events(v, "submitted"),
                 20, message="the send call to time out")
    finally:
        stack.sim_config(fail_rate=0.0)
    view = stack.wait_status(message_id, {"seen"})
    attempt = view["attempts"][0]
    assert attempt["error"]["reason"] == "timeout_after_send"
    assert attempt["provider_message_id"]  # learnt from the report, matched by attempt id
    assert len(stack.sim_messages(attempt["id"])) == 1
    assert len(view["attempts"]) == 1


def test_late_delivery_after_fallback_is_recorded_on_the_viber_attempt(stack: Stack) -> None:
    message_id = _send(stack, "+32470120002")
    view = stack.wait_status(message_id, {"delivered"}, timeout=40)
    viber = view["attempts"][0]
    assert viber["status"] == "expired"
    msg_id = stack.sim_messages(viber["id"])[0]["msg_id"]
    requests.post(f"{stack.simulator.url}_sim/report", timeout=5, json={
        "msg_id": msg_id, "params": {"msg_id": msg_id, "p_transaction_id": viber["id"],
                                     "type": "delivery", "status": "delivered"}}
                  ).raise_for_status()
    view = wait_for(lambda: (v := stack.get_message(message_id))
                    and v["attempts"][0]["status"] == "delivered" and v, 20,
                    message="the late report to be applied")
    late = [e for e in _events(view, "report") if e["detail"].get("late")]
    assert len(late) == 1 and late[0]["attempt_id"] == viber["id"]
    assert view["status"] == "delivered"
    assert [a["channel"] for a in view["attempts"]] == ["viber", "sms"]


@pytest.fixture()
def image_server():
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", hits
    server.shutdown()


def test_image_url_is_uploaded_once_and_sent_as_image_id(stack: Stack, image_server) -> None:
    base, hits = image_server
    url = f"{base}/promo.png"
    ids = [_send(stack, "+32470120000", image_url=url,
                 button={"text": "Open", "url": "https://example.com"}) for _ in range(2)]
    views = [stack.wait_status(i, {"seen"}) for i in ids]
    sent = [stack.sim_messages(v["attempts"][0]["id"])[0] for v in views]
    assert sent[0]["image_id"] and sent[0]["image_id"] == sent[1]["image_id"]
    assert sent[0]["button_text"] == "Open" and sent[0]["txt"] == "Hello"
    assert hits.count("/promo.png") == 1  # the second message reused the uploaded image id


def test_wrong_callback_token_is_404_and_nothing_changes(stack: Stack) -> None:
    response = requests.post(f"{stack.api_url}/callbacks/messaggio/wrong-token", timeout=5,
                             data={"msg_id": "x", "type": "delivery", "status": "delivered"})
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def _messaggio_circuit(stack: Stack) -> dict:
    return requests.get(f"{stack.api_url}/healthz", timeout=CLIENT_TIMEOUT).json()[
        "providers"]["messaggio"]


def test_an_account_refusal_opens_the_circuit_instead_of_failing_each_message(
        stack: Stack) -> None:
    """The gateway refuses our signature (-2): every message would be refused alike. The
    circuit opens with the reason on /healthz, the messages wait (not failed), and once the
    account is fixed they are sent."""
    stack.sim_config(secret="rotated-by-someone-else")
    try:
        sent = [_send(stack, "+32470120000") for _ in range(3)]
        wait_for(lambda: _messaggio_circuit(stack).get("reason") == "auth_error", 30, 0.1,
                 "the circuit to open with the account's refusal as its reason")
        assert _messaggio_circuit(stack)["circuit"] in ("open", "half_open")
        scraped = requests.get(f"{stack.api_url}/metrics", timeout=CLIENT_TIMEOUT).text
        assert 'switchboard_circuit_state{provider="messaggio",reason="auth_error"}' in scraped
        for message_id in sent:
            view = stack.get_message(message_id)
            assert view is not None and view["status"] == "queued", view
            assert not _events(view, "attempt_failed"), view["events"]
        held = [m for m in sent if _events(stack.get_message(m) or {"events": []}, "held")]
        assert held, "at least the refused send is held behind the circuit"
    finally:
        stack.sim_config(secret="sandbox-secret")
    for message_id in sent:
        view = stack.wait_status(message_id, {"seen", "delivered"}, timeout=60)
        assert not [a for a in view["attempts"] if a["status"] == "failed"], view["attempts"]
    wait_for(lambda: _messaggio_circuit(stack)["circuit"] == "closed", 20, 0.1,
             "the circuit to close once a probe is accepted")
