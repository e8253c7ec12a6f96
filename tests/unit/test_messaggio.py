"""The Messaggio adapter: signatures, params, replies, transport failures, uploads, reports.

Transport tests use a real HTTP server on 127.0.0.1 (port 0) so requests/urllib3 raise the
exceptions they raise in production, not ones we imagined.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests

from shared.providers import messaggio
from shared.providers.base import (
    AccountRefusal,
    AmbiguousError,
    CallbackError,
    CarriesFallback,
    EndedHop,
    OutboundMessage,
    PermanentError,
    Recipient,
    RetryableError,
    SendContext,
)
from shared.schemas import SendRequest
from shared.settings import get_settings
from tests.unit.conftest import clear_caches
from shared.providers.messaggio import (
    PERMANENT_VIBER_REASONS,
    MessaggioGateway,
    media_sign,
    parse_callback,
    parse_send_response,
    sign,
)

USER, SECRET, SENDER = "login", "5eCrET", "FROM"
OK_XML = (
    b"<?xml version='1.0' encoding='utf-8'?><response><code>0</code>"
    b"<tech_message>OK</tech_message>"
    b'<msg_id phone="79031234567">aaaaaaaa-0000-0000-0000-000000000001</msg_id>'
    b'<msg_id phone="79165557755">aaaaaaaa-0000-0000-0000-000000000002</msg_id>'
    b"</response>"
)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def gateway(url: str = "http://127.0.0.1:9/", media_url: str = "http://127.0.0.1:9/upload/",
            timeout: float = 2.0) -> MessaggioGateway:
    session = requests.Session()
    session.trust_env = False  # never route the local test server through an env proxy
    return MessaggioGateway(url, media_url, USER, SECRET, SENDER, timeout=timeout,
                            session=session)


def message(**fields: object) -> OutboundMessage:
    values: dict = {"attempt_id": "att-1", "channel": "viber",
                    "phones": ("79031234567", "79165557755"), "text": "hello"}
    values.update(fields)
    return OutboundMessage(**values)


# --------------------------------------------------------------------------------------
# A tiny real HTTP server
# --------------------------------------------------------------------------------------

Behaviour = Callable[[BaseHTTPRequestHandler, bytes], None]


class Server:
    """Serves one behaviour; records (method, path, headers, body) of every request."""

    def __init__(self) -> None:
        self.behaviour: Behaviour = reply(200, OK_XML)
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.seen.append((self.command, self.path, dict(self.headers), body))
                outer.behaviour(self, body)

            do_GET = do_POST

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> Behaviour:
    def behaviour(handler: BaseHTTPRequestHandler, _: bytes) -> None:
        handler.send_response(status)
        headers_out = {"Content-Length": str(len(body)), **(headers or {})}
        for name, value in headers_out.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)
    return behaviour


@pytest.fixture(autouse=True)
def local_images(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The image servers here listen on 127.0.0.1: open the egress policy to it, as in
    development (tests/unit/test_egress.py checks that it is closed by default)."""
    monkeypatch.setenv("SWITCHBOARD_EGRESS_ALLOW", "127.0.0.1/32")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


# --------------------------------------------------------------------------------------
# Signatures (§2.2 test vectors, verbatim)
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("user", "sender", "phones", "txt", "secret", "expected"), [
    ("hitfm", "HitFM", ["79031234567"], "Съешь еще этих французских булок", "test_key",
     "29def94e0f987855bbf4407e93b088d7"),
    ("login", "FROM", [], "hello", "5eCrET", "f4b447d259fb90514e16bebe2bf3dc7d"),
    ("login", "FROM", ["79031234567"], "hello", "5eCrET", "b5c0d2b33bb1293006d803bd7c6461f1"),
    ("login", "FROM", ["79031234567", "79165557755"], "hello", "5eCrET",
     "ac989b951e5e42a3cd48b83ac40d822f"),
])
def test_sign_vectors(user, sender, phones, txt, secret, expected):
    assert sign(user, sender, phones, txt, secret) == expected


def test_sign_without_txt_omits_it_and_respects_phone_order():
    expected = md5("loginFROM7903123456779165557755" + "5eCrET")
    assert sign("login", "FROM", ["79031234567", "79165557755"], None, "5eCrET") == expected
    assert sign("login", "FROM", ["79031234567", "79165557755"], "", "5eCrET") == expected
    assert sign("login", "FROM", ["79165557755", "79031234567"], None, "5eCrET") != expected


