"""Consent records and the friend.invited policies (accept all, known contacts, ask producer)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from shared import contacts, db
from shared.settings import get_settings

INVITATION = {"email": "new@example.com", "app_id": "rogerthat", "name": "N", "origin": "x"}


@pytest.fixture()
def session(temp_db: Path):
    with db.session_scope() as s:
        yield s


def _policy(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(f"SWITCHBOARD_ROGERTHAT_FRIEND_{key.upper()}", value)
    get_settings.cache_clear()


def test_unknown_contacts_may_be_messaged_but_refusals_stick(session) -> None:
    assert contacts.may_message(session, "rogerthat", "a@example.com", "rogerthat")
    contacts.record(session, "rogerthat", "A@example.com", "rogerthat", "not_friend")
    assert not contacts.may_message(session, "rogerthat", "a@example.com", "rogerthat")
    contacts.record(session, "rogerthat", "a@example.com", "rogerthat", "friend")
    assert contacts.may_message(session, "rogerthat", "a@example.com", "rogerthat")
    contacts.record(session, "rogerthat", "a@example.com", "rogerthat", None, name="Ann")
    contact = contacts.find(session, "rogerthat", "a@example.com", "rogerthat")
    assert (contact.status, contact.name) == ("friend", "Ann")  # a profile update keeps it


def test_accept_all(session, monkeypatch: pytest.MonkeyPatch) -> None:
    _policy(monkeypatch, policy="accept_all")
    assert contacts.decide_invitation(session, "new@example.com", "rogerthat", INVITATION) \
        == "accepted"


def test_known_contacts_only(session, monkeypatch: pytest.MonkeyPatch) -> None:
    _policy(monkeypatch, policy="known_contacts")
    assert contacts.decide_invitation(session, "new@example.com", "rogerthat", INVITATION) \
        == "declined"
    contacts.record(session, "rogerthat", "new@example.com", "rogerthat", "invited")
    assert contacts.decide_invitation(session, "new@example.com", "rogerthat", INVITATION) \
        == "accepted"


@pytest.fixture()
def producer(monkeypatch: pytest.MonkeyPatch):
    # The producer's receiver runs on this host: open the egress policy to it, as in
    # development (shared.egress refuses loopback otherwise).
    monkeypatch.setenv("SWITCHBOARD_EGRESS_ALLOW", "127.0.0.1/32")
    get_settings.cache_clear()
    answers: list[bytes] = []
    received: list[dict] = []
    block = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            if not answers:
                block.wait(5)  # too slow: the caller must time out and use its default
                return
            body = answers.pop(0)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/friends", answers, received
    block.set()
    server.shutdown()


def test_ask_producer_follows_its_answer_and_falls_back_on_timeout(
        session, monkeypatch: pytest.MonkeyPatch, producer) -> None:
    url, answers, received = producer
    _policy(monkeypatch, policy="ask_producer", policy_url=url, policy_timeout_seconds="0.5",
            policy_default="declined")
    answers.append(b'{"accept": true}')
    assert contacts.decide_invitation(session, "new@example.com", "rogerthat", INVITATION) \
        == "accepted"
    assert received[0]["email"] == "new@example.com"
    answers.append(b'{"accept": false}')
    assert contacts.decide_invitation(session, "new@example.com", "rogerthat", INVITATION) \
        == "declined"
    _policy(monkeypatch, policy_default="accepted")
    # no answer queued: the producer hangs past the timeout -> the default
    assert contacts.decide_invitation(session, "new@example.com", "rogerthat", INVITATION) \
        == "accepted"


def test_a_declined_invitation_is_matched_by_the_tag_we_sent(
        session, monkeypatch: pytest.MonkeyPatch) -> None:
    """A decline carries our tag but no e-mail (providers.md §1.8): the tag finds the contact."""
    from types import SimpleNamespace

    from shared.handlers import Occurrence
    from shared.providers.rogerthat import parse_callback
    from worker import messenger

    sent: list[dict] = []

    class Provider:
        def invite(self, email: str, app_id: str, **fields: object) -> None:
            sent.append({"email": email, "app_id": app_id, **fields})

    monkeypatch.setattr(messenger, "provider_for", lambda operation: Provider())
    assert messenger.invite("Ann@example.com", "rogerthat", "rpc-42", name="Ann") == "invited"
    assert sent[0]["tag"] == contacts.invitation_tag("rpc-42") == "switchboard-invite:rpc-42"

    event = parse_callback({"id": "cb-9", "method": "friend.invite_result", "params": {
        "email": None, "result": "decline", "tag": sent[0]["tag"], "origin": "service_invite",
        "service_identity": "+default+", "user_details": None}})
    contacts.on_contact(SimpleNamespace(session=session),
                        Occurrence(kind="contact", provider="rogerthat", event=event))
    contact = contacts.find(session, "rogerthat", "ann@example.com", "rogerthat")
    assert contact is not None and contact.status == "declined"
    assert not contacts.may_message(session, "rogerthat", "ann@example.com", "rogerthat")


def test_an_invitation_result_with_a_tag_of_no_invitation_changes_nothing(session) -> None:
    from types import SimpleNamespace

    from shared.handlers import Occurrence
    from shared.providers.rogerthat import parse_callback

    contacts.record(session, "rogerthat", "bob@example.com", "rogerthat", "invited",
                    details={"invite_tag": contacts.invitation_tag("rpc-1")})
    for tag in (contacts.invitation_tag("rpc-other"), "their-own-tag"):
        event = parse_callback({"id": f"cb-{tag}", "method": "friend.invite_result", "params": {
            "email": None, "result": "decline", "tag": tag}})
        contacts.on_contact(SimpleNamespace(session=session),
                            Occurrence(kind="contact", provider="rogerthat", event=event))
    assert contacts.find(session, "rogerthat", "bob@example.com", "rogerthat").status == "invited"


def _listed(session, app_id: str) -> set[str]:
    from sqlalchemy import select

    from shared.models import Contact

    return set(session.scalars(select(Contact.address).where(contacts.visible(app_id))))


def test_an_app_lists_only_the_contacts_it_reached(session) -> None:
    """A friendship is the service's; the list is the app's (the default app also lists
    those no app reached)."""
    contacts.reached(session, "rogerthat", "A@example.com", "rogerthat", "app-a")
    contacts.reached(session, "rogerthat", "a@example.com", "rogerthat", "app-a")  # once
    contacts.record(session, "rogerthat", "walk-in@example.com", "rogerthat", "friend")
    session.flush()
    assert _listed(session, "app-a") == {"a@example.com"}
    assert _listed(session, "app-b") == set()
    assert _listed(session, "default") == {"walk-in@example.com"}
    contacts.reached(session, "rogerthat", "a@example.com", "rogerthat", "app-b")
    session.flush()
    assert _listed(session, "app-b") == {"a@example.com"}
    contact = contacts.find(session, "rogerthat", "a@example.com", "rogerthat")
    assert contacts.apps_of(session, contact) == ["app-a", "app-b"]


def test_a_messenger_message_at_accept_links_its_recipient(session) -> None:
    from shared.schemas import SendRequest

    messenger = SendRequest.model_validate({"to": {"email": "m@example.com"},
                                            "route": ["rogerthat"], "text": "hi"})
    sms = SendRequest.model_validate({"to": {"phone": "+32470120001"}, "route": ["sms"],
                                      "text": "hi"})
    contacts.note_recipients(session, messenger, "app-a")
    contacts.note_recipients(session, sms, "app-a")
    session.flush()
    assert _listed(session, "app-a") == {"m@example.com"}
    contact = contacts.find(session, "rogerthat", "m@example.com", "rogerthat")
    assert contact is not None and contact.status == "unknown"
