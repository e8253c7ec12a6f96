"""The consent registry (shared/consent.py) and the engine's consent step: keywords, merging
changes, the audit trail, set-based refusals, suppression before any provider call, the
route moving on, categories, the critical exception, reports, friendships and the 0007
migration. No Redis, worker or HTTP: the provider, the circuit and the publisher are
replaced, and callbacks are handled by calling the report handler."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from shared import consent, contacts, db, tasknames, uow
from shared.db import session_scope
from shared.models import App, Attempt, Callback, Consent, ConsentChange, Event, Message
from shared.providers.base import OutboundMessage, Recipient, SendContext, SendResult
from shared.schemas import SendRequest
from shared.settings import get_settings
from shared.uow import FollowUps, unit_of_work
from tests.unit.conftest import clear_caches, queued_message
from worker import breaker, engine, reports
from worker.outcomes import Batch, Item

PHONE = "+32470123456"
DIGITS = PHONE[1:]


class FakeGateway:
    """Keys recipients like the gateway (phone digits, no account scope); records calls."""

    uses_conversations = False
    channels = ("viber", "sms")

    def __init__(self) -> None:
        self.sent: list[OutboundMessage] = []

    def recipient(self, request: SendRequest, channel: str) -> Recipient:
        return Recipient(address=str(request.to.phone).lstrip("+"), scope="")

    def outbound(self, request: SendRequest, context: SendContext) -> OutboundMessage:
        return OutboundMessage(attempt_id=context.attempt_id, channel=context.channel,
                               phones=(str(request.to.phone).lstrip("+"),), text=request.text)

    def summarize(self, outbound: OutboundMessage) -> dict[str, Any]:
        return {"text": outbound.text}

    def send(self, outbound: OutboundMessage) -> SendResult:
        self.sent.append(outbound)
        return SendResult(provider_message_ids={p: f"p-{p}" for p in outbound.phones})


@pytest.fixture()
def recorded(temp_db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FollowUps]]:
    monkeypatch.setattr(engine, "_wait_for_slot", lambda batch: None)
    monkeypatch.setattr(breaker, "admit", lambda provider: None)
    monkeypatch.setattr(breaker, "record", lambda provider, ok: None)
    seen: list[FollowUps] = []
    previous = uow.set_publisher(seen.append)
    yield seen
    uow.set_publisher(previous)


def _opt_out(channel: str, address: str = DIGITS, categories: tuple[str, ...] = (),
             source: str = consent.API, app_id: str | None = "default") -> None:
    with session_scope() as session:
        consent.change(session, channel, "", address, consent.Change(
            consent.OPTED_OUT, categories, source=source, app_id=app_id))


def _send(attempt_id: str, gateway: FakeGateway) -> None:
    batch = engine._load(attempt_id)
    assert batch is not None
    engine.send_batch(batch, gateway)


def _attempts(message_id: str) -> list[tuple[str, str]]:
    with session_scope() as session:
        return [(a.channel, a.status) for a in session.scalars(select(Attempt).where(
            Attempt.message_id == message_id).order_by(Attempt.hop))]


def _message_status(message_id: str) -> str:
    with session_scope() as session:
        return session.get_one(Message, message_id).status


def _next_sends(published: list[FollowUps]) -> list[str]:
    return [t.args[0] for f in published for t in f.tasks if t.name == tasknames.SEND_ATTEMPT]


# --- keywords ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "status", "every"), [
    ("STOP", "opted_out", False), ("  stop! ", "opted_out", False), ("Stop.", "opted_out", False),
    ("stop all", "opted_out", True), ("STOPALL", "opted_out", True),
    ("Unsubscribe", "opted_out", False), ("quit", "opted_out", False),
    ("end", "opted_out", False), ("cancel!!", "opted_out", False),
    ("start", "opted_in", False), (" UNSTOP ", "opted_in", False)])
def test_default_keywords_ignore_case_spaces_and_punctuation(text: str, status: str,
                                                             every: bool) -> None:
    keywords = consent.AppConsentSettings(consent.keyword_list(get_settings().opt_out_keywords),
                                          consent.keyword_list(get_settings().opt_in_keywords))
    found = consent.interpret(text, keywords)
    assert found is not None and (found.status, found.every_channel) == (status, every)


@pytest.mark.parametrize("text", ["stop please", "STOPPED", "", "1", "don't stop"])
def test_other_text_is_not_a_keyword(text: str) -> None:
    keywords = consent.AppConsentSettings(frozenset({"STOP"}), frozenset({"START"}))
    assert consent.interpret(text, keywords) is None


def test_keyword_lists_come_from_the_settings_and_per_app(temp_db: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_OPT_OUT_KEYWORDS", "HALT, Basta")
    monkeypatch.setenv("SWITCHBOARD_OPT_IN_KEYWORDS", "resume")
    get_settings.cache_clear()
    with session_scope() as session:
        session.add(App(id="shop", name="shop", api_key_hash="h", signing_secret="s",
                        consent_settings={"opt_out_keywords": ["ARRET"],
                                          "opt_out_confirmation": "Bye"}))
        session.flush()
        default = consent.app_settings(session, "default")
        shop = consent.app_settings(session, "shop")
    assert default.opt_out == {"HALT", "BASTA"} and default.opt_in == {"RESUME"}
    assert shop.opt_out == {"ARRET"} and shop.opt_in == {"RESUME"}  # its own, else global
    assert shop.opt_out_confirmation == "Bye" and consent.interpret("stop", shop) is None


# --- changes -------------------------------------------------------------------------------

def test_changes_merge_categories_and_each_one_is_audited_and_told(temp_db: Path) -> None:
    def change(status: str, *categories: str) -> tuple[str, list[str], bool]:
        with session_scope() as session:
            record, changed = consent.change(session, "sms", "", DIGITS, consent.Change(
                status, categories, source=consent.API, app_id="default"))
            return record.status, list(record.categories), changed

    assert change("opted_out", "marketing") == ("opted_out", ["marketing"], True)
    assert change("opted_out", "surveys") == ("opted_out", ["marketing", "surveys"], True)
    assert change("opted_out", "surveys") == ("opted_out", ["marketing", "surveys"], False)
    assert change("opted_in", "marketing") == ("opted_out", ["surveys"], True)
    assert change("opted_out") == ("opted_out", [], True)  # everything
    with pytest.raises(consent.ConsentError) as refused:
        change("opted_in", "surveys")  # cannot narrow an opt-out of everything
    assert refused.value.field == "categories"
    assert change("opted_in") == ("opted_in", [], True)
    with session_scope() as session:
        audit = session.scalars(select(ConsentChange).order_by(ConsentChange.id)).all()
        told = session.scalars(select(Event).where(Event.type == "consent")).all()
    assert [(a.status, a.categories) for a in audit] == [
        ("opted_out", ["marketing"]), ("opted_out", ["surveys"]), ("opted_in", ["marketing"]),
        ("opted_out", []), ("opted_in", [])]  # the no-op wrote nothing
    assert {a.source for a in audit} == {"api"} and len(told) == 5
    assert told[-1].payload["status"] == "opted_in" and told[-1].message_id is None


def test_addresses_are_normalised_per_channel() -> None:
    assert consent.address_for("sms", "+32 470 12 34 56") == DIGITS
    assert consent.address_for("viber", DIGITS) == DIGITS
    assert consent.address_for("rogerthat", "Ann@Example.com") == "ann@example.com"
    assert consent.address_for("inapp", "user-42") == "user-42"
    for channel, bad, field in (("sms", "not a phone", "address"), ("pigeon", "x", "channel"),
                                ("rogerthat", "ann", "address"), ("sms", "", "address")):
        with pytest.raises(consent.ConsentError) as refused:
            consent.address_for(channel, bad)
        assert refused.value.field == field


def test_refusals_ask_once_for_a_whole_batch_and_respect_categories(temp_db: Path) -> None:
    _opt_out("sms", "32470000001")
    _opt_out("sms", "32470000002", ("marketing",))
    recipients = {f"a{i}": ("", f"3247000{i:04d}") for i in range(500)}
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    with session_scope() as session:
        session.execute(select(1))  # connected before counting
        event.listen(Engine, "before_cursor_execute", count)
        try:
            plain = consent.refusals(session, "sms", recipients, None, {})
            marketing = consent.refusals(session, "sms", recipients, "marketing", {})
        finally:
            event.remove(Engine, "before_cursor_execute", count)
    assert set(plain) == {"a1"} and set(marketing) == {"a1", "a2"}
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 2
    assert plain["a1"].payload("default", None)["source"] == "api"


# --- the engine's consent step ---------------------------------------------------------------

def test_an_opted_out_hop_is_suppressed_before_any_call_and_the_route_moves_on(
        recorded: list[FollowUps]) -> None:
    _opt_out("viber")
    gateway = FakeGateway()
    message_id, attempt_id = queued_message(to={"phone": PHONE}, route=["viber", "sms"],
                                            text="Hi")
    _send(attempt_id, gateway)
    assert gateway.sent == []
    assert _attempts(message_id) == [("viber", "suppressed"), ("sms", "pending")]
    with session_scope() as session:
        attempt = session.get_one(Attempt, attempt_id)
        why = session.scalars(select(Event).where(Event.message_id == message_id,
                                                  Event.type == "suppressed")).one()
    assert (attempt.error_reason, attempt.deadline_at) == ("opted_out", None)
    assert why.payload["address"] == DIGITS and why.payload["source"] == "api"
    assert why.payload["opted_out_at"] and why.payload["channel"] == "viber"
    sms = _next_sends(recorded)
    assert len(sms) == 1
    _send(sms[0], gateway)  # the SMS is not opted out: it goes
    assert [o.channel for o in gateway.sent] == ["sms"]


def test_a_message_with_every_hop_suppressed_ends_suppressed(recorded: list[FollowUps]) -> None:
    _opt_out("viber")
    _opt_out("sms")
    gateway = FakeGateway()
    message_id, attempt_id = queued_message(to={"phone": PHONE}, route=["viber", "sms"],
                                            text="Hi")
    _send(attempt_id, gateway)
    _send(_next_sends(recorded)[0], gateway)
    assert gateway.sent == []
    assert _attempts(message_id) == [("viber", "suppressed"), ("sms", "suppressed")]
    assert _message_status(message_id) == "suppressed"
    with session_scope() as session:
        statuses = [e.payload for e in session.scalars(select(Event).where(
            Event.message_id == message_id, Event.type == "status"))]
    assert statuses[-1] == {"status": "suppressed", "reason": "opted_out"}


def test_a_category_opt_out_stops_only_that_category(recorded: list[FollowUps]) -> None:
    _opt_out("sms", categories=("marketing",))
    gateway = FakeGateway()
    sale, sale_attempt = queued_message(to={"phone": PHONE}, route=["sms"], text="Sale",
                                        category="marketing")
    receipt, receipt_attempt = queued_message(to={"phone": PHONE}, route=["sms"],
                                              text="Receipt", category="transactional")
    _send(sale_attempt, gateway)
    _send(receipt_attempt, gateway)
    assert [o.text for o in gateway.sent] == ["Receipt"]
    assert _message_status(sale) == "suppressed" and _message_status(receipt) == "submitted"


def test_a_critical_message_is_sent_anyway(recorded: list[FollowUps]) -> None:
    if "priority" not in SendRequest.model_fields:
        pytest.skip("the priority field (time-aware delivery issue) is not here yet")
    _opt_out("sms")
    gateway = FakeGateway()
    _, attempt_id = queued_message(to={"phone": PHONE}, route=["sms"], text="Your code: 1234",
                                   priority="critical")
    _send(attempt_id, gateway)
    assert [o.text for o in gateway.sent] == ["Your code: 1234"]


def test_a_campaign_batch_suppresses_set_based_and_sends_the_rest_in_one_request(
        recorded: list[FollowUps]) -> None:
    phones = [f"3247000{i:04d}" for i in range(1, 6)]
    _opt_out("sms", phones[1])
    _opt_out("sms", phones[3])
    items = []
    for phone in phones:
        message_id, attempt_id = queued_message(to={"phone": "+" + phone}, route=["sms"],
                                                text="Sale")
        items.append(Item(attempt_id, message_id, 0, phone))
    batch = Batch("sms", "messaggio", 0, "default", SendRequest.model_validate(
        {"to": {"phone": "+" + phones[0]}, "route": ["sms"], "text": "Sale"}), tuple(items))
    gateway = FakeGateway()
    selects: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM consents" in statement:
            selects.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        engine.send_batch(batch, gateway, bulk=True)
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert len(selects) == 1  # one registry query for the whole batch, none per phone
    assert len(gateway.sent) == 1
    assert sorted(gateway.sent[0].phones) == sorted([phones[0], phones[2], phones[4]])
    assert [_message_status(i.message_id) for i in items] == [
        "submitted", "suppressed", "submitted", "suppressed", "submitted"]


# --- replies, reports and friendships ---------------------------------------------------------

def _submitted_message(route: list[str], recorded: list[FollowUps],
                       app_id: str = "default") -> tuple[str, str, str]:
    """A message whose first hop went out: (message id, attempt id, provider message id)."""
    message_id, attempt_id = queued_message(to={"phone": PHONE}, route=route, text="Hi")
    if app_id != "default":
        with session_scope() as session:
            session.get_one(Message, message_id).app_id = app_id
    _send(attempt_id, FakeGateway())
    return message_id, attempt_id, f"p-{DIGITS}"


def _report(**params: str) -> None:
    with session_scope() as session:
        callback = Callback(provider="messaggio", method="POST", params=params,
                            dedupe_key=f"test:{len(params)}:{sorted(params.items())}")
        session.add(callback)
        session.flush()
        callback_id = callback.id
    reports.handle_callback(callback_id)


def _record(channel: str) -> Consent | None:
    with session_scope() as session:
        record = consent.find(session, channel, "", DIGITS)
        if record is not None:
            session.expunge(record)
        return record


def test_a_stop_reply_opts_out_of_the_replied_channel_only(recorded: list[FollowUps]) -> None:
    message_id, _, pmid = _submitted_message(["sms"], recorded)
    _report(msg_id=pmid, type="reply", text=" Stop! ")
    record = _record("sms")
    assert record is not None and record.status == "opted_out"
    assert (record.source, record.message_id) == ("keyword", message_id)
    assert _record("viber") is None
    with session_scope() as session:
        audit = session.scalars(select(ConsentChange)).one()
        told = session.scalars(select(Event).where(Event.type == "consent")).one()
    assert (audit.detail, audit.message_id) == (" Stop! ", message_id)
    assert told.payload["source"] == "keyword" and told.payload["channel"] == "sms"


def test_stopall_opts_out_of_every_channel_and_start_opts_back_in(
        recorded: list[FollowUps]) -> None:
    _, _, pmid = _submitted_message(["sms"], recorded)
    _report(msg_id=pmid, type="reply", text="stop all")
    assert {_record("sms").status, _record("viber").status} == {"opted_out"}
    _report(msg_id=pmid, type="reply", text="START")
    assert _record("sms").status == "opted_in" and _record("viber").status == "opted_out"


def test_the_apps_confirmation_goes_back_and_is_the_one_message_let_through(
        recorded: list[FollowUps]) -> None:
    with session_scope() as session:
        session.add(App(id="shop", name="shop", api_key_hash="h", signing_secret="s",
                        consent_settings={"opt_out_confirmation": "You will get no more SMS"}))
    _, _, pmid = _submitted_message(["sms"], recorded, app_id="shop")
    _report(msg_id=pmid, type="reply", text="STOP")
    dispatched = [t.args[0] for f in recorded for t in f.tasks if t.name == tasknames.DISPATCH]
    assert len(dispatched) == 1
    with session_scope() as session:
        confirmation = session.get_one(Message, dispatched[0])
        assert (confirmation.app_id, confirmation.route) == ("shop", ["sms"])
        assert confirmation.request["text"] == "You will get no more SMS"
    attempt_id = engine.dispatch(dispatched[0])
    gateway = FakeGateway()
    _send(attempt_id, gateway)
    assert [o.text for o in gateway.sent] == ["You will get no more SMS"]
    _, later = queued_message(to={"phone": PHONE}, route=["sms"], text="Sale")
    _send(later, gateway)
    assert len(gateway.sent) == 1  # everything after it is suppressed


def test_the_gateways_blocked_report_is_an_opt_out_of_viber(recorded: list[FollowUps]) -> None:
    _, _, pmid = _submitted_message(["viber", "sms"], recorded)
    _report(msg_id=pmid, type="delivery", status="undelivered",
            status_extended="VIBER_BLOCKED_BY_USER")
    record = _record("viber")
    assert record is not None and (record.status, record.source) == ("opted_out",
                                                                    "provider_report")
    assert _record("sms") is None  # the SMS fallback still goes


def test_friendships_feed_the_registry(temp_db: Path) -> None:
    with session_scope() as session:
        contacts.record(session, "rogerthat", "Ann@example.com", "rogerthat", "not_friend")
        assert not consent.may_message(session, "rogerthat", "rogerthat", "ann@example.com")
        contacts.record(session, "rogerthat", "ann@example.com", "rogerthat", "friend")
        assert consent.may_message(session, "rogerthat", "rogerthat", "ann@example.com")
        sources = session.scalars(select(ConsentChange.source)).all()
    assert sources == ["friendship", "friendship"]


def test_an_in_app_keyword_opts_the_consumer_out_under_its_advertiser(temp_db: Path) -> None:
    from shared.handlers import Occurrence
    from shared.providers.base import ProviderEvent

    with unit_of_work() as work:
        consumed = consent.on_conversation_text(work, Occurrence(
            "conversation_text", provider="contactatonce",
            event=ProviderEvent(kind="inbound", dedupe_key="x", text="unsubscribe"),
            data={"consumer_id": "user-42", "advertiser_id": "adv-1", "app_id": "default"}))
        assert consumed
        record = consent.find(work.session, "inapp", "adv-1", "user-42")
        assert record is not None and record.status == "opted_out"


# --- suppression lists ---------------------------------------------------------------------

def test_a_csv_list_is_checked_row_by_row_naming_the_cell() -> None:
    rows = consent.parse_csv("channel,address,categories\nsms,+32470123456,\n"
                             "viber,32470123457,marketing;surveys\n")
    assert [(r.channel, r.address, r.status, r.categories) for r in rows] == [
        ("sms", DIGITS, "opted_out", ()), ("viber", "32470123457", "opted_out",
                                           ("marketing", "surveys"))]
    for text, field in (("phone\n1\n", "header"), ("channel,address\nsms,nope\n",
                                                    "rows.0.address"),
                        ("channel,address,status\nsms,+32470123456,maybe\n", "rows.0.status"),
                        ("channel,address\n", "rows"), ("channel,address,x\nsms,1,2\n",
                                                        "header")):
        with pytest.raises(consent.ConsentError) as refused:
            consent.parse_csv(text)
        assert refused.value.field == field


def test_export_reads_back_as_the_same_list(temp_db: Path) -> None:
    _opt_out("sms", categories=("marketing",))
    with session_scope() as session:
        text = consent.export_csv(session.scalars(select(Consent)))
    assert [(r.channel, r.address, r.categories) for r in consent.parse_csv(text)] == [
        ("sms", DIGITS, ("marketing",))]


# --- the migration ---------------------------------------------------------------------------

def test_migration_0007_moves_the_friendships_over(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.migrations import upgrade

    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SWITCHBOARD_DATABASE_URL", raising=False)
    clear_caches()
    upgrade(revision="0006")
    with db.get_engine().begin() as conn:
        for address, status in (("a@x.example", "friend"), ("b@x.example", "not_friend"),
                                ("c@x.example", "invited"), ("d@x.example", "declined")):
            conn.execute(sa.text(
                "INSERT INTO contacts (channel, address, app_id, status, details, updated_at) "
                "VALUES ('rogerthat', :a, 'rogerthat', :s, '{}', '2026-01-01 00:00:00')"),
                {"a": address, "s": status})
    upgrade()
    with session_scope() as session:
        moved = {(c.address, c.status, c.scope, c.source) for c in session.scalars(
            select(Consent))}
        audited = session.scalars(select(ConsentChange.source)).all()
    assert moved == {("a@x.example", "opted_in", "rogerthat", "friendship"),
                     ("b@x.example", "opted_out", "rogerthat", "friendship"),
                     ("d@x.example", "opted_out", "rogerthat", "friendship")}
    assert audited == ["friendship"] * 3
    clear_caches()