def test_media_sign():
    content = b"\x89PNG\r\n\x1a\nfake"
    inner = hashlib.md5(content).hexdigest()
    assert media_sign("login", content, "5eCrET") == md5(f"login{inner}5eCrET")


# --------------------------------------------------------------------------------------
# build_params
# --------------------------------------------------------------------------------------

COMMON = [("p_transaction_id", "att-1"), ("dlr", "1"), ("charset", "UTF-8")]


def test_params_viber_text():
    params = gateway().build_params(message())
    assert params[:4] == [("user", USER), ("from", SENDER), ("phone", "79031234567"),
                          ("phone", "79165557755")]
    assert dict(params)["sign"] == "ac989b951e5e42a3cd48b83ac40d822f"
    assert set(params) == {*params[:4], ("sign", "ac989b951e5e42a3cd48b83ac40d822f"),
                           ("sending_method", "viber"), ("txt", "hello"), *COMMON}


def test_params_viber_image_only_signs_without_txt():
    params = dict(gateway().build_params(message(text=None, image_id="img-64")))
    assert "txt" not in params
    assert params["image_id"] == "img-64"
    assert params["sign"] == md5("loginFROM7903123456779165557755" + SECRET)


def test_params_viber_text_button():
    params = dict(gateway().build_params(
        message(button_text="Open", button_url="https://x.example/a?b=1")))
    assert params["button_text"] == "Open"
    assert params["button_link"] == "https://x.example/a?b=1"
    assert "image_id" not in params


def test_params_viber_text_image_button_with_window_and_expiry():
    params = dict(gateway().build_params(message(
        image_id="img", button_text="Open", button_url="https://x.example/",
        dlr_timeout=600, sms_text="fallback sms")))
    assert {k: params[k] for k in ("txt", "image_id", "button_text", "button_link",
                                   "dlr_timeout", "expiry_txt", "sending_method")} == {
        "txt": "hello", "image_id": "img", "button_text": "Open",
        "button_link": "https://x.example/", "dlr_timeout": "600",
        "expiry_txt": "fallback sms", "sending_method": "viber"}
    assert params["sign"] == "ac989b951e5e42a3cd48b83ac40d822f"  # only user/from/phone/txt


@pytest.mark.parametrize("button", [{"button_text": "Open"}, {"button_url": "https://x/"},
                                    {"button_text": "", "button_url": "https://x/"}])
def test_params_button_needs_both(button):
    params = dict(gateway().build_params(message(**button)))
    assert "button_text" not in params and "button_link" not in params


def test_params_sms_has_text_only_and_no_viber_fields():
    params = gateway().build_params(message(
        channel="sms", phones=("79165557755", "79031234567"), text="sms body",
        sms_text="ignored", image_id="img", button_text="b", button_url="u", dlr_timeout=60,
        sender="Shop"))
    assert [v for k, v in params if k == "phone"] == ["79165557755", "79031234567"]
    assert dict(params) == {
        "user": USER, "from": "Shop", "phone": "79031234567", "txt": "sms body",
        "sign": md5("loginShop7916555775579031234567sms body" + SECRET),
        "sending_method": "sms", "p_transaction_id": "att-1", "dlr": "1", "charset": "UTF-8"}


def test_params_never_empty_values():
    params = gateway().build_params(message(text="", image_id="", sms_text="", sender=""))
    assert all(value for _, value in params)
    assert dict(params)["from"] == SENDER


def test_params_unsupported_channel():
    with pytest.raises(PermanentError) as info:
        gateway().build_params(message(channel="email"))
    assert info.value.reason == "unsupported_channel"


# --------------------------------------------------------------------------------------
# Send response XML
# --------------------------------------------------------------------------------------

def test_parse_ok_multi_phone():
    result = parse_send_response(OK_XML, ("79031234567", "79165557755"))
    assert result.provider_message_ids == {
        "79031234567": "aaaaaaaa-0000-0000-0000-000000000001",
        "79165557755": "aaaaaaaa-0000-0000-0000-000000000002"}
    assert (result.code, result.detail) == ("0", "OK")
    assert "<response>" in result.raw


def test_parse_ok_redacts_a_secret_the_gateway_echoes(monkeypatch):
    secret = "configured-gateway-secret-42"
    monkeypatch.setenv("SWITCHBOARD_MESSAGGIO_SECRET", secret)
    clear_caches()
    try:
        body = OK_XML.replace(b"<tech_message>OK", f"<tech_message>OK {secret}".encode())
        result = parse_send_response(body, ("79031234567", "79165557755"))
    finally:
        monkeypatch.delenv("SWITCHBOARD_MESSAGGIO_SECRET")
        clear_caches()
    assert result.detail == "OK [redacted]"
    assert secret not in result.raw and "OK [redacted]" in result.raw


