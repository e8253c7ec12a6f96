"""The Rogerthat adapter: flags, buttons, the JSON-RPC envelope, error codes, callbacks.

Transport tests use a real HTTP server on 127.0.0.1 (port 0) answering canned JSON-RPC
replies, so requests/urllib3 raise the exceptions they raise in production.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from pydantic import SecretStr

from shared.providers import rogerthat
from shared.providers.base import (
    AccountRefusal,
    AmbiguousError,
    CallbackError,
    OutboundMessage,
    PermanentError,
    Recipient,
    RetryableError,
    SendContext,
    SendResult,
)
from shared.providers.rogerthat import (
    AlertFlag,
    ButtonUiFlag,
    DirtyBehavior,
    MemberStatus,
    MessageFlag,
    RogerthatService,
    alert_flags,
    answers,
    attachments,
    callback_answer,
    check_alert_flags,
    message_flags,
    parse_callback,
    validate_buttons,
)
from shared.schemas import SendRequest

API_KEY, SERVICE_KEY = "api-key-123", "service-key-456"
MESSAGE_KEY = "7bcc1b94-c193-47bf-ae85-157565ac0e78"
SEND_KEYS = {"parent_message_key", "message", "answers", "flags", "members", "branding", "tag",
             "service_identity", "alert_flags", "dismiss_button_ui_flags", "context",
             "attachments", "broadcast_guid", "step_id"}


def service(url: str = "http://127.0.0.1:9/api/1", timeout: float = 2.0,
            service_key: str = SERVICE_KEY) -> RogerthatService:
    session = requests.Session()
    session.trust_env = False  # never route the local test server through an env proxy
    return RogerthatService(url, API_KEY, service_key, timeout=timeout, session=session)


def message(**fields: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "attempt_id": "att-1", "channel": "rogerthat", "phones": (), "text": "Shipped?",
        "email": "john@example.com", "app_id": "em-be-app",
        "content": {"buttons": [{"id": "yes", "caption": "Yes"},
                                {"id": "call", "caption": "Call", "action": "tel:+3212",
                                 "ui_flags": 1}]},
    }
    values.update(fields)
    return OutboundMessage(**values)


# --------------------------------------------------------------------------------------
# A tiny real JSON-RPC server
# --------------------------------------------------------------------------------------

Behaviour = Callable[[BaseHTTPRequestHandler, bytes], None]


class Server:
    """Serves one behaviour; records (path, headers, parsed body) of every request."""

    def __init__(self) -> None:
        self.behaviour: Behaviour = rpc_result(MESSAGE_KEY)
        self.seen: list[tuple[str, dict[str, str], Any]] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.seen.append((self.path, dict(self.headers), json.loads(body)))
                outer.behaviour(self, body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def last(self) -> dict[str, Any]:
        return self.seen[-1][2]


def reply(status: int, body: bytes, reason: str | None = None,
          headers: dict[str, str] | None = None) -> Behaviour:
    def behaviour(handler: BaseHTTPRequestHandler, _: bytes) -> None:
        handler.send_response(status, reason)
        out = {"Content-Type": "application/json-rpc; charset=utf-8",
               "Content-Length": str(len(body)), **(headers or {})}
        for name, value in out.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)
    return behaviour


def rpc_result(result: Any) -> Behaviour:
    """A 200 echoing the request id, like the real server."""
    def behaviour(handler: BaseHTTPRequestHandler, body: bytes) -> None:
        rpc_id = json.loads(body)["id"]
        out = json.dumps({"id": rpc_id, "result": result, "error": None}).encode()
        reply(200, out)(handler, body)
    return behaviour


def rpc_error(error: dict[str, Any]) -> Behaviour:
    def behaviour(handler: BaseHTTPRequestHandler, body: bytes) -> None:
        rpc_id = json.loads(body)["id"]
        reply(200, json.dumps({"id": rpc_id, "result": None, "error": error}).encode())(
            handler, body)
    return behaviour


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


# --------------------------------------------------------------------------------------
# Constants and flags (§1.5)
# --------------------------------------------------------------------------------------

def test_constants():
    assert MessageFlag.ALLOW_DISMISS == 1 and MessageFlag.AUTO_LOCK == 64
    assert AlertFlag.SILENT == 1 and AlertFlag.RING_60 == 32 and AlertFlag.INTERVAL_3600 == 4096
    assert ButtonUiFlag.EXPECT_NEXT_WAIT_5 == 1 and ButtonUiFlag.AUTHORIZE_LOCATION == 2
    assert [int(s) for s in MemberStatus] == [1, 2, 4, 8, 16]
    assert [int(d) for d in DirtyBehavior] == [1, 2, 3]


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({}, 2),
    ({"vibrate": False}, 0),
    ({"silent": True}, 1),
    ({"silent": True, "vibrate": False}, 1),
    ({"ring_seconds": 5}, 2 | 4),
    ({"ring_seconds": 15, "repeat_seconds": 300}, 2 | 8 | 1024),
    ({"ring_seconds": 60, "repeat_seconds": 3600, "vibrate": False}, 32 | 4096),
    ({"ring_seconds": 30, "repeat_seconds": 5}, 2 | 16 | 64),
    ({"repeat_seconds": 900}, 2 | 2048),
    ({"repeat_seconds": 15}, 2 | 128),
    ({"repeat_seconds": 30}, 2 | 256),
    ({"repeat_seconds": 60}, 2 | 512),
])
def test_alert_flags_valid(kwargs, expected):
    assert alert_flags(**kwargs) == expected


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"silent": True, "vibrate": True}, "silent alert cannot also vibrate"),
    ({"silent": True, "ring_seconds": 5}, "silent alert cannot also ring"),
    ({"silent": True, "repeat_seconds": 60}, "silent alert cannot also repeat"),
    ({"silent": True, "ring_seconds": 0}, "silent alert cannot also ring"),
    ({"silent": True, "vibrate": True, "ring_seconds": 5, "repeat_seconds": 5},
     "vibrate/ring/repeat"),
    ({"ring_seconds": 10}, "ring_seconds must be one of 5, 15, 30, 60"),
    ({"ring_seconds": 0}, "ring_seconds"),
    ({"ring_seconds": True}, "ring_seconds"),
    ({"repeat_seconds": 120}, "repeat_seconds must be one of 5, 15, 30, 60, 300, 900, 3600"),
    ({"repeat_seconds": -5}, "repeat_seconds"),
])
def test_alert_flags_invalid(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        alert_flags(**kwargs)


@pytest.mark.parametrize(("value", "problem"), [
    (2 | 4 | 8, "more than one RING"), (64 | 128, "more than one INTERVAL"),
    (8192, "unknown bits"), (-1, "unknown bits"),
])
def test_check_alert_flags(value, problem):
    assert check_alert_flags(2 | 8 | 1024) == 1034
    with pytest.raises(ValueError, match=problem):
        check_alert_flags(value)
    with pytest.raises(TypeError):
        check_alert_flags("2")


def test_message_flags():
    assert message_flags() == 0
    assert message_flags(allow_dismiss=True) == 1
    assert message_flags(auto_lock=True) == 64
    assert message_flags(True, True) == 65


# --------------------------------------------------------------------------------------
# Buttons and attachments (§1.6)
# --------------------------------------------------------------------------------------

def test_answers_always_carry_type_and_action():
    built = answers([{"id": "a", "caption": "A"},
                     {"id": "b", "caption": "B", "action": "mailto:x@y.z", "ui_flags": 3},
                     {"id": "c", "caption": "C", "action": ""}])
    assert built == [
        {"id": "a", "caption": "A", "action": None, "ui_flags": 0, "type": "button"},
        {"id": "b", "caption": "B", "action": "mailto:x@y.z", "ui_flags": 3, "type": "button"},
        {"id": "c", "caption": "C", "action": None, "ui_flags": 0, "type": "button"},
    ]
    assert answers([]) == []


@pytest.mark.parametrize("action", ["http://a.b", "https://a.b/c", "geo:50.8,4.3", "tel:+32",
                                    "mailto:a@b.c", "confirm://really", "HTTPS://A.B"])
def test_buttons_accept_every_action_scheme(action):
    validate_buttons([{"id": "a", "caption": "A", "action": action}])


@pytest.mark.parametrize(("buttons", "problem"), [
    ([{"id": "", "caption": "A"}], "empty id"),
    ([{"caption": "A"}], "empty id"),
    ([{"id": "a", "caption": ""}], "empty caption"),
    ([{"id": "a"}], "empty caption"),
    ([{"id": "a", "caption": "A"}, {"id": "a", "caption": "B"}], "duplicate button id 'a'"),
    ([{"id": "a", "caption": "A", "action": "ftp://x"}], "action scheme"),
    ([{"id": "a", "caption": "A", "action": "javascript:alert(1)"}], "action scheme"),
    ([{"id": "a", "caption": "A", "action": "no-scheme"}], "action scheme"),
    ([{"id": "a", "caption": "A", "ui_flags": 4}], "ui_flags 4 > 3"),
    ([{"id": "a", "caption": "A", "ui_flags": -1}], "ui_flags"),
    ([{"id": "a", "caption": "A", "ui_flags": "1"}], "ui_flags"),
])
def test_validate_buttons_refuses(buttons, problem):
    with pytest.raises(ValueError, match=problem):
        validate_buttons(buttons)


def test_attachments():
    item = {"content_type": "application/pdf", "download_url": "https://x.y/a.pdf",
            "name": "a.pdf", "size": 12}
    assert attachments([item]) == [item]
    assert attachments([{"content_type": "image/png", "url": "http://x.y/a.png",
                         "name": "a"}])[0]["download_url"] == "http://x.y/a.png"
    with pytest.raises(ValueError, match="content_type"):
        attachments([{**item, "content_type": "image/gif"}])
    with pytest.raises(ValueError, match="download_url"):
        attachments([{**item, "download_url": "ftp://x.y/a.pdf"}])


# --------------------------------------------------------------------------------------
# messaging.send params (§1.7)
# --------------------------------------------------------------------------------------

def test_send_params_have_every_sdk_key():
    params = service().build_send_params(message())
    assert set(params) == SEND_KEYS
    assert "parent_key" not in params
    assert params == {
        "parent_message_key": None,
        "message": "Shipped?",
        "answers": [
            {"id": "yes", "caption": "Yes", "action": None, "ui_flags": 0, "type": "button"},
            {"id": "call", "caption": "Call", "action": "tel:+3212", "ui_flags": 1,
             "type": "button"},
        ],
        "flags": 0,
        "members": [{"member": "john@example.com", "app_id": "em-be-app", "alert_flags": 2}],
        "branding": None,
        "tag": None,
        "service_identity": "+default+",
        "alert_flags": 2,
        "dismiss_button_ui_flags": 0,
        "context": "att-1",
        "attachments": [],
        "broadcast_guid": None,
        "step_id": None,
    }


def test_send_params_from_content():
    content = {"buttons": [], "allow_dismiss": True, "auto_lock": True,
               "alert_flags": 2 | 8 | 1024, "branding": "b" * 64, "tag": "order-7",
               "parent_message_key": "root-key",
               "attachments": [{"content_type": "image/jpeg", "download_url": "https://x/a.jpg",
                                "name": "a.jpg", "size": 10}]}
    params = service().build_send_params(message(content=content, app_id=None))
    assert params["flags"] == 65 and params["answers"] == []
    assert params["alert_flags"] == 1034
    assert params["members"] == [{"member": "john@example.com", "app_id": "rogerthat",
                                  "alert_flags": 1034}]
    assert (params["branding"], params["tag"], params["parent_message_key"]) == (
        "b" * 64, "order-7", "root-key")
    assert params["attachments"] == content["attachments"]


@pytest.mark.parametrize(("fields", "reason", "detail"), [
    ({"content": {}}, "invalid_message", "allow dismiss"),
    ({"content": {"buttons": [], "allow_dismiss": False}}, "invalid_message", "allow dismiss"),
    ({"content": {"buttons": [{"id": "a", "caption": ""}]}}, "invalid_message", "caption"),
    ({"content": {"allow_dismiss": True, "alert_flags": 4 | 8}}, "invalid_message", "RING"),
    ({"content": {"allow_dismiss": True, "tag": "__rt__x"}}, "invalid_message", "__rt__"),
    ({"content": {"allow_dismiss": True, "tag": "x" * 501}}, "invalid_message", "500"),
    ({"email": None}, "invalid_message", "email"),
    ({"channel": "viber"}, "unsupported_channel", "viber"),
])
def test_send_params_refused(fields, reason, detail):
    with pytest.raises(PermanentError) as info:
        service().build_send_params(message(**fields))
    assert info.value.reason == reason
    assert detail in info.value.detail


def test_summarize_has_no_api_key():
    summary = service("http://h/api/1").summarize(message())
    assert summary == {"url": "http://h/api/1", "method": "messaging.send", "id": "att-1",
                       "params": service().build_send_params(message())}
    assert API_KEY not in json.dumps(summary)


# --------------------------------------------------------------------------------------
# From a send request: recipient() and outbound()
# --------------------------------------------------------------------------------------

def send_request(**fields: Any) -> SendRequest:
    values: dict[str, Any] = {"to": {"email": "john@example.com"}, "route": ["rogerthat"],
                              "text": "Shipped?",
                              "buttons": [{"id": "yes", "caption": "Yes"}]}
    values.update(fields)
    return SendRequest.model_validate(values)


def context(channel: str = "rogerthat") -> SendContext:
    return SendContext(attempt_id="att-1", channel=channel, app_id="default")


def test_recipient_is_the_email_in_its_messenger_app():
    assert service().recipient(send_request(), "rogerthat") == Recipient(
        "john@example.com", "rogerthat")
    request = send_request(to={"email": "john@example.com", "app_id": "em-be-app"})
    assert service().recipient(request, "rogerthat") == Recipient("john@example.com",
                                                                  "em-be-app")


def test_recipient_and_outbound_refuse_another_providers_channel():
    with pytest.raises(PermanentError) as info:
        service().recipient(send_request(), "viber")
    assert info.value.reason == "unsupported_channel"
    with pytest.raises(PermanentError):
        service().outbound(send_request(), context("sms"))


def test_outbound_carries_member_text_and_messenger_content():
    request = send_request(
        to={"email": "john@example.com", "app_id": "em-be-app"},
        texts={"rogerthat": "Shipped? (messenger)"}, allow_dismiss=True, auto_lock=True,
        branding="brand-1", tag="order-7", parent_message_key="root-key",
        alert={"ring_seconds": 15},
        attachments=[{"content_type": "image/png", "url": "https://x.example/a.png",
                      "name": "a.png", "size": 3}])
    msg = service().outbound(request, context())
    assert (msg.attempt_id, msg.channel, msg.phones, msg.text, msg.email, msg.app_id) == (
        "att-1", "rogerthat", (), "Shipped? (messenger)", "john@example.com", "em-be-app")
    assert msg.content == {
        "buttons": [{"id": "yes", "caption": "Yes", "action": None, "ui_flags": 0}],
        "allow_dismiss": True, "auto_lock": True, "branding": "brand-1",
        "alert_flags": int(AlertFlag.VIBRATE | AlertFlag.RING_15), "tag": "order-7",
        "parent_message_key": "root-key",
        "attachments": [{"content_type": "image/png", "download_url": "https://x.example/a.png",
                         "name": "a.png", "size": 3}], "rpc_retries": 0}
    params = service().build_send_params(msg)  # what the adapter builds, it can send
    assert params["members"] == [{"member": "john@example.com", "app_id": "em-be-app",
                                  "alert_flags": 10}]
    assert (params["flags"], params["context"]) == (65, "att-1")


def test_outbound_defaults_the_app_and_vibrates():
    msg = service().outbound(send_request(), context())
    assert (msg.app_id, msg.content["alert_flags"]) == ("rogerthat", int(AlertFlag.VIBRATE))


def test_outbound_content_the_messenger_refuses_is_permanent(monkeypatch):
    def refuse(request: SendRequest) -> dict[str, Any]:
        raise ValueError("ring_seconds must be one of 5, 15, 30, 60")
    monkeypatch.setattr(rogerthat, "content_from_request", refuse)
    with pytest.raises(PermanentError) as info:
        service().outbound(send_request(), context())
    assert info.value.reason == "invalid_message"
    assert "ring_seconds" in info.value.detail


# --------------------------------------------------------------------------------------
# The wire: envelope, headers, results
# --------------------------------------------------------------------------------------

def test_send_posts_envelope_with_attempt_id(server):
    result = service(server.url).send(message())
    assert isinstance(result, SendResult)
    assert result.provider_message_ids == {"john@example.com": MESSAGE_KEY}
    assert (result.code, result.detail) == ("ok", "")
    assert json.loads(result.raw) == {"id": "att-1", "result": MESSAGE_KEY, "error": None}
    path, headers, body = server.seen[0]
    assert path == "/api/1"
    assert headers["Content-Type"] == "application/json-rpc; charset=utf-8"
    assert headers["X-Nuntiuz-API-Key"] == API_KEY
    assert set(body) == {"id", "method", "params"}
    assert body["id"] == "att-1" and body["method"] == "messaging.send"
    assert body["params"] == service().build_send_params(message())


def test_send_without_message_key_is_ambiguous(server):
    server.behaviour = rpc_result(None)
    with pytest.raises(AmbiguousError) as info:
        service(server.url).send(message())
    assert info.value.reason == "no_message_key"


def test_call_returns_result_as_is(server):
    server.behaviour = rpc_result({"cursor": None, "friends": []})
    assert service(server.url).call("friend.list", {}, "rpc-9") == {"cursor": None,
                                                                     "friends": []}
    assert server.last == {"id": "rpc-9", "method": "friend.list", "params": {}}
    with pytest.raises(ValueError):
        service(server.url).call("friend.list", {}, "")


def test_seal_envelope(server):
    server.behaviour = rpc_result(None)
    assert service(server.url).seal(MESSAGE_KEY, rpc_id="seal-1") is None
    assert server.last == {"id": "seal-1", "method": "messaging.seal", "params": {
        "message_key": MESSAGE_KEY, "parent_message_key": None, "dirty_behavior": 3}}
    service(server.url).seal("k2", "root", DirtyBehavior.NORMAL, rpc_id="seal-2")
    assert server.last["params"] == {"message_key": "k2", "parent_message_key": "root",
                                     "dirty_behavior": 1}
    with pytest.raises(ValueError, match="dirty_behavior"):
        service(server.url).seal("k", dirty_behavior=4, rpc_id="seal-3")


def test_invite_and_break_up_envelopes(server):
    server.behaviour = rpc_result(None)
    svc = service(server.url)
    svc.invite("john@example.com", "em-be-app", name="John", message="Hi", language="nl",
               tag="t-1", rpc_id="inv-1")
    assert server.last == {"id": "inv-1", "method": "friend.invite", "params": {
        "email": "john@example.com", "name": "John", "message": "Hi", "language": "nl",
        "tag": "t-1", "service_identity": "+default+", "app_id": "em-be-app"}}
    svc.invite("jane@example.com", "rogerthat", rpc_id="inv-2")
    assert server.last["params"] == {
        "email": "jane@example.com", "name": None, "message": None, "language": None,
        "tag": None, "service_identity": "+default+", "app_id": "rogerthat"}
    svc.break_up("john@example.com", "em-be-app", rpc_id="bu-1")
    assert server.last == {"id": "bu-1", "method": "friend.break_up", "params": {
        "email": "john@example.com", "service_identity": "+default+", "app_id": "em-be-app"}}


# --------------------------------------------------------------------------------------
# Error classification (§1.4)
# --------------------------------------------------------------------------------------

ERROR_TABLE = [
    (1000, RetryableError, "provider_error"),
    (1001, PermanentError, "invalid_request"),
    (1002, PermanentError, "service_disabled"),
    (1003, PermanentError, "invalid_request"),
    (1004, PermanentError, "invalid_request"),
    (1005, PermanentError, "invalid_request"),
    (1006, PermanentError, "invalid_request"),
    (1007, PermanentError, "invalid_request"),
    (1009, RetryableError, "still_running"),
    (20000, PermanentError, "invalid_email"),
    (20001, PermanentError, "already_invited_recently"),
    (20002, PermanentError, "invited_too_often"),
    (20003, PermanentError, "cannot_invite_self"),
    (20004, PermanentError, "no_email_invitations"),
    (20005, PermanentError, "cannot_request_location"),
    (20006, PermanentError, "user_not_found"),
    (20007, PermanentError, "already_friend"),
    (20008, PermanentError, "cannot_invite_service"),
    (30000, PermanentError, "not_a_friend"),
    (30052, PermanentError, "member_not_found"),
    (30012, PermanentError, "error_30012"),
    (1008, PermanentError, "error_1008"),
    (60017, PermanentError, "error_60017"),
]


@pytest.mark.parametrize(("code", "cls", "reason"), ERROR_TABLE)
def test_error_codes(server, code, cls, reason):
    server.behaviour = rpc_error({"code": code, "message": f"message {code}"})
    with pytest.raises(cls) as info:
        service(server.url).send(message())
    assert type(info.value) is cls
    assert info.value.reason == reason
    assert info.value.code == str(code)
    assert info.value.detail == f"message {code}"


def test_error_detail_carries_extra_fields(server):
    server.behaviour = rpc_error({"code": 1001, "message": "Missing argument", "name": "flags"})
    with pytest.raises(PermanentError) as info:
        service(server.url).send(message())
    assert info.value.detail == "Missing argument (name=flags)"
    server.behaviour = rpc_error({"code": 30000, "message": "Member is not in your friends list.",
                                  "member": "a@b.c", "app_id": "rogerthat"})
    with pytest.raises(PermanentError) as info:
        service(server.url).send(message())
    assert info.value.reason == "not_a_friend"
    assert "member=a@b.c" in info.value.detail and "app_id=rogerthat" in info.value.detail


def test_http_401_is_auth_error(server):
    server.behaviour = reply(401, b"", reason="Missing X-Nuntiuz-API-Key, cannot authenticate!")
    with pytest.raises(AccountRefusal) as info:  # every message would be refused alike
        service(server.url).send(message())
    assert info.value.reason == "auth_error"
    assert info.value.code == "http_401"
    assert "cannot authenticate" in info.value.detail


@pytest.mark.parametrize(("status", "cls"), [
    (400, PermanentError), (403, PermanentError), (404, PermanentError),
    (302, PermanentError), (429, RetryableError), (500, RetryableError),
    (502, RetryableError), (503, RetryableError),
])
def test_http_status_classes(server, status, cls):
    server.behaviour = reply(status, b"nope", headers={"Location": server.url})
    with pytest.raises(cls) as info:
        service(server.url).send(message())
    assert type(info.value) is cls
    assert info.value.reason == info.value.code == f"http_{status}"
    assert len(server.seen) == 1  # no redirect followed, no retry here


def test_http_429_keeps_retry_after(server):
    server.behaviour = reply(429, b"", headers={"Retry-After": "7"})
    with pytest.raises(RetryableError) as info:
        service(server.url).send(message())
    assert info.value.retry_after == 7.0


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "empty_response"),
    (b"   ", "empty_response"),
    (b"<html>proxy error</html>", "unreadable_response"),
    (b"[1, 2]", "unreadable_response"),
    (b'{"id": "att-1"}', "unreadable_response"),
    (b'{"id": "other", "result": "k", "error": null}', "unreadable_response"),
    (b'{"id": "att-1", "result": null, "error": {"message": "no code"}}',
     "unreadable_response"),
    (b'{"id": "att-1", "result": null, "error": "boom"}', "unreadable_response"),
])
def test_unreadable_200_is_retryable(server, body, reason):
    server.behaviour = reply(200, body)
    with pytest.raises(RetryableError) as info:
        service(server.url).send(message())
    assert info.value.reason == reason


def test_read_timeout_is_retryable(server):
    server.behaviour = lambda handler, body: server.release.wait(3)
    with pytest.raises(RetryableError) as info:
        service(server.url, timeout=0.3).send(message())
    assert info.value.reason == "timeout_after_send"
    assert len(server.seen) == 1


def test_connection_dropped_is_retryable(server):
    server.behaviour = lambda handler, body: None  # read it all, then hang up, no reply
    with pytest.raises(RetryableError) as info:
        service(server.url).send(message())
    assert info.value.reason == "connection_dropped"


def test_closed_port_is_retryable():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(RetryableError) as info:
        service(f"http://127.0.0.1:{port}/api/1").send(message())
    assert info.value.reason == "connection_failed"


# --------------------------------------------------------------------------------------
# Settings and the service key
# --------------------------------------------------------------------------------------

def _settings(url: str | None) -> SimpleNamespace:
    return SimpleNamespace(rogerthat_url=url, rogerthat_api_key=SecretStr("ak"),
                           rogerthat_service_key=SecretStr("sk"),
                           rogerthat_timeout_seconds=4.0, rogerthat_simulator_port=8026)


def test_from_settings():
    svc = RogerthatService.from_settings(_settings(None))  # type: ignore[arg-type]
    assert svc.url == "http://127.0.0.1:8026/api/1"
    assert (svc.api_key, svc.service_key, svc.timeout) == ("ak", "sk", 4.0)
    real = RogerthatService.from_settings(_settings("https://rogerth.at/api/1"))  # type: ignore[arg-type]
    assert real.url == "https://rogerth.at/api/1"
    assert (RogerthatService.name, RogerthatService.channels) == ("rogerthat", ("rogerthat",))
    assert RogerthatService.uses_conversations is False


def test_verify_service_key():
    svc = service()
    assert svc.verify_service_key(SERVICE_KEY)
    assert not svc.verify_service_key(SERVICE_KEY + "x")
    assert not svc.verify_service_key("wrong")
    assert not svc.verify_service_key("")
    assert not svc.verify_service_key(None)
    assert not svc.verify_service_key("ünïcode")
    assert not service(service_key="").verify_service_key("")
    assert not service(service_key="").verify_service_key("anything")


# --------------------------------------------------------------------------------------
# Callbacks (§1.8)
# --------------------------------------------------------------------------------------

USER = {"email": "john@example.com", "name": "John", "language": "en", "avatar_url": "https://a",
        "app_id": "em-be-app"}


def envelope(method: str, params: Any, rpc_id: Any = "cb-1") -> dict[str, Any]:
    return {"id": rpc_id, "method": method, "params": params}


def update(status: int, **extra: Any) -> dict[str, Any]:
    params = {"status": status, "received_timestamp": 1301396903, "acked_timestamp": 0,
              "member": "john@example.com", "message_key": MESSAGE_KEY,
              "parent_message_key": MESSAGE_KEY, "tag": "order-7",
              "service_identity": "+default+", "user_details": [USER]}
    params.update(extra)
    return envelope("messaging.update", params)


def test_update_received_is_delivered():
    env = update(1, answer_id=None)
    event = parse_callback(env)
    assert event.kind == "delivered"
    assert event.dedupe_key == "rogerthat:cb-1"
    assert event.provider_message_id == MESSAGE_KEY
    assert event.attempt_ref is None
    assert event.status == "1"
    assert event.text is None and event.reason is None
    assert event.occurred_at == datetime.fromtimestamp(1301396903, UTC)
    assert event.data == {"member": "john@example.com", "app_id": "em-be-app",
                          "tag": "order-7", "parent_message_key": MESSAGE_KEY}
    assert event.raw == env


def test_update_answered_is_replied():
    event = parse_callback(update(7, answer_id="yes", acked_timestamp=1301397000,
                                  result_key="rk"))
    assert event.kind == "replied"
    assert event.text == "yes"
    assert event.data["button_id"] == "yes" and event.data["dismissed"] is False
    assert event.status == "7"
    assert event.occurred_at == datetime.fromtimestamp(1301397000, UTC)


def test_update_dismissed_is_replied_dismissed():
    event = parse_callback(update(7, answer_id=None, acked_timestamp=1301397000))
    assert event.kind == "replied"
    assert event.text is None
    assert event.data["button_id"] is None and event.data["dismissed"] is True


@pytest.mark.parametrize(("status", "extra", "kind", "reason"), [
    (3, {}, "seen", None),  # acked, but no answer_id key at all
    (5, {"answer_id": None}, "seen", None),  # read
    (4, {}, "seen", None),
    (2, {"answer_id": "yes"}, "replied", None),
    (1 | 8, {"answer_id": None}, "delivered", None),
    (8, {}, "interim", "deleted"),
    (16, {}, "interim", "deleted"),
    (8 | 16, {}, "interim", "deleted"),
])
def test_update_status_bits(status, extra, kind, reason):
    event = parse_callback(update(status, **extra))
    assert (event.kind, event.reason, event.status) == (kind, reason, str(status))


@pytest.mark.parametrize(("env", "field"), [
    ({"method": "test.test", "params": {"value": "v"}}, "id"),
    (envelope("test.test", {"value": "v"}, rpc_id=""), "id"),
    (envelope("test.test", {"value": "v"}, rpc_id=17), "id"),
    ({"id": "cb-1", "params": {"value": "v"}}, "method"),
    (envelope("", {"value": "v"}), "method"),
    (envelope("messaging.form_update", {"status": 3}), "method"),
    (envelope("system.api_call", {}), "method"),
    ({"id": "cb-1", "method": "test.test"}, "params"),
    (envelope("test.test", ["v"]), "params"),
    (envelope("test.test", "v"), "params"),
    (envelope("test.test", {}), "value"),
    (envelope("test.test", {"value": 5}), "value"),
    (envelope("messaging.update", {"status": 1}), "message_key"),
    (envelope("messaging.update", {"status": 1, "message_key": ""}), "message_key"),
    (envelope("messaging.update", {"message_key": "k", "status": "1"}), "status"),
    (envelope("messaging.update", {"message_key": "k", "status": True}), "status"),
    (envelope("messaging.update", {"message_key": "k", "status": 0}), "status"),
    (envelope("messaging.poke", {"tag": "menu"}), "email"),
    (envelope("friend.invited", {"name": "x"}), "email"),
    (envelope("friend.broke_up", {}), "email"),
    (envelope("friend.update", {"user_details": {"name": "x"}}), "email"),
    (envelope("friend.invite_result", {"email": "a@b.c"}), "result"),
])
def test_callback_errors(env, field):
    with pytest.raises(CallbackError) as info:
        parse_callback(env)
    assert info.value.field == field


def test_unsupported_method_message():
    with pytest.raises(CallbackError, match="unsupported callback method 'messaging.x'"):
        parse_callback(envelope("messaging.x", {}))


def test_poke():
    event = parse_callback(envelope("messaging.poke", {
        "email": "john@example.com", "tag": "menu-1", "result_key": "rk", "context": "ctx",
        "service_identity": "+default+", "user_details": [USER], "timestamp": 1301396903}))
    assert event.kind == "poke"
    assert event.provider_message_id is None
    assert event.data == {"email": "john@example.com", "tag": "menu-1", "context": "ctx",
                          "app_id": "em-be-app"}
    assert event.occurred_at == datetime.fromtimestamp(1301396903, UTC)


def test_flow_member_result():
    params = {"message_flow_run_id": "run-1", "member": "john@example.com",
              "steps": [{"step_type": "message_step", "step_id": "s1", "answer_id": "yes"}],
              "end_id": "end-1", "flush_id": None, "parent_message_key": "pk", "tag": "t"}
    event = parse_callback(envelope("messaging.flow_member_result", params))
    assert event.kind == "flow_result"
    assert event.data == params


def test_friend_invited():
    event = parse_callback(envelope("friend.invited", {
        "email": "john@example.com", "name": "John Doe", "message": "Account ABCD-1234",
        "language": "en", "tag": None, "origin": "user_invite",
        "service_identity": "+default+", "user_details": [USER]}, rpc_id="inv-cb"))
    assert event.kind == "contact"
    assert event.dedupe_key == "rogerthat:inv-cb"
    assert event.data["change"] == "invited"
    assert event.data["email"] == "john@example.com"
    assert event.data["app_id"] == "em-be-app"
    assert event.data["name"] == "John Doe"
    assert event.data["origin"] == "user_invite"
    assert event.data["message"] == "Account ABCD-1234"


@pytest.mark.parametrize(("params", "app_id"), [
    ({"email": "a@b.c"}, "rogerthat"),
    ({"email": "a@b.c", "app_id": "x-app"}, "x-app"),
    ({"email": "a@b.c", "user_details": {"app_id": "single"}}, "single"),
    ({"email": "a@b.c", "user_details": []}, "rogerthat"),
])
def test_friend_invited_app_id_fallbacks(params, app_id):
    assert parse_callback(envelope("friend.invited", params)).data["app_id"] == app_id


@pytest.mark.parametrize(("params", "result", "email"), [
    ({"email": "john@example.com", "result": "accepted", "user_details": [USER]},
     "accepted", "john@example.com"),
    ({"email": None, "result": "decline", "tag": "t-1", "user_details": [USER]},
     "decline", "john@example.com"),
    ({"email": None, "result": "decline", "tag": "t-1"}, "decline", None),
    ({"email": "john@example.com", "result": "established"}, "established",
     "john@example.com"),
])
def test_friend_invite_result(params, result, email):
    event = parse_callback(envelope("friend.invite_result", params))
    assert event.kind == "contact"
    assert event.data["change"] == "invite_result"
    assert event.data["result"] == result
    assert event.data["email"] == email


def test_friend_broke_up_and_update():
    broke = parse_callback(envelope("friend.broke_up", {
        "email": "john@example.com", "service_identity": "+default+", "user_details": [USER]}))
    assert (broke.kind, broke.data["change"], broke.data["email"], broke.data["app_id"]) == (
        "contact", "broke_up", "john@example.com", "em-be-app")
    upd = parse_callback(envelope("friend.update", {"user_details": USER}))
    assert (upd.kind, upd.data["change"], upd.data["email"], upd.data["app_id"]) == (
        "contact", "update", "john@example.com", "em-be-app")


def test_test_callback_and_answer():
    event = parse_callback(envelope("test.test", {"value": "f00-uuid"}, rpc_id="t-1"))
    assert (event.kind, event.data, event.dedupe_key) == ("test", {"value": "f00-uuid"},
                                                          "rogerthat:t-1")
    assert callback_answer("t-1", "f00-uuid") == {"id": "t-1", "result": "f00-uuid",
                                                  "error": None}
    assert service().callback_answer("x", None) == {"id": "x", "result": None, "error": None}
    assert service().parse_callback(envelope("test.test", {"value": "v"})).kind == "test"


# --------------------------------------------------------------------------------------
# messaging.start_local_flow (§1.7)
# --------------------------------------------------------------------------------------

FLOW_XML = ('<?xml version="1.0" encoding="utf-8"?>\n'
            '<messageFlowDefinition xmlns="https://rogerth.at/api/1/MessageFlow.xsd" '
            'name="f" language="nl" startReference="end_done"><end id="end_done" />'
            '</messageFlowDefinition>')
RUN_ID = "0b7a2a54-6a1c-4f0e-9a51-8d0f5a3c2e11"


def test_start_local_flow_envelope(server):
    server.behaviour = rpc_result(RUN_ID)
    run_id = service(server.url).start_local_flow(FLOW_XML, "john@example.com", "em-be-app",
                                                  "flow-run-1", tag="t-1")
    assert run_id == RUN_ID
    assert server.last == {"id": "flow-run-1", "method": "messaging.start_local_flow",
                           "params": {
        "xml": FLOW_XML,
        "members": [{"member": "john@example.com", "app_id": "em-be-app", "alert_flags": 2}],
        "service_identity": "+default+", "tag": "t-1", "parent_message_key": None,
        "context": None, "force_language": "nl", "download_attachments_upfront": False,
        "push_message": None, "flow": None, "flow_params": None}}


@pytest.mark.parametrize("xml", [
    '<messageFlowDefinitionSet xmlns="https://rogerth.at/api/1/MessageFlow.xsd" />',
    '<messageFlowDefinition name="f" language="nl" />',  # not in the flow namespace
    "not xml at all",
])
def test_start_local_flow_leaves_language_to_the_server(server, xml):
    server.behaviour = rpc_result(RUN_ID)
    service(server.url).start_local_flow(xml, "john@example.com", "", "flow-run-2")
    assert server.last["params"]["force_language"] is None
    assert server.last["params"]["members"][0]["app_id"] == "rogerthat"
    assert server.last["params"]["tag"] is None


@pytest.mark.parametrize(("code", "cls", "reason"), [
    (40001, PermanentError, "flow_not_found"),
    (40002, PermanentError, "not_a_friend"),
    (40003, PermanentError, "flow_invalid"),
    (40004, PermanentError, "invalid_request"),
    (40005, PermanentError, "invalid_request"),
    (40009, PermanentError, "flow_language"),
    (30057, PermanentError, "flow_invalid"),
    (30044, PermanentError, "error_30044"),
    (1000, RetryableError, "provider_error"),
    (1009, RetryableError, "still_running"),
])
def test_start_local_flow_errors(server, code, cls, reason):
    server.behaviour = rpc_error({"code": code, "message": "nope", "error": "why"})
    with pytest.raises(cls) as info:
        service(server.url).start_local_flow(FLOW_XML, "john@example.com", "a", "flow-run-3")
    assert (info.value.reason, info.value.code) == (reason, str(code))


def test_start_local_flow_without_run_id_is_ambiguous(server):
    server.behaviour = rpc_result(None)
    with pytest.raises(AmbiguousError) as info:
        service(server.url).start_local_flow(FLOW_XML, "john@example.com", "a", "flow-run-4")
    assert info.value.reason == "no_flow_run_id"


@pytest.mark.parametrize("tag", ["__rt__x", "t" * 501])
def test_start_local_flow_refuses_bad_tag_without_calling(server, tag):
    with pytest.raises(PermanentError) as info:
        service(server.url).start_local_flow(FLOW_XML, "john@example.com", "a", "r", tag=tag)
    assert info.value.reason == "invalid_request"
    assert server.seen == []


def test_start_local_flow_timeout_is_retryable(server):
    server.behaviour = lambda handler, body: server.release.wait(5)
    with pytest.raises(RetryableError):
        service(server.url, timeout=0.3).start_local_flow(FLOW_XML, "john@example.com", "a",
                                                          "flow-run-5")


# --------------------------------------------------------------------------------------
# Retries and the server's cache of answers by JSON-RPC id (§1.3)
# --------------------------------------------------------------------------------------

def by_id(answers: dict[str, Behaviour]) -> Behaviour:
    """Each JSON-RPC id gets its own canned answer (the server's cache, id by id)."""
    def behaviour(handler: BaseHTTPRequestHandler, body: bytes) -> None:
        answers[json.loads(body)["id"]](handler, body)
    return behaviour


UNKNOWN = {"code": 1000, "message": "An unknown error occurred. Please contact x and "
                                    "mention error id 1"}


def test_rpc_ids_are_the_id_then_one_per_retry():
    assert rogerthat.rpc_ids("att-1") == ["att-1"]
    assert rogerthat.rpc_ids("att-1", 2) == ["att-1", "att-1.r1", "att-1.r2"]
    with pytest.raises(ValueError):
        rogerthat.rpc_ids("att-1", -1)


def test_outbound_notes_the_retry_count_for_send():
    msg = service().outbound(send_request(), SendContext(
        attempt_id="att-1", channel="rogerthat", app_id="default", retries=3))
    assert msg.content["rpc_retries"] == 3
    assert service().summarize(msg)["ids"] == ["att-1", "att-1.r1", "att-1.r2", "att-1.r3"]


def test_a_retry_after_a_cached_1000_executes_under_the_next_id(server):
    """The server replays a 1000 to its id: the retry walks past it to a fresh id."""
    server.behaviour = by_id({"att-1": rpc_error(UNKNOWN), "att-1.r1": rpc_result(MESSAGE_KEY)})
    result = service(server.url).send(message(content={**message().content, "rpc_retries": 1}))
    assert result.provider_message_ids == {"john@example.com": MESSAGE_KEY}
    assert [body["id"] for _, _, body in server.seen] == ["att-1", "att-1.r1"]
    assert {body["params"]["context"] for _, _, body in server.seen} == {"att-1"}


def test_a_first_send_uses_only_the_attempt_id_and_its_1000_is_retryable(server):
    server.behaviour = rpc_error(UNKNOWN)
    with pytest.raises(RetryableError) as info:
        service(server.url).send(message())
    assert (info.value.reason, info.value.code) == ("provider_error", "1000")
    assert [body["id"] for _, _, body in server.seen] == ["att-1"]


@pytest.mark.parametrize(("first", "cls"), [
    (rpc_result(MESSAGE_KEY), None),  # the first id's call succeeded: its result is replayed
    (rpc_error({"code": 1009, "message": "Previous request attempt still running"}),
     RetryableError),
    (rpc_error({"code": 30000, "message": "Member is not in your friends list."}),
     PermanentError),
    (reply(503, b"busy"), RetryableError),
])
def test_a_retry_keeps_the_id_whose_outcome_is_not_a_cached_1000(server, first, cls):
    """Only a 1000 moves on: a result, a refusal, 1009 or a transport error stays on the id
    (a new id there could execute the call a second time)."""
    server.behaviour = by_id({"att-1": first, "att-1.r1": rpc_result("other-key")})
    retried = message(content={**message().content, "rpc_retries": 1})
    if cls is None:
        assert service(server.url).send(retried).provider_message_ids == {
            "john@example.com": MESSAGE_KEY}
    else:
        with pytest.raises(cls):
            service(server.url).send(retried)
    assert [body["id"] for _, _, body in server.seen] == ["att-1"]


def test_retries_stop_at_the_last_id_of_the_chain(server):
    server.behaviour = rpc_error(UNKNOWN)
    with pytest.raises(RetryableError):
        service(server.url).send(message(content={**message().content, "rpc_retries": 2}))
    assert [body["id"] for _, _, body in server.seen] == ["att-1", "att-1.r1", "att-1.r2"]


def test_producer_calls_walk_the_chain_too(server):
    server.behaviour = by_id({"rpc-7": rpc_error(UNKNOWN), "rpc-7.r1": rpc_result(None)})
    service(server.url).seal("mk", rpc_id="rpc-7", retries=1)
    service(server.url).invite("a@b.c", "rogerthat", tag="t", rpc_id="rpc-7", retries=1)
    service(server.url).break_up("a@b.c", "rogerthat", rpc_id="rpc-7", retries=1)
    assert [body["id"] for _, _, body in server.seen] == ["rpc-7", "rpc-7.r1"] * 3


def test_against_the_simulator_a_retried_1000_sends_the_message_once():
    """The simulator caches the 1000 as the server does: the old retry (same id) could only
    replay it; the retry under the next id sends the message, once."""
    from shared.providers.sandbox.rogerthat import RogerthatSimConfig, RogerthatSimServer

    with RogerthatSimServer(RogerthatSimConfig(api_key=API_KEY, fail_rate=1.0,
                                               fail_kinds=["provider_error"])) as sim:
        adapter = service(sim.url)
        with pytest.raises(RetryableError):
            adapter.send(message(email="friend1@example.com"))
        sim.state.update_config({"fail_rate": 0.0})
        with pytest.raises(RetryableError):  # the same id: the cached 1000 again
            adapter.send(message(email="friend1@example.com"))
        retried = message(email="friend1@example.com",
                          content={**message().content, "rpc_retries": 1})
        key = adapter.send(retried).provider_message_ids["friend1@example.com"]
        assert [(m["key"], m["context"]) for m in sim.state.messages()] == [(key, "att-1")]


# --------------------------------------------------------------------------------------
# Callbacks the documents send; refusals answered in JSON-RPC (§1.8)
# --------------------------------------------------------------------------------------

def test_update_in_the_getting_started_shape_is_delivered():
    """The seed's own example: received_timestamp, member, message_key; no status."""
    event = parse_callback(envelope("messaging.update", {
        "received_timestamp": 1301396903, "member": "john.doe@acme.com",
        "message_key": MESSAGE_KEY}))
    assert (event.kind, event.provider_message_id, event.status) == (
        "delivered", MESSAGE_KEY, "1")
    assert event.occurred_at == datetime.fromtimestamp(1301396903, UTC)


def test_update_without_status_but_acked_is_replied_or_seen():
    answered = parse_callback(envelope("messaging.update", {
        "message_key": "k", "answer_id": "yes", "received_timestamp": 1,
        "acked_timestamp": 2}))
    assert (answered.kind, answered.data["button_id"]) == ("replied", "yes")
    seen = parse_callback(envelope("messaging.update", {"message_key": "k",
                                                        "acked_timestamp": 2}))
    assert seen.kind == "seen"


def test_a_refused_callback_carries_its_dedupe_key():
    with pytest.raises(CallbackError) as unknown:
        parse_callback(envelope("messaging.form_update", {"status": 3}))
    with pytest.raises(CallbackError) as bad_field:
        parse_callback(envelope("test.test", {"value": 5}))
    assert unknown.value.dedupe_key == bad_field.value.dedupe_key == "rogerthat:cb-1"


@pytest.mark.parametrize(("env", "code", "name"), [
    (envelope("messaging.form_update", {}), 1006, "method"),
    ({"id": "cb-1", "params": {}}, 1003, "method"),
    ({"id": "cb-1", "method": "test.test"}, 1003, "params"),
    (envelope("test.test", ["v"]), 1005, "params"),
    (envelope("test.test", {}), 1001, "value"),
])
def test_callback_refusal_is_a_json_rpc_error(env, code, name):
    with pytest.raises(CallbackError) as info:
        parse_callback(env)
    answer = rogerthat.callback_refusal(env, info.value)
    assert answer["id"] == "cb-1" and answer["result"] is None
    assert (answer["error"]["code"], answer["error"]["name"]) == (code, name)
    assert answer["error"]["message"]


def test_plain_text_without_buttons_is_accepted_and_sent_dismissable():
    request = SendRequest.model_validate({"to": {"email": "john@example.com"},
                                          "route": ["rogerthat"], "text": "Your table is ready"})
    msg = service().outbound(request, context())
    params = service().build_send_params(msg)
    assert params["answers"] == [] and params["flags"] & MessageFlag.ALLOW_DISMISS


def test_buttons_without_allow_dismiss_stay_undismissable():
    params = service().build_send_params(service().outbound(send_request(), context()))
    assert params["flags"] == 0


# --------------------------------------------------------------------------------------
# The receiver (webhooks/rogerthat.py)
# --------------------------------------------------------------------------------------

RPC_HEADERS = {"X-Nuntiuz-Service-Key": "receiver-key",
               "Content-Type": "application/json-rpc; charset=utf-8"}


@pytest.fixture
def receiver(temp_db, published, monkeypatch):
    from shared.providers import get_provider
    from shared.settings import get_settings
    from webhooks.app import create_app

    monkeypatch.setenv("SWITCHBOARD_ROGERTHAT_SERVICE_KEY", "receiver-key")
    get_settings.cache_clear()
    get_provider.cache_clear()
    yield create_app().test_client()
    get_settings.cache_clear()
    get_provider.cache_clear()


def _answer(resp: Any) -> Any:
    """The JSON body (``get_json`` ignores the application/json-rpc content type)."""
    return json.loads(resp.get_data(as_text=True))


def _stored(dedupe_key: str) -> list[tuple[str, str | None]]:
    from sqlalchemy import select

    from shared.db import session_scope
    from shared.models import Callback
    with session_scope() as session:
        return [(row.status, row.error) for row in session.execute(
            select(Callback.status, Callback.error).where(Callback.dedupe_key == dedupe_key))]


@pytest.mark.parametrize("method", ["messaging.form_update", "friend.location_fix"])
def test_receiver_answers_an_unhandled_method_200_with_an_error_stored_once(receiver, method):
    """A non-200 is retried by the messenger (and mails its admins); a 200 error is not."""
    env = {"id": f"cb-{method}", "method": method, "params": {"member": "a@b.c"}}
    answers = [receiver.post("/callbacks/rogerthat", json=env, headers=RPC_HEADERS)
               for _ in range(2)]  # the second: the messenger retrying the same id
    assert [a.status_code for a in answers] == [200, 200]
    assert _answer(answers[0]) == _answer(answers[1])
    body = _answer(answers[0])
    assert (body["id"], body["result"], body["error"]["code"]) == (env["id"], None, 1006)
    assert _stored(f"rogerthat:{env['id']}") == [
        ("invalid", f"method: unsupported callback method {method!r}")]


def test_receiver_answers_a_field_error_200_naming_the_field(receiver):
    env = {"id": "cb-bad", "method": "messaging.update", "params": {"status": 1}}
    resp = receiver.post("/callbacks/rogerthat", json=env, headers=RPC_HEADERS)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json-rpc; charset=utf-8"
    assert _answer(resp)["error"] == {"code": 1001, "name": "message_key", "message": "missing"}


def test_receiver_takes_the_getting_started_update(receiver, published):
    env = {"id": "a_jsonrpc_id", "method": "messaging.update", "params": {
        "received_timestamp": 1301396903, "member": "john.doe@acme.com",
        "message_key": "7bcc1b94-c193-47bf-ae85-157565ac0e78"}}
    resp = receiver.post("/callbacks/rogerthat", json=env, headers=RPC_HEADERS)
    assert (resp.status_code, _answer(resp)) == (
        200, {"id": "a_jsonrpc_id", "result": None, "error": None})
    assert _stored("rogerthat:a_jsonrpc_id") == [("received", None)]


def test_receiver_refuses_what_it_cannot_answer(receiver):
    unauthenticated = receiver.post("/callbacks/rogerthat", json={"id": "x", "method": "test.test",
                                                                  "params": {"value": "v"}})
    assert unauthenticated.status_code == 401
    for body in (b"{broken", b"[1, 2]", json.dumps({"id": 5, "method": "test.test"}).encode()):
        resp = receiver.post("/callbacks/rogerthat", data=body, headers=RPC_HEADERS)
        assert resp.status_code == 400, body  # no id to answer: retried, nothing to match
        assert _answer(resp)["error"]["name"]
