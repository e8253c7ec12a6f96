"""The egress table: no producer URL makes Switchboard contact what it should not.

A counting listener runs on 127.0.0.1 (and one on ::1); the stack's allow list opens only
127.0.0.2, where the "public" receivers of this test live, so every form of loopback below
is forbidden. For each form of the listener's address (decimal, hex, octal, short, IPv4-mapped,
unspecified, ``localhost``):

* at validation, ``POST /v1/messages`` with it as ``callback_url`` or ``image_url`` is a 422
  naming the field;
* at connect time, a webhook delivery stored with it (as a row from before the policy, or a
  name that rebinds after validation, would be) is failed by the real worker with
  "egress refused";
* a redirect to it, from an allowed webhook receiver or image host, is not followed;

and the listeners saw no connection at all. Then each form is dialled plainly from the test
process and does reach a listener: the zero above is the policy's doing, not an address
that leads nowhere.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from sqlalchemy import select

from shared.db import session_scope
from shared.messages import create_message
from shared.models import Delivery, Event
from shared.schemas import SendRequest
from tests.integration.conftest import wait_for
from tests.reliability.stack_fixtures import Options, ReliabilityStack, reliability_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

OPTIONS = Options(env={"SWITCHBOARD_EGRESS_ALLOW": "127.0.0.2/32"})
BODY = {"to": {"phone": "+32470129000"}, "route": ["viber"], "text": "egress"}


class Listener:
    """Counts every TCP connection it accepts; answers each with HTTP 200 and closes."""

    def __init__(self, family: int, host: str) -> None:
        self.connections = 0
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n"
                             b"\r\nok")


class Host:
    """An allowed receiver on 127.0.0.2 that redirects every request to ``location``."""

    def __init__(self, status: int, location: str) -> None:
        self.requests = 0
        host = self

        class Handler(BaseHTTPRequestHandler):
            def _moved(self) -> None:
                host.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(status)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _moved

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.2:{self.server.server_port}/"


@pytest.fixture(scope="module")
def listeners() -> Iterator[tuple[Listener, Listener]]:
    v4, v6 = Listener(socket.AF_INET, "127.0.0.1"), Listener(socket.AF_INET6, "::1")
    yield v4, v6
    v4.sock.close()
    v6.sock.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReliabilityStack]:
    with reliability_stack(tmp_path_factory.mktemp("egress"), OPTIONS) as running:
        yield running


def forms(v4: int, v6: int) -> list[str]:
    """Every spelling of the listeners' addresses a resolver or kernel would dial."""
    return [f"http://127.0.0.1:{v4}/h", f"http://127.1:{v4}/h", f"http://2130706433:{v4}/h",
            f"http://0x7f.1:{v4}/h", f"http://0x7f000001:{v4}/h",
            f"http://017700000001:{v4}/h", f"http://0.0.0.0:{v4}/h", f"http://0:{v4}/h",
            f"http://[::ffff:127.0.0.1]:{v4}/h", f"http://[::ffff:7f00:1]:{v4}/h",
            f"http://localhost:{v4}/h", f"http://[::1]:{v6}/h", f"http://[::]:{v6}/h"]


def _count(listeners: tuple[Listener, Listener]) -> int:
    return sum(listener.connections for listener in listeners)


def test_nothing_forbidden_is_contacted(stack: ReliabilityStack,
                                        listeners: tuple[Listener, Listener]) -> None:
    table = forms(listeners[0].port, listeners[1].port)
    _refused_at_validation(stack, table)
    _refused_at_connect_time(table)
    _redirects_are_not_followed(stack, listeners[0].port)
    assert _count(listeners) == 0
    for url in table:  # the control: each form does lead to a listener when dialled plainly
        before = _count(listeners)
        requests.get(url, timeout=5)
        assert _count(listeners) == before + 1, url


def _refused_at_validation(stack: ReliabilityStack, table: list[str]) -> None:
    for url in [*table, "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/",
                "http://100.64.0.1/", "http://[fe80::1]/", "http://224.0.0.1/"]:
        for field in ("callback_url", "image_url"):
            response = stack.post_message(**BODY, **{field: url})
            assert response.status_code == 422, (url, field, response.text)
            assert [e["field"] for e in response.json()["errors"]] == [field], url


def _refused_at_connect_time(table: list[str]) -> None:
    """Deliveries stored with each URL as written (bypassing validation, which would also
    normalise it): the real worker must refuse every one on the address it would dial."""
    message_id = str(uuid.uuid4())
    with session_scope() as session:
        create_message(session, message_id, SendRequest.model_validate(BODY))
        event_id = session.scalars(select(Event.id).where(Event.message_id == message_id)
                                   .order_by(Event.id)).first()
        rows = [Delivery(event_id=event_id, message_id=message_id, url=url) for url in table]
        session.add_all(rows)
        session.commit()
        ids = [row.id for row in rows]

    def all_refused() -> list[Delivery] | None:
        with session_scope() as session:
            rows = list(session.scalars(select(Delivery).where(Delivery.id.in_(ids))))
            session.expunge_all()
        return rows if all(r.status == "failed" for r in rows) else None
    rows = wait_for(all_refused, 60, 0.2, "every forbidden delivery to fail")
    for row in rows:
        assert row.last_error.startswith("egress refused: "), (row.url, row.last_error)
        assert row.attempts == 1, row.url


def _redirects_are_not_followed(stack: ReliabilityStack, v4: int) -> None:
    """An allowed webhook receiver and an allowed image host, both redirecting to the
    listener: the webhook is never redirected, the image redirect is refused."""
    target = f"http://127.0.0.1:{v4}/a.png"
    hook, image = Host(307, target), Host(302, target)
    try:
        response = stack.post_message(**BODY, callback_url=hook.url + "hooks",
                                      image_url=image.url + "a.png")
        assert response.status_code == 202, response.text
        view = stack.wait_status(response.json()["id"], {"failed", "undelivered"}, 60)
        assert "image_refused" in str(view["attempts"]), view["attempts"]
        wait_for(lambda: hook.requests >= 2, 60, 0.1, "the webhook to be tried (and retried)")
        assert image.requests == 1
    finally:
        hook.server.shutdown()
        image.server.shutdown()