def test_parse_msg_id_without_phone_attribute_matches_by_position():
    body = b"<response><code>0</code><tech_message>OK</tech_message><msg_id>m1</msg_id></response>"
    assert parse_send_response(body, ("7903",)).provider_message_ids == {"7903": "m1"}


@pytest.mark.parametrize(("code", "cls", "reason"), [
    ("-1", PermanentError, "invalid_request"),
    ("-2", AccountRefusal, "auth_error"),  # the account, not the message: opens the circuit
    ("-3", PermanentError, "rejected"),
    ("-4", RetryableError, "temporary_error"),
    ("-5", AccountRefusal, "balance_exhausted"),
    ("-9", PermanentError, "unknown_code"),
])
def test_parse_error_codes(code, cls, reason):
    body = f"<response><code>{code}</code><tech_message>PARAM ERROR (phone)</tech_message>"
    with pytest.raises(cls) as info:
        parse_send_response((body + "</response>").encode(), ("7903",))
    assert type(info.value) is cls
    assert (info.value.reason, info.value.code) == (reason, code)
    assert info.value.detail == "PARAM ERROR (phone)"


@pytest.mark.parametrize("body", [b"<html>oops", b"", b"<other><code>0</code></other>",
                                  b"<response><tech_message>x</tech_message></response>"])
def test_parse_unreadable_is_ambiguous(body):
    with pytest.raises(AmbiguousError) as info:
        parse_send_response(body, ("7903",))
    assert info.value.reason == "unreadable_response"


# --------------------------------------------------------------------------------------
# send() over a real socket
# --------------------------------------------------------------------------------------

def test_send_success_posts_form_with_repeated_phones(server):
    result = gateway(server.url).send(message(text="Привет & co"))
    assert result.provider_message_ids["79165557755"] == "aaaaaaaa-0000-0000-0000-000000000002"
    method, _, headers, body = server.seen[0]
    assert method == "POST"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    fields = parse_qsl(body.decode(), encoding="utf-8")
    assert [v for k, v in fields if k == "phone"] == ["79031234567", "79165557755"]
    assert dict(fields)["txt"] == "Привет & co"
    assert dict(fields)["sign"] == sign(USER, SENDER, ["79031234567", "79165557755"],
                                        "Привет & co", SECRET)


def test_send_uses_short_connect_and_full_read_timeout():
    calls: list[dict] = []

    class Recorder(requests.Session):
        def request(self, method, url, **kwargs):  # type: ignore[override]
            calls.append(kwargs)
            resp = requests.Response()
            resp.status_code, resp._content = 200, OK_XML
            return resp

    MessaggioGateway("u", "m", USER, SECRET, SENDER, timeout=10.0,
                     session=Recorder()).send(message())
    MessaggioGateway("u", "m", USER, SECRET, SENDER, timeout=1.5,
                     session=Recorder()).send(message())
    assert [c["timeout"] for c in calls] == [(3.0, 10.0), (1.5, 1.5)]


def test_send_gateway_code_minus_4_is_retryable(server):
    server.behaviour = reply(200, b"<response><code>-4</code><tech_message>TEMP</tech_message>"
                                  b"</response>")
    with pytest.raises(RetryableError) as info:
        gateway(server.url).send(message())
    assert (info.value.reason, info.value.code) == ("temporary_error", "-4")


def test_send_503_with_retry_after_is_retryable(server):
    server.behaviour = reply(503, b"busy", {"Retry-After": "7"})
    with pytest.raises(RetryableError) as info:
        gateway(server.url).send(message())
    assert (info.value.reason, info.value.retry_after) == ("http_503", 7.0)


@pytest.mark.parametrize(("status", "cls"), [
    (429, RetryableError), (502, RetryableError), (504, RetryableError),
    (500, AmbiguousError), (501, AmbiguousError),
    (400, PermanentError), (404, PermanentError), (302, PermanentError),
])
def test_send_http_status_classes(server, status, cls):
    server.behaviour = reply(status, b"x", {"Location": "http://127.0.0.1:9/"})
    with pytest.raises(cls) as info:
        gateway(server.url).send(message())
    assert type(info.value) is cls
    assert info.value.reason == f"http_{status}"
    if cls is RetryableError:
        assert info.value.retry_after is None
    assert len(server.seen) == 1  # never followed a redirect or retried


