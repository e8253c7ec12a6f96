"""Secrets (API keys, provider secrets, service keys) never appear in logs, error bodies or
anything stored that producers can read.

Every secret is set to a recognisable value (``conftest.SECRETS``). The web app is driven into
its refusal and error paths (keys presented where they do not belong, callbacks with the token
in their URL, a provider that echoes our credentials back), and the real worker path runs the
send tasks in-process (Celery ``apply``, embedded Redis as broker) against providers that fail
with exceptions and replies quoting the request they were sent. Then every log record, every
answer body and every stored row (attempts, events, callbacks, deliveries) is searched for
every secret value.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import select

from shared import db
from shared.localrun import start_embedded_redis
from shared.models import Attempt, Callback, Delivery, Event, Message
from shared.providers import get_provider
from shared.settings import get_settings
from tests.reliability.conftest import AUTH, SECRETS
from worker import redis_conn

CAUGHT: list[str] = []  # every body and every log text a test saw, searched at the end


class Collector(logging.Handler):
    """Keeps every record's full text, traceback included (what a log file would hold)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record) + repr(record.args))


@pytest.fixture(scope="module")
def logs() -> Iterator[Collector]:
    """On the root logger and on every logger that does not propagate (Celery's)."""
    collector = Collector()
    loggers = [logging.getLogger(), logging.getLogger("celery"),
               logging.getLogger("celery.app.trace"), logging.getLogger("celery.task")]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(collector)
        lg.setLevel(logging.DEBUG)
    yield collector
    for lg, level in saved:
        lg.removeHandler(collector)
        lg.setLevel(level)


@pytest.fixture(scope="module")
def broker(reliability_env: Path) -> Iterator[None]:
    """Embedded Redis as the broker and rate-limit store: the worker path runs for real."""
    proc = start_embedded_redis(reliability_env, reliability_env / "redis.sock")
    from worker.app import app as celery_app

    saved = celery_app.conf.broker_url  # read at import: it may predate this module
    celery_app.conf.broker_url = get_settings().effective_broker_url
    redis_conn.reset()
    try:
        yield
    finally:
        celery_app.conf.broker_url = saved
        proc.terminate()
        proc.wait(timeout=10)
        redis_conn.reset()


@pytest.fixture(scope="module")
def client(app: Flask, broker: None, logs: Collector) -> Any:
    return app.test_client()


def keep(resp: Any) -> Any:
    """Remember an answer body for the final search; return the response."""
    CAUGHT.append(resp.get_data(as_text=True))
    return resp


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"u:{password}".encode()).decode()}


# --------------------------------------------------------------------------------------
# The web app: credentials presented where they do not belong, tokens in URLs
# --------------------------------------------------------------------------------------

def wrong_places() -> list[tuple[str, str, dict[str, str]]]:
    """(method, path, headers): each secret presented to an endpoint it does not open."""
    token = SECRETS["SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN"]
    cases = []
    for name, secret in SECRETS.items():
        cases += [("POST", "/v1/messages", {"Authorization": f"Bearer {secret}x"}),
                  ("GET", "/v1/contacts", {"Authorization": f"Basic {secret}"}),
                  ("GET", "/v1/contacts", {"Authorization": secret}),
                  ("POST", "/callbacks/rogerthat", {"X-Nuntiuz-Service-Key": secret + "x"}),
                  ("POST", "/callbacks/contactatonce/messages", basic(secret + "x")),
                  ("POST", f"/callbacks/messaggio/{secret}x", {}),
                  ("GET", f"/callbacks/messaggio/{token}/{secret}", {})]
        if name != "SWITCHBOARD_ROGERTHAT_SERVICE_KEY":
            cases.append(("POST", "/callbacks/rogerthat", {"X-Nuntiuz-Service-Key": secret}))
    return cases


def test_refusals_do_not_echo_the_credential(client: Any) -> None:
    for method, path, headers in wrong_places():
        resp = keep(client.open(path, method=method, headers=headers,
                                json={"id": "e", "method": "test.test", "params": {}}))
        assert 400 <= resp.status_code < 500, (method, path, resp.status_code)


def test_callbacks_with_the_token_in_their_url_do_not_echo_or_store_it(client: Any) -> None:
    """A malformed report (stored for audit) and a duplicate: the token is in neither."""
    url = f"/callbacks/messaggio/{SECRETS['SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN']}"
    assert keep(client.post(url, data={"type": "bogus"})).status_code == 400
    assert keep(client.get(url, query_string={"msg_id": "m-1", "status": "x"})).status_code \
        == 400
    report = {"msg_id": "m-2", "type": "delivery", "status": "delivered"}
    assert keep(client.post(url, data=report)).status_code == 200
    assert keep(client.post(url, data=report)).get_json() == {"status": "duplicate"}


