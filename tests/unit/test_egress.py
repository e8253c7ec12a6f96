"""The egress policy (shared/egress.py): which URLs a producer may make Switchboard call,
checked at validation and again on the address actually dialled.

Connections are counted at real listeners on 127.0.0.1: "refused" means the listener saw
none, not only that an error was raised.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from pydantic import ValidationError
from sqlalchemy import select

from shared import contacts, db, egress
from shared.cli import CliError, _http_url
from shared.messages import create_message
from shared.models import Delivery
from shared.providers.base import PermanentError
from shared.providers.messaggio import MessaggioGateway
from shared.schemas import EGRESS_CHECK, SendRequest
from shared.settings import get_settings
from tests.unit import test_api
from worker import notify

client = test_api.client  # the API test client fixture (a fresh app and database)

CLOSED = egress.Allow()

FORBIDDEN = [
    ("http://127.0.0.1/", "loopback"), ("http://127.1/", "loopback"),
    ("http://2130706433/", "loopback"), ("http://0x7f.1/", "loopback"),
    ("http://017700000001/", "loopback"), ("http://0x7f000001/", "loopback"),
    ("http://[::1]/", "loopback"), ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"), ("http://[64:ff9b::7f00:1]/", "loopback"),
    ("http://[2002:7f00:1::]/", "loopback"), ("http://169.254.169.254/latest/", "link-local"),
    ("http://[fe80::1]/", "link-local"), ("http://10.0.0.5/", "private"),
    ("http://172.16.3.4/", "private"), ("http://192.168.1.1/", "private"),
    ("http://[fd00::1]/", "private"), ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://100.64.0.1/", "carrier-grade NAT"), ("http://224.0.0.251/", "multicast"),
    ("http://[ff02::1]/", "multicast"), ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"), ("http://[::]/", "unspecified"),
    ("http://192.0.2.10/", "not a public address"), ("http://255.255.255.255/", "not a"),
]


@pytest.mark.parametrize(("url", "reason"), FORBIDDEN, ids=[u for u, _ in FORBIDDEN])
def test_every_form_of_an_internal_address_is_refused(url: str, reason: str) -> None:
    with pytest.raises(egress.EgressRefused, match=reason):
        egress.check_url(url, dns=False, allow=CLOSED)


@pytest.mark.parametrize("url", ["https://93.184.215.14/hooks", "http://8.8.8.8:8080/",
                                 "https://[2606:4700::1111]/", "https://shop.example/hooks"])
def test_public_addresses_pass(url: str) -> None:
    egress.check_url(url, allow=CLOSED)  # shop.example resolves publicly (conftest)


@pytest.mark.parametrize("url", ["ftp://93.184.215.14/", "http:///path", "file:///etc/passwd"])
def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(egress.EgressRefused, match="http"):
        egress.check_url(url, allow=CLOSED)


def test_the_allow_list_opens_networks_and_host_names_exactly() -> None:
    allow = egress.Allow.parse(" 127.0.0.1/32, ::1/128 ,hooks.internal,10.1.0.0/16")
    for url in ("http://127.0.0.1:8000/", "http://2130706433/", "http://[::ffff:127.0.0.1]/",
                "http://[::1]/", "http://10.1.2.3/", "http://HOOKS.internal./x"):
        egress.check_url(url, dns=False, allow=allow)
    for url in ("http://127.0.0.2/", "http://10.2.0.1/", "http://169.254.169.254/"):
        with pytest.raises(egress.EgressRefused):
            egress.check_url(url, dns=False, allow=allow)


def test_a_mistyped_allow_list_stops_the_settings() -> None:
    with pytest.raises(ValueError, match="10.0.0.0/33"):
        egress.Allow.parse("10.0.0.0/33")
    with pytest.raises(ValidationError, match="egress_allow"):
        type(get_settings())(egress_allow="127.0.0.1/40")


def _resolver(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    """``socket.getaddrinfo`` answering ``answers`` for these names, the real one otherwise."""
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host not in answers:
            return real(host, port, *args, **kwargs)
        if not answers[host]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port)) for a in answers[host]]
    monkeypatch.setattr(socket, "getaddrinfo", fake)


def test_host_names_are_checked_on_every_address_they_resolve_to(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _resolver(monkeypatch, {"inside.test": ["10.0.0.7"], "mixed.test": ["93.184.215.14", "::1"],
                            "public.test": ["93.184.215.14"], "gone.test": []})
    with pytest.raises(egress.EgressRefused, match="10.0.0.7 is private"):
        egress.check_url("https://inside.test/hook", allow=CLOSED)
    with pytest.raises(egress.EgressRefused, match="::1 is loopback"):
        egress.check_url("https://mixed.test/hook", allow=CLOSED)
    with pytest.raises(egress.EgressRefused, match="does not resolve"):
        egress.check_url("https://gone.test/hook", allow=CLOSED)
    egress.check_url("https://public.test/hook", allow=CLOSED)
    with pytest.raises(egress.EgressRefused, match="loopback"):
        egress.check_url("http://localhost:8000/", allow=CLOSED)  # the real resolver


_real_resolve = egress.resolve


def test_a_resolver_that_hangs_is_a_refusal_after_the_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: release.wait(30) and [])
    try:
        with pytest.raises(egress.EgressRefused, match="did not resolve within"):
            _real_resolve("slow.test", 80, timeout=0.05)
    finally:
        release.set()


# --- validation: 422 naming the field ------------------------------------------------------

BODY = {"to": {"phone": "+32470120000"}, "route": ["viber"], "text": "hi"}


@pytest.mark.parametrize("field", ["callback_url", "image_url"])
def test_the_schema_names_the_field_when_asked_to_check(field: str) -> None:
    body = {**BODY, field: "http://169.254.169.254/latest/meta-data"}
    with pytest.raises(ValidationError) as info:
        SendRequest.model_validate(body, context=EGRESS_CHECK)
    assert info.value.errors()[0]["loc"] == (field,)
    SendRequest.model_validate(body)  # a stored request re-read by the worker: no lookups


@pytest.mark.parametrize("field", ["callback_url", "image_url"])
@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/", "http://0x7f.1/",
                                 "http://localhost/hook", "http://[::ffff:10.0.0.1]/"])
def test_the_api_answers_422_naming_the_field(client, field: str, url: str) -> None:
    resp = client.post("/v1/messages", json={**BODY, field: url},
                       headers={"Authorization": "Bearer k1"})
    assert resp.status_code == 422, resp.get_json()
    assert [e["field"] for e in resp.get_json()["errors"]] == [field]


def test_the_api_answers_422_for_a_campaign_callback(client) -> None:
    body = {"route": ["viber"], "text": "hi", "recipients": [{"phone": "+32470120000"}],
            "callback_url": "http://192.168.0.1/"}
    resp = client.post("/v1/campaigns", json=body, headers={"Authorization": "Bearer k1"})
    assert resp.status_code == 422
    assert [e["field"] for e in resp.get_json()["errors"]] == ["callback_url"]


def test_an_app_callback_url_from_the_cli_is_checked() -> None:
    with pytest.raises(CliError, match="--callback-url: .*169.254.169.254 is link-local"):
        _http_url("http://169.254.169.254/")
    assert _http_url("https://shop.example/hooks") == "https://shop.example/hooks"


# --- connect time: the address dialled ----------------------------------------------------

class Listener:
    """A TCP listener that counts the connections it accepts (and answers HTTP 200)."""

    def __init__(self, host: str = "127.0.0.1", status: int = 200, body: bytes = b"ok",
                 headers: dict[str, str] | None = None) -> None:
        self.connections = 0
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def setup(self) -> None:
                listener.connections += 1
                super().setup()

            def _answer(self) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://{host}:{self.server.server_port}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    target = Listener()
    yield target
    target.close()


def _allow(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SWITCHBOARD_EGRESS_ALLOW", value)
    get_settings.cache_clear()


def test_the_transport_refuses_a_loopback_listener_and_dials_it_when_allowed(
        listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    _allow(monkeypatch, "")
    with pytest.raises(requests.ConnectionError) as info:
        egress.session().get(listener.url, timeout=5)
    assert egress.refused_reason(info.value) is not None
    assert "127.0.0.1 is loopback" in egress.refused_reason(info.value)
    assert listener.connections == 0
    _allow(monkeypatch, "127.0.0.1/32")
    assert egress.session().get(listener.url, timeout=5).status_code == 200
    assert listener.connections == 1


def test_a_name_that_rebinds_to_loopback_after_validation_is_not_dialled(
        listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    _allow(monkeypatch, "")
    port = listener.server.server_port
    _resolver(monkeypatch, {"rebind.test": ["93.184.215.14"]})
    egress.check_url(f"http://rebind.test:{port}/", allow=CLOSED)  # passes validation
    _resolver(monkeypatch, {"rebind.test": ["127.0.0.1"]})  # ... then the answer changes
    with pytest.raises(requests.ConnectionError) as info:
        egress.session().get(f"http://rebind.test:{port}/", timeout=5)
    assert "loopback" in (egress.refused_reason(info.value) or "")
    assert listener.connections == 0


def test_an_image_redirect_to_loopback_is_not_followed(
        listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    """The image host is allowed (127.0.0.2), where it redirects (127.0.0.1) is not."""
    _allow(monkeypatch, "127.0.0.2/32")
    host = Listener("127.0.0.2", status=302, headers={"Location": listener.url + "a.png"})
    gateway = MessaggioGateway("http://127.0.0.1:9/", "http://127.0.0.1:9/", "u", "s", "S")
    try:
        with pytest.raises(PermanentError) as info:
            gateway.fetch_image(host.url + "a.png")
    finally:
        host.close()
    assert info.value.reason == "image_refused"
    assert host.connections == 1 and listener.connections == 0
    _allow(monkeypatch, "127.0.0.0/8")  # the control: an allowed redirect is followed
    listener_ok = Listener("127.0.0.2", status=302, headers={"Location": listener.url})
    try:
        assert gateway.fetch_image(listener_ok.url) == b"ok"
    finally:
        listener_ok.close()
    assert listener.connections == 1


# --- webhooks: refused for good, no redirects, a short excerpt ------------------------------

def _delivery(url: str, message_id: str = "m-egress") -> int:
    """A message whose ``queued`` event is due for delivery to ``url``; that delivery."""
    request = SendRequest.model_validate({**BODY, "callback_url": url})
    with db.session_scope() as session:
        create_message(session, message_id, request, app_id="default")
        return session.scalars(select(Delivery.id).where(Delivery.message_id == message_id)
                               ).one()


@pytest.fixture
def signed(temp_db, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_CALLBACK_SIGNING_SECRET", "whsec-test")
    get_settings.cache_clear()


def test_a_refused_webhook_fails_at_once_and_says_why(
        signed: None, listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    _allow(monkeypatch, "")
    delivery_id = _delivery(listener.url + "hooks")
    assert notify.deliver(delivery_id) == "failed"
    with db.session_scope() as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery.last_error.startswith("egress refused: 127.0.0.1 is loopback")
        assert delivery.attempts == 1 and delivery.next_attempt_at is None
    assert listener.connections == 0


def test_a_webhook_redirect_is_not_followed_and_the_answer_is_cut_short(
        signed: None, listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    _allow(monkeypatch, "127.0.0.2/32")
    moved = Listener("127.0.0.2", status=307, headers={"Location": listener.url})
    loud = Listener("127.0.0.2", status=500, body=b"secret-internal-page " * 1000)
    try:
        moved_id, loud_id = _delivery(moved.url, "m-moved"), _delivery(loud.url, "m-loud")
        notify.deliver(moved_id)
        notify.deliver(loud_id)
    finally:
        moved.close()
        loud.close()
    assert moved.connections == 1 and listener.connections == 0
    with db.session_scope() as session:
        assert session.get(Delivery, moved_id).last_status_code == 307
        loud_row = session.get(Delivery, loud_id)
        assert loud_row.last_status_code == 500
        assert loud_row.last_error == ("secret-internal-page " * 5)[:egress.EXCERPT_LIMIT]
    assert egress.EXCERPT_LIMIT == 100


def test_a_capped_read_stops_at_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    _allow(monkeypatch, "127.0.0.1/32")
    big = Listener(body=b"x" * 100_000)
    try:
        with egress.session().get(big.url, stream=True, timeout=5) as response:
            assert len(egress.read_capped(response, cap=5000)) == 5000
    finally:
        big.close()


def test_the_friend_policy_url_goes_through_the_policy(
        listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    _allow(monkeypatch, "")
    monkeypatch.setenv("SWITCHBOARD_ROGERTHAT_FRIEND_POLICY_URL", listener.url)
    monkeypatch.setenv("SWITCHBOARD_ROGERTHAT_FRIEND_POLICY_DEFAULT", "declined")
    get_settings.cache_clear()
    assert contacts._ask_producer({"email": "a@example.com"}) is False  # the default
    assert listener.connections == 0


def test_ipaddress_forms_of_the_embedded_v4_address() -> None:
    assert egress._embedded(ipaddress.ip_address("::ffff:169.254.169.254")) == \
        ipaddress.ip_address("169.254.169.254")
    assert egress._embedded(ipaddress.ip_address("::1")) == ipaddress.ip_address("::1")