def test_send_200_garbage_is_ambiguous(server):
    server.behaviour = reply(200, b"<html><body>proxy error")
    with pytest.raises(AmbiguousError) as info:
        gateway(server.url).send(message())
    assert info.value.reason == "unreadable_response"


def test_send_read_timeout_is_ambiguous(server):
    server.behaviour = lambda handler, body: server.release.wait(3)
    with pytest.raises(AmbiguousError) as info:
        gateway(server.url, timeout=0.3).send(message())
    assert info.value.reason == "timeout_after_send"
    assert len(server.seen) == 1  # the request did arrive: that is why it is ambiguous


def test_send_connection_closed_after_request_is_ambiguous(server):
    server.behaviour = lambda handler, body: None  # read it all, then hang up, no reply
    with pytest.raises(AmbiguousError) as info:
        gateway(server.url).send(message())
    assert info.value.reason == "connection_dropped"
    assert len(server.seen) == 1


def test_send_closed_port_is_retryable():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(RetryableError) as info:
        gateway(f"http://127.0.0.1:{port}/").send(message())
    assert info.value.reason == "connection_failed"


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------

def multipart_fields(headers: dict[str, str], body: bytes) -> dict[str, tuple[str | None, bytes]]:
    head = f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode()
    parsed = BytesParser(policy=HTTP).parsebytes(head + body)
    return {part.get_param("name", header="content-disposition"):
            (part.get_filename(), part.get_payload(decode=True)) for part in parsed.iter_parts()}


def test_upload_success_sends_login_sign_and_image(server):
    server.behaviour = reply(200, b'{"status": 0, "image_id": "' + b"f" * 64 + b'"}')
    content = b"GIF89a-bytes"
    gw = gateway(media_url=server.url + "upload/")
    assert gw.upload_image(content, "pic.gif") == "f" * 64
    _, path, headers, body = server.seen[0]
    assert path == "/upload/"
    fields = multipart_fields(headers, body)
    assert fields["login"][1] == USER.encode()
    assert fields["sign"][1] == media_sign(USER, content, SECRET).encode()
    assert fields["image"] == ("pic.gif", content)


@pytest.mark.parametrize(("body", "reason", "code"), [
    (b'{status: 2, "error": "Invalid sign"}', "auth_error", "2"),
    (b'{"status": 1, "error": "login: x, y"}', "image_invalid", "1"),
    (b'{"status": 3, "error": "too big"}', "image_too_large", "3"),
    (b'{status: 4, error: "bmp"}', "image_format", "4"),
])
def test_upload_errors(server, body, reason, code):
    server.behaviour = reply(200, body)
    with pytest.raises(PermanentError) as info:
        gateway(media_url=server.url).upload_image(b"x")
    assert (info.value.reason, info.value.code) == (reason, code)
    if code == "2":
        assert info.value.detail == "Invalid sign"


def test_upload_timeout_is_retryable(server):
    server.behaviour = lambda handler, body: server.release.wait(3)
    with pytest.raises(RetryableError) as info:
        gateway(media_url=server.url, timeout=0.3).upload_image(b"x")
    assert info.value.reason == "timeout_after_send"


def test_upload_500_is_retryable(server):
    server.behaviour = reply(500, b"oops")
    with pytest.raises(RetryableError):
        gateway(media_url=server.url).upload_image(b"x")


def test_fetch_image(server):
    server.behaviour = reply(200, b"\x89PNG data")
    assert gateway().fetch_image(server.url + "a.png") == b"\x89PNG data"


def test_fetch_image_404_is_permanent(server):
    server.behaviour = reply(404, b"nope")
    with pytest.raises(PermanentError) as info:
        gateway().fetch_image(server.url + "a.png")
    assert info.value.reason == "image_unreachable"


def test_fetch_image_too_large_by_header(server):
    server.behaviour = reply(200, b"x", {"Content-Length": str(11 * 1024 * 1024)})
    with pytest.raises(PermanentError) as info:
        gateway().fetch_image(server.url)
    assert info.value.reason == "image_too_large"


def test_fetch_image_too_large_by_body(server, monkeypatch):
    monkeypatch.setattr(messaggio, "MAX_IMAGE_BYTES", 1000)

    def chunked(handler: BaseHTTPRequestHandler, _: bytes) -> None:
        handler.send_response(200)  # no Content-Length: the cap must count the bytes
        handler.end_headers()
        handler.wfile.write(b"x" * 5000)
    server.behaviour = chunked
    with pytest.raises(PermanentError) as info:
        gateway().fetch_image(server.url)
    assert info.value.reason == "image_too_large"