def test_messenger_and_in_app_callbacks_with_the_right_key_do_not_store_it(client: Any) -> None:
    rogerthat = {"X-Nuntiuz-Service-Key": SECRETS["SWITCHBOARD_ROGERTHAT_SERVICE_KEY"]}
    keep(client.post("/callbacks/rogerthat", headers=rogerthat, data=b"{broken"))
    keep(client.post("/callbacks/rogerthat", headers=rogerthat,
                     json={"id": "e-9", "method": "test.test", "params": {"value": "v"}}))
    inbound = basic(SECRETS["SWITCHBOARD_CONTACTATONCE_INBOUND_KEY"])
    keep(client.post("/callbacks/contactatonce/messages", headers=inbound, json={"x": 1}))
    keep(client.post("/callbacks/contactatonce/messages", headers=inbound,
                     json={"VisitId": 7, "MessageId": "cao-1", "Message": "hi"}))


# --------------------------------------------------------------------------------------
# Providers that fail quoting the request they were sent
# --------------------------------------------------------------------------------------

class EchoingSession:
    """A transport that fails with the whole request in its error: by raising, or by a
    reply (401, 500, or an unreadable 200) whose body quotes the request."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", url, **kwargs)

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        dump = f"{method} {url} headers={kwargs.get('headers')!r} data={kwargs.get('data')!r}"
        if self.mode == "raise":
            raise requests.ConnectionError(f"connection reset while sending {dump}")
        reply = requests.Response()
        reply.status_code = {"401": 401, "500": 500, "200": 200}[self.mode]
        reply._content = f"cannot handle request: {dump}".encode()
        reply.reason = f"rejected {dump}"[:500]
        reply.url = url
        return reply


ROUTES = {
    "sms": {"to": {"phone": "+32470123456"}, "route": ["sms"], "text": "Hi"},
    "rogerthat": {"to": {"email": "ann@example.com"}, "route": ["rogerthat"], "text": "Hi",
                  "allow_dismiss": True},
    "inapp": {"route": ["inapp"], "text": "Hi", "conversation": {"consumer_id": "c-1"}},
}


@pytest.mark.parametrize("mode", ["raise", "401", "500", "200"])
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_provider_failures_quoting_the_request_leak_nothing(
        client: Any, mode: str, route: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each case reaches its provider: the circuit an earlier case's 401 (an account-wide
    refusal) or 500s opened would hold this one before its call, with nothing to quote."""
    from worker import breaker
    from worker.tasks.send import dispatch

    monkeypatch.setattr(breaker, "admit", lambda provider: None)

    for name in ("messaggio", "rogerthat", "contactatonce"):
        get_provider(name).session = EchoingSession(mode)  # type: ignore[attr-defined]
    resp = keep(client.post("/v1/messages", json=ROUTES[route], headers=AUTH))
    if resp.status_code == 422 and route == "inapp":
        pytest.skip("this checkout has no in-app channel")
    message_id = resp.get_json()["id"]
    dispatch.apply(args=[message_id])
    view = keep(client.get(f"/v1/messages/{message_id}", headers=AUTH)).get_json()
    assert view["attempts"] and view["attempts"][0]["error"], view


@pytest.mark.parametrize("mode", ["raise", "401", "500", "200"])
def test_provider_error_in_an_api_answer_leaks_nothing(client: Any, mode: str) -> None:
    """Conversation reads quote the provider's failure in ``provider_error`` (or fail)."""
    get_provider("contactatonce").session = EchoingSession(mode)  # type: ignore[attr-defined]
    resp = keep(client.get("/v1/conversations", query_string={"consumer_id": "c-1"},
                           headers=AUTH))
    if resp.status_code == 404:
        pytest.skip("this checkout has no conversation API")
    assert resp.get_json()["provider_error"]


# --------------------------------------------------------------------------------------
# The search (runs last in this module)
# --------------------------------------------------------------------------------------

def stored_text() -> list[str]:
    """Everything producers or operators can read back from the database, as JSON text."""
    columns = {Attempt: ("error_detail", "response_text", "request_summary"),
               Event: ("payload",), Callback: ("params", "body", "error", "answer"),
               Delivery: ("last_error",), Message: ("request", "reason")}
    texts = []
    with db.session_scope() as session:
        for model, names in columns.items():
            for row in session.scalars(select(model)):
                texts.append(json.dumps({n: getattr(row, n) for n in names}, default=str))
    return texts


def test_no_secret_appears_in_logs_bodies_or_stored_rows(logs: Collector) -> None:
    haystacks = {"log": logs.texts, "body": CAUGHT, "row": stored_text()}
    assert haystacks["log"] and haystacks["body"] and haystacks["row"]
    leaks = {(where, name): _around(text, secret) for where, texts in haystacks.items()
             for text in texts for name, secret in SECRETS.items() if secret in text}
    assert not leaks, "\n".join(f"{w} leaks {n}: ...{t}..." for (w, n), t in leaks.items())


def _around(text: str, secret: str, margin: int = 120) -> str:
    """The text around the leaked secret, to show where it came from."""
    at = text.index(secret)
    return text[max(0, at - margin):at + len(secret) + 20]
