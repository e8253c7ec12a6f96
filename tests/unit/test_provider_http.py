"""The transport every adapter shares (shared/providers/http.py): timeouts, what an HTTP status
or a transport failure means for a resend, Retry-After, and redaction of provider echoes.

Exceptions are built the way requests/urllib3 nest them in production; the two calls that
need a socket use a real server on 127.0.0.1 (port 0).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    ProtocolError,
    SSLError,
)

from shared.providers.base import (
    REDACTED,
    AmbiguousError,
    PermanentError,
    ProviderError,
    RetryableError,
)
from shared.providers.http import (
    classify_http_status,
    classify_transport_error,
    echoed,
    http_request,
    parse_retry_after,
    short,
    timeouts,
)
from tests.unit.conftest import clear_caches

SECRET = "configured-gateway-secret-42"


def response(status: int, body: bytes = b"", headers: dict[str, str] | None = None,
             ) -> requests.Response:
    resp = requests.Response()
    resp.status_code, resp._content, resp.encoding = status, body, "utf-8"
    resp.headers.update(headers or {})
    return resp


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture()
def secret_configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("SWITCHBOARD_MESSAGGIO_SECRET", SECRET)
    clear_caches()
    yield SECRET
    monkeypatch.delenv("SWITCHBOARD_MESSAGGIO_SECRET")
    clear_caches()


# --------------------------------------------------------------------------------------
# Timeouts and truncation
# --------------------------------------------------------------------------------------

def test_timeouts_cap_only_the_connect_part():
    assert timeouts(10.0) == (3.0, 10.0)
    assert timeouts(1.5) == (1.5, 1.5)


def test_short_cuts_text_and_exceptions():
    assert short("x" * 500) == "x" * 300
    assert short("abcdef", 3) == "abc"
    assert short(ValueError("boom")) == "boom"


# --------------------------------------------------------------------------------------
# HTTP status
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_is_no_error(status):
    assert classify_http_status(response(status), idempotent=False) is None


@pytest.mark.parametrize(("status", "idempotent", "cls"), [
    (429, False, RetryableError), (502, False, RetryableError), (503, False, RetryableError),
    (504, False, RetryableError),
    (500, False, AmbiguousError), (501, False, AmbiguousError),
    (500, True, RetryableError), (501, True, RetryableError),
    (400, False, PermanentError), (404, True, PermanentError), (302, False, PermanentError),
])
def test_status_classes(status, idempotent, cls):
    error = classify_http_status(response(status, b"x" * 500), idempotent=idempotent)
    assert type(error) is cls
    assert error.reason == f"http_{status}"
    assert error.detail == "x" * 200


def test_retryable_status_keeps_retry_after():
    error = classify_http_status(response(503, headers={"Retry-After": "7"}), idempotent=False)
    assert isinstance(error, RetryableError) and error.retry_after == 7.0
    error = classify_http_status(response(429), idempotent=False)
    assert isinstance(error, RetryableError) and error.retry_after is None


def test_retry_after_forms():
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Mon, 01 Jan 2024 11:00:00 GMT", now) == 0.0
    for bad in (None, "", "soon", "-5", "inf", "nan"):
        assert parse_retry_after(bad, now) is None


# --------------------------------------------------------------------------------------
# Transport errors
# --------------------------------------------------------------------------------------

def test_dns_failure_and_connect_timeout_are_retryable():
    dns = NameResolutionError("bulk.invalid", None, socket.gaierror(-2, "Name not known"))
    for exc in (requests.ConnectionError(MaxRetryError(None, "/", dns)),
                requests.ConnectTimeout(MaxRetryError(None, "/", ConnectTimeoutError("t")))):
        error = classify_transport_error(exc, idempotent=False)
        assert (type(error), error.reason) == (RetryableError, "connection_failed")


def test_tls_certificate_failure_is_retryable_but_other_tls_errors_ambiguous():
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cert = requests.exceptions.SSLError(MaxRetryError(None, "/", SSLError(verify)))
    assert classify_transport_error(cert, idempotent=False).reason == "connection_failed"
    eof = requests.exceptions.SSLError(MaxRetryError(None, "/", SSLError(ssl.SSLEOFError())))
    assert type(classify_transport_error(eof, idempotent=False)) is AmbiguousError


def test_aborted_connection_depends_on_idempotency():
    exc = requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError()))
    assert type(classify_transport_error(exc, idempotent=False)) is AmbiguousError
    assert type(classify_transport_error(exc, idempotent=True)) is RetryableError
    assert classify_transport_error(exc, idempotent=True).reason == "connection_dropped"


@pytest.mark.parametrize(("exc", "reason"), [
    (requests.ReadTimeout("read timed out"), "timeout_after_send"),
    (requests.exceptions.ChunkedEncodingError("cut"), "transport_error"),
])
def test_may_have_arrived_is_ambiguous_unless_idempotent(exc, reason):
    first = classify_transport_error(exc, idempotent=False)
    assert (type(first), first.reason) == (AmbiguousError, reason)
    again = classify_transport_error(exc, idempotent=True)
    assert (type(again), again.reason) == (RetryableError, reason)


@pytest.mark.parametrize("exc", [requests.exceptions.InvalidURL("x"),
                                 requests.exceptions.MissingSchema("x"),
                                 requests.exceptions.InvalidSchema("x")])
def test_a_bad_url_is_permanent(exc):
    error = classify_transport_error(exc, idempotent=True)
    assert (type(error), error.reason) == (PermanentError, "bad_url")


# --------------------------------------------------------------------------------------
# http_request over a real socket
# --------------------------------------------------------------------------------------

@pytest.fixture()
def redirecting() -> Iterator[tuple[str, list[str]]]:
    """A server that answers every request with a redirect to itself; records the paths."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01},
                     daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/send", seen
    httpd.shutdown()
    httpd.server_close()


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # never route the local test server through an env proxy
    return session


def test_http_request_never_follows_a_redirect(redirecting):
    url, seen = redirecting
    resp = http_request(_session(), "POST", url, data=b"x", timeout=2.0, idempotent=False)
    assert resp.status_code == 302
    assert seen == ["/send"]
    assert isinstance(classify_http_status(resp, idempotent=False), PermanentError)


def test_http_request_raises_the_transport_error_it_means():
    url = f"http://127.0.0.1:{closed_port()}/"
    with pytest.raises(RetryableError) as info:
        http_request(_session(), "POST", url, timeout=2.0, idempotent=False)
    assert info.value.reason == "connection_failed"
    assert isinstance(info.value.__cause__, requests.ConnectionError)


# --------------------------------------------------------------------------------------
# Redaction of what a provider echoes back
# --------------------------------------------------------------------------------------

def test_echoed_redacts_configured_secrets(secret_configured):
    body = f"<response><tech_message>bad sign for {secret_configured}</tech_message>"
    assert echoed(body) == f"<response><tech_message>bad sign for {REDACTED}</tech_message>"
    assert echoed("nothing secret here") == "nothing secret here"


def test_echoed_redacts_before_cutting(secret_configured):
    # Cut first, and the first 10 characters of the secret would survive.
    cut = echoed("ab" + secret_configured, limit=12)
    assert cut == ("ab" + REDACTED)[:12]
    assert secret_configured[:6] not in cut


def test_an_error_quoting_the_provider_echo_is_redacted(secret_configured):
    resp = response(401, f"invalid key {secret_configured}".encode())
    error = classify_http_status(resp, idempotent=False)
    assert isinstance(error, ProviderError)
    assert secret_configured not in error.detail and REDACTED in error.detail
    assert secret_configured not in str(error)