def test_fetch_image_closed_port_is_retryable():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(RetryableError) as info:
        gateway().fetch_image(f"http://127.0.0.1:{port}/a.png")
    assert info.value.reason == "image_unreachable"


class DictCache:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def set(self, key: str, value: str) -> None:
        self.data[key] = value


def test_ensure_image_id_uploads_once_per_url(server):
    def route(handler: BaseHTTPRequestHandler, body: bytes) -> None:
        if handler.command == "GET":
            reply(200, b"png-bytes:" + handler.path.encode())(handler, body)
        else:
            reply(200, b'{"status":0,"image_id":"id-%d"}' % len(server.seen))(handler, body)
    server.behaviour = route
    gw, cache = gateway(media_url=server.url + "upload/"), DictCache()
    first = gw.ensure_image_id(server.url + "img/a.png?v=1", cache)
    assert gw.ensure_image_id(server.url + "img/a.png?v=1", cache) == first
    second = gw.ensure_image_id(server.url + "img/b.png", cache)
    assert (first, second) == ("id-2", "id-4")
    assert [(m, p) for m, p, _, _ in server.seen] == [
        ("GET", "/img/a.png?v=1"), ("POST", "/upload/"), ("GET", "/img/b.png"),
        ("POST", "/upload/")]
    digest = hashlib.sha256((server.url + "img/b.png").encode()).hexdigest()
    assert any(digest in key for key in cache.data)
    assert multipart_fields(server.seen[1][2], server.seen[1][3])["image"] == (
        "a.png", b"png-bytes:/img/a.png?v=1")


# --------------------------------------------------------------------------------------
# From a send request: recipient() and outbound()
# --------------------------------------------------------------------------------------

class RecordingImages:
    """An in-memory ImageCache that logs every lock, get and set, in order."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.log: list[tuple[str, str]] = []
        self.held: set[str] = set()

    def get(self, key: str) -> str | None:
        self.log.append(("get", key))
        return self.data.get(key)

    def set(self, key: str, value: str) -> None:
        assert self.held, "set outside the image's lock"
        self.log.append(("set", key))
        self.data[key] = value

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        self.log.append(("lock", key))
        self.held.add(key)
        try:
            yield
        finally:
            self.held.discard(key)
            self.log.append(("unlock", key))


def send_request(**fields: Any) -> SendRequest:
    values: dict[str, Any] = {"to": {"phone": "+79031234567"}, "route": ["viber", "sms"],
                              "text": "hello"}
    values.update(fields)
    return SendRequest.model_validate(values)


def context(channel: str = "viber", **fields: Any) -> SendContext:
    return SendContext(attempt_id="att-1", channel=channel, app_id="default", **fields)


def image_server(server: Any) -> None:
    """GET serves image bytes, POST (the upload) answers an image id numbered by request."""
    def route(handler: BaseHTTPRequestHandler, body: bytes) -> None:
        if handler.command == "GET":
            reply(200, b"png-bytes")(handler, body)
        else:
            reply(200, b'{"status":0,"image_id":"id-%d"}' % len(server.seen))(handler, body)
    server.behaviour = route


def test_recipient_is_the_phone_digits_without_plus_and_no_scope():
    for channel in ("viber", "sms"):
        assert gateway().recipient(send_request(), channel) == Recipient("79031234567", "")


def test_recipient_and_outbound_refuse_another_providers_channel():
    with pytest.raises(PermanentError) as info:
        gateway().recipient(send_request(), "rogerthat")
    assert info.value.reason == "unsupported_channel"
    with pytest.raises(PermanentError):
        gateway().outbound(send_request(), context("inapp"))


def test_outbound_viber_with_button_sms_text_and_window():
    request = send_request(button={"text": "Open", "url": "https://shop.example/o/1"},
                           sms_text="by sms", sender="Shop", image_id="img-7",
                           deadlines={"viber": 600})
    msg = MessaggioGateway("u", "m", USER, SECRET, SENDER, default_dlr_timeout=3600).outbound(
        request, context())
    assert msg == OutboundMessage(
        attempt_id="att-1", channel="viber", phones=("79031234567",), text="hello",
        sms_text="by sms", image_id="img-7", button_text="Open",
        button_url="https://shop.example/o/1", sender="Shop", dlr_timeout=600)


def test_outbound_viber_window_falls_back_to_the_request_then_the_gateway_default():
    gw = MessaggioGateway("u", "m", USER, SECRET, SENDER, default_dlr_timeout=3600)
    assert gw.outbound(send_request(dlr_timeout=900), context()).dlr_timeout == 900
    assert gw.outbound(send_request(), context()).dlr_timeout == 3600


@pytest.mark.parametrize(("asked", "sent"), [(60, 60), (90, 60), (119, 60), (120, 120),
                                             (86399, 86340), (86400, 86400)])
def test_outbound_viber_window_is_whole_minutes_as_the_gateway_keeps_it(asked, sent):
    """The gateway rounds dlr_timeout down to whole minutes: we send what it will keep, and
    our deadline (shared.windows) is the same."""
    gw = MessaggioGateway("u", "m", USER, SECRET, SENDER)
    for request in (send_request(dlr_timeout=asked), send_request(deadlines={"viber": asked})):
        msg = gw.outbound(request, context())
        assert msg.dlr_timeout == sent
        assert ("dlr_timeout", str(sent)) in gw.build_params(msg)


def test_outbound_sms_carries_no_viber_fields_and_uploads_nothing(server):
    request = send_request(
        image_url=server.url + "a.png", button={"text": "Open", "url": "https://x.example/"},
        sms_text="short sms", texts={"viber": "rich viber"}, dlr_timeout=600, sender="Shop")
    msg = gateway(media_url=server.url).outbound(request, context("sms"))  # no images: fine
    assert msg == OutboundMessage(attempt_id="att-1", channel="sms",
                                  phones=("79031234567",), text="short sms", sender="Shop")
    assert server.seen == []


def test_outbound_viber_uploads_an_image_url_once_under_its_lock(server):
    image_server(server)
    url = server.url + "img/a.png"
    gw, images = gateway(media_url=server.url + "upload/"), RecordingImages()
    first = gw.outbound(send_request(image_url=url), context(images=images))
    again = gw.outbound(send_request(image_url=url), context(images=images))
    assert first.image_id == again.image_id == "id-2"
    assert [(m, p) for m, p, _, _ in server.seen] == [("GET", "/img/a.png"),
                                                      ("POST", "/upload/")]
    digest = hashlib.sha256(url.encode()).hexdigest()
    key = f"messaggio:image:{USER}:{digest}"
    assert images.log == [("lock", digest), ("get", key), ("set", key), ("unlock", digest),
                          ("lock", digest), ("get", key), ("unlock", digest)]


def test_outbound_viber_image_upload_failure_is_raised_before_sending(server):
    server.behaviour = reply(404, b"gone")
    with pytest.raises(PermanentError) as info:
        gateway().outbound(send_request(image_url=server.url + "a.png"),
                           context(images=RecordingImages()))
    assert info.value.reason == "image_unreachable"


def test_outbound_viber_image_url_without_an_images_cache_is_a_clear_error():
    with pytest.raises(ValueError, match="images"):
        gateway().outbound(send_request(image_url="https://img.example/a.png"), context())


def test_outbound_without_a_phone_is_a_clear_error():
    request = send_request(to={"email": "a@example.com"}, route=["rogerthat"],
                           allow_dismiss=True)
    with pytest.raises(ValueError, match="phone"):
        gateway().outbound(request, context())


# --------------------------------------------------------------------------------------
# Delivery reports
# --------------------------------------------------------------------------------------

IDS = {"msg_id": "m-1", "p_transaction_id": "att-1"}


@pytest.mark.parametrize(("status", "kind", "reason"), [
    ("0", "delivered", None), ("1", "interim", None), ("4", "interim", None),
    ("-1", "undelivered", "not_delivered"), ("-2", "expired", "sms_expired"),
    ("-3", "undelivered", "rejected"), ("-11", "undelivered", "route_not_found"),
    ("-12", "undelivered", "http_req_error"), ("7", "interim", "unknown_status"),
])
def test_callback_numeric(status, kind, reason):
    event = parse_callback({**IDS, "status": status})
    assert (event.kind, event.reason, event.status) == (kind, reason, status)
    assert (event.provider_message_id, event.attempt_ref) == ("m-1", "att-1")
    assert event.dedupe_key == f"messaggio:m-1:status:{status}"
    assert event.raw == {**IDS, "status": status}


@pytest.mark.parametrize(("status", "extended", "kind", "reason"), [
    ("delivered", None, "delivered", None),
    ("buffered", None, "interim", None),
    ("undelivered", None, "undelivered", "viber_undelivered"),
    ("undelivered", "VIBER_USER_NOT_FOUND", "undelivered", "viber_user_not_found"),
    ("undelivered", "VIBER_BLOCKED_BY_USER", "undelivered", "viber_blocked_by_user"),
    ("undelivered", "VIBER_NO_DEVICE", "undelivered", "viber_no_device"),
    ("undelivered", "VIBER_UNKNOWN_ERROR", "undelivered", "viber_unknown_error"),
    ("undelivered", "PHONE_BLACKLISTED", "undelivered", "phone_blacklisted"),
    ("undelivered", "VIBER_EXPIRED", "expired", "viber_expired"),
])
def test_callback_viber_delivery(status, extended, kind, reason):
    params = {**IDS, "type": "delivery", "status": status}
    if extended:
        params["status_extended"] = extended
    event = parse_callback(params)
    assert (event.kind, event.reason, event.status) == (kind, reason, status)
    assert event.dedupe_key == f"messaggio:m-1:delivery:{status}"


def test_callback_seen():
    event = parse_callback({**IDS, "type": "seen"})
    assert (event.kind, event.status, event.text) == ("seen", None, None)
    assert event.dedupe_key == "messaggio:m-1:seen:"


def test_callback_reply_keeps_text_and_distinct_replies_differ():
    first = parse_callback({**IDS, "type": "reply", "text": "Да"})
    again = parse_callback({**IDS, "type": "reply", "text": "Да"})
    other = parse_callback({**IDS, "type": "reply", "text": "Нет"})
    assert (first.kind, first.text) == ("replied", "Да")
    assert first.dedupe_key == again.dedupe_key != other.dedupe_key
    assert first.dedupe_key.startswith("messaggio:m-1:reply::")


def test_callback_only_transaction_id():
    event = parse_callback({"p_transaction_id": "att-9", "status": "0"})
    assert (event.provider_message_id, event.attempt_ref) == (None, "att-9")
    assert event.dedupe_key == "messaggio:att-9:status:0"


@pytest.mark.parametrize(("params", "field"), [
    ({"status": "0"}, "msg_id"),
    ({"msg_id": "", "p_transaction_id": " ", "status": "0"}, "msg_id"),
    ({**IDS}, "status"),
    ({**IDS, "status": "delivered"}, "status"),
    ({**IDS, "type": "delivery"}, "status"),
    ({**IDS, "type": "delivery", "status": "exploded"}, "status"),
    ({**IDS, "type": "clicked"}, "type"),
])
def test_callback_errors(params, field):
    with pytest.raises(CallbackError) as info:
        parse_callback(params)
    assert info.value.field == field


def test_gateway_parse_callback_delegates():
    assert gateway().parse_callback({**IDS, "status": "0"}).kind == "delivered"


def test_report_channel_is_viber_for_extended_reports_and_unsaid_for_numeric_ones():
    """Only extended reports say they are Viber's; a numeric one may be an SMS or a Viber
    report of an account without extended reports, so with our own fallback it is left to
    the attempt it matches."""
    for params in ({**IDS, "type": "delivery", "status": "delivered"}, {**IDS, "type": "seen"},
                   {**IDS, "type": "reply", "text": "ok"}):
        assert gateway().parse_callback(params).channel == "viber"
    assert gateway().parse_callback({**IDS, "status": "0"}).channel is None


def test_with_the_gateway_fallback_a_numeric_report_is_the_sms_hops():
    """The gateway's own SMS is reported under the Viber message's ids: the numeric report
    names the SMS hop, so it is not taken for a (late) Viber delivery."""
    gw = fallback_gateway()
    event = gw.parse_callback({**IDS, "status": "0"})
    assert (event.kind, event.channel, event.provider_message_id) == ("delivered", "sms", "m-1")
    extended = gw.parse_callback({**IDS, "type": "delivery", "status": "undelivered",
                                  "status_extended": "VIBER_USER_NOT_FOUND"})
    assert (extended.kind, extended.channel) == ("undelivered", "viber")


# --------------------------------------------------------------------------------------
# The account's own SMS fallback (SWITCHBOARD_MESSAGGIO_GATEWAY_FALLBACK)
# --------------------------------------------------------------------------------------

def fallback_gateway(on: bool = True) -> MessaggioGateway:
    return MessaggioGateway("u", "m", USER, SECRET, SENDER, gateway_fallback=on)


@pytest.mark.parametrize("status", ["undelivered", "expired"])
def test_the_gateway_carries_the_sms_hop_after_a_viber_message_it_accepted(status):
    request = send_request(sms_text="Order ready (SMS)")
    ended = EndedHop("viber", status, "viber_user_not_found", "m-1")
    assert fallback_gateway().carried_hop(ended, request, "sms") == {
        "sent_by": "gateway", "fallback_of": "m-1", "sending_method": "sms",
        "phone": ["79031234567"], "txt": "Order ready (SMS)"}
    assert fallback_gateway(on=False).carried_hop(ended, request, "sms") is None


@pytest.mark.parametrize("ended", [
    EndedHop("viber", "failed", "rejected", None),  # refused: it never reached the gateway
    EndedHop("viber", "expired", "deadline_passed", None),  # held or ambiguous: no msg_id
    EndedHop("viber", "failed", "rejected", "m-1"),
    EndedHop("sms", "undelivered", "not_delivered", "m-1"),  # the account falls back from Viber
])
def test_the_route_sends_the_sms_itself_when_the_gateway_will_not(ended):
    assert fallback_gateway().carried_hop(ended, send_request(), "sms") is None


def test_the_gateway_carries_only_the_sms_hop():
    request = send_request(route=["viber", "rogerthat"], to={"phone": "+79031234567",
                           "email": "a@example.com"}, allow_dismiss=True)
    ended = EndedHop("viber", "undelivered", "viber_user_not_found", "m-1")
    assert fallback_gateway().carried_hop(ended, request, "rogerthat") is None


def test_with_the_gateway_fallback_expiry_txt_is_what_the_sms_hop_would_carry():
    """The gateway's SMS carries expiry_txt (else txt): the route's own SMS text, e.g. a
    flow step's numbered options, so the person gets the same SMS either way."""
    request = send_request(texts={"sms": "1) Monday 2) Tuesday"}, sms_text="by sms")
    assert fallback_gateway().outbound(request, context()).sms_text == "1) Monday 2) Tuesday"
    assert fallback_gateway(on=False).outbound(request, context()).sms_text == "by sms"
    plain = send_request()
    assert fallback_gateway().outbound(plain, context()).sms_text == "hello"
    ended = EndedHop("viber", "undelivered", None, "m-1")
    assert fallback_gateway().carried_hop(ended, request, "sms")["txt"] == "1) Monday 2) Tuesday"


def test_permanent_viber_reasons():
    assert {"viber_user_not_found", "viber_no_device", "viber_blocked_by_user",
            "invalid_session", "phone_blacklisted", "spam_detected", "from_not_allowed",
            "bad_words_found", "phone_incorrect", "operator_not_allowed"} == PERMANENT_VIBER_REASONS
    assert "viber_expired" not in PERMANENT_VIBER_REASONS


def test_from_settings():
    from shared.settings import Settings

    # Explicit values win over any SWITCHBOARD_* variables another test may have set.
    gw = MessaggioGateway.from_settings(Settings(
        simulator_port=8111, messaggio_timeout_seconds=4, messaggio_url=None,
        messaggio_media_url=None, messaggio_user="sandbox", messaggio_secret="sandbox-secret",
        messaggio_sender="Switchboard", default_dlr_timeout=1200))
    assert (gw.url, gw.media_url) == ("http://127.0.0.1:8111/", "http://127.0.0.1:8111/upload/")
    assert (gw.user, gw.secret, gw.sender, gw.timeout) == (
        "sandbox", "sandbox-secret", "Switchboard", 4)
    assert (gw.name, gw.channels) == ("messaggio", ("viber", "sms"))
    assert gw.uses_conversations is False
    assert gw.default_dlr_timeout == 1200
    assert gw.gateway_fallback is False  # the default: Switchboard sends the SMS itself
    on = MessaggioGateway.from_settings(Settings(messaggio_gateway_fallback="on"))
    assert on.gateway_fallback is True
    assert isinstance(on, CarriesFallback)


def test_the_gateway_fallback_setting_is_off_or_on(monkeypatch):
    from pydantic import ValidationError

    from shared.settings import Settings

    monkeypatch.delenv("SWITCHBOARD_MESSAGGIO_GATEWAY_FALLBACK", raising=False)
    assert Settings().messaggio_gateway_fallback == "off"
    monkeypatch.setenv("SWITCHBOARD_MESSAGGIO_GATEWAY_FALLBACK", "yes")
    with pytest.raises(ValidationError, match="messaggio_gateway_fallback"):
        Settings()
