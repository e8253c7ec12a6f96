"""The consent registry: who may be messaged on which channel, for every channel and app.

One record per (channel, provider account, address): ``opted_in``, or ``opted_out`` of
everything (no categories) or of some categories only. It is the provider account's, not an
app's: a person who replied STOP to one app's SMS gets no SMS from any app on that account.
Every change is a ``ConsentChange`` audit row and a ``consent`` event to the app concerned.

Changes come from a reply whose whole text is a keyword (``on_reply``,
``on_conversation_text``), a provider report that means the person blocked us
(``on_opt_out_report``), a messenger friendship (``friendship``), the API and the CLI
(``change``), and imports. The engine asks ``refusals`` for a whole batch before it claims
anything: one query, whatever the batch's size.

A message with ``priority: critical`` is sent anyway: the documented exception.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import phonenumbers
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import handlers, tasknames
from shared.messages import add_app_event, insert_message
from shared.models import DEFAULT_APP, App, Attempt, Consent, ConsentChange, Message, utcnow
from shared.schemas import CHANNELS, CONVERSATION_CHANNELS, EMAIL_CHANNELS, PHONE_CHANNELS
from shared.settings import get_settings

log = logging.getLogger(__name__)

OPTED_OUT, OPTED_IN = "opted_out", "opted_in"
STATUSES = (OPTED_OUT, OPTED_IN)
# Where a change came from (``ConsentChange.source``).
KEYWORD, PROVIDER_REPORT, API, IMPORT, FRIENDSHIP, CLI = (
    "keyword", "provider_report", "api", "import", "friendship", "cli")
ALL_CHANNEL_KEYWORDS = frozenset({"STOPALL", "STOP ALL"})  # opt out of every channel
MAX_CATEGORIES = 50


class ConsentError(ValueError):
    """A change the registry refuses; ``field`` names what (the API answers 409/422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --- keywords --------------------------------------------------------------------------

def normalize(text: str) -> str:
    """A reply as keywords are compared: punctuation dropped, spaces collapsed, upper case
    ("  Stop! " and "stop." are STOP; "Stop all" is STOP ALL)."""
    return " ".join(re.sub(r"[\W_]+", " ", text).split()).upper()


def keyword_list(value: str | Iterable[str]) -> frozenset[str]:
    """A comma-separated setting (or a list) as normalised keywords."""
    items = value.split(",") if isinstance(value, str) else value
    return frozenset(k for k in (normalize(item) for item in items) if k)


@dataclass(frozen=True)
class AppConsentSettings:
    """An app's keywords (the global ones unless it set its own) and confirmation texts."""

    opt_out: frozenset[str]
    opt_in: frozenset[str]
    opt_out_confirmation: str | None = None
    opt_in_confirmation: str | None = None


SETTING_KEYS = ("opt_out_keywords", "opt_in_keywords", "opt_out_confirmation",
                "opt_in_confirmation")


def app_settings(session: Session, app_id: str) -> AppConsentSettings:
    settings = get_settings()
    own = session.scalars(select(App.consent_settings).where(App.id == app_id)).first() or {}
    return AppConsentSettings(
        opt_out=keyword_list(own.get("opt_out_keywords") or settings.opt_out_keywords),
        opt_in=keyword_list(own.get("opt_in_keywords") or settings.opt_in_keywords),
        opt_out_confirmation=own.get("opt_out_confirmation") or None,
        opt_in_confirmation=own.get("opt_in_confirmation") or None)


@dataclass(frozen=True)
class Keyword:
    status: str  # opted_out | opted_in
    every_channel: bool
    word: str


def interpret(text: str | None, keywords: AppConsentSettings) -> Keyword | None:
    """The keyword a reply's whole text is, or None (any other text is not a command)."""
    word = normalize(text or "")
    if word in keywords.opt_out:
        return Keyword(OPTED_OUT, word in ALL_CHANNEL_KEYWORDS, word)
    if word in keywords.opt_in:
        return Keyword(OPTED_IN, False, word)
    return None


# --- addresses ---------------------------------------------------------------------------

def address_for(channel: str, raw: str) -> str:
    """An address as the registry keys it: a phone's digits without "+", a lower-case
    e-mail, an in-app consumer id as given. Raises ``ConsentError`` naming ``address``."""
    if channel not in CHANNELS:
        raise ConsentError("channel", f"one of {', '.join(CHANNELS)}")
    value = raw.strip()
    if not value or len(value) > 320 or "\x00" in value:
        raise ConsentError("address", "1 to 320 characters, no NUL")
    if channel in PHONE_CHANNELS:
        return _phone_digits(value)
    if channel in EMAIL_CHANNELS:
        if "@" not in value:
            raise ConsentError("address", "an e-mail address")
        return value.lower()
    return value


def _phone_digits(value: str) -> str:
    try:
        number = phonenumbers.parse(value if value.startswith("+") else "+" + value, None)
    except phonenumbers.NumberParseException:
        raise ConsentError("address", "an international phone number") from None
    if not phonenumbers.is_possible_number(number):
        raise ConsentError("address", "an international phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def default_scope(channel: str) -> str:
    """The provider account a bare address means: the messenger's default app, the in-app
    default advertiser, the gateway's one account ("")."""
    if channel in EMAIL_CHANNELS:
        from shared.providers.rogerthat import DEFAULT_APP_ID  # what a request defaults to

        return DEFAULT_APP_ID
    if channel in CONVERSATION_CHANNELS:
        return get_settings().contactatonce_advertiser_id
    return ""


# --- reading -----------------------------------------------------------------------------

def find(session: Session, channel: str, scope: str, address: str) -> Consent | None:
    return session.scalars(select(Consent).where(
        Consent.channel == channel, Consent.scope == scope, Consent.address == address)
    ).first()


def blocks(record: Consent, category: str | None) -> bool:
    """Whether ``record`` stops a message of ``category`` (None: uncategorised, which only an
    opt-out of everything stops)."""
    if record.status != OPTED_OUT:
        return False
    return not record.categories or (category is not None and category in record.categories)


def is_critical(request: Any) -> bool:
    """``priority: critical`` (the time-aware delivery issue's field) is sent anyway."""
    return getattr(request, "priority", None) == "critical"


@dataclass(frozen=True)
class Refusal:
    """Why a hop is not sent: the record that stops it, as the timeline tells it."""

    channel: str
    address: str
    status: str
    categories: tuple[str, ...]
    source: str
    since: datetime
    app_id: str | None
    message_id: str | None

    def payload(self, app_id: str, category: str | None) -> dict[str, Any]:
        """The reason for ``app_id``'s timeline: the carrying message only when it is that
        app's own (another app's message ids are not its to see)."""
        own = self.app_id == app_id
        return {"reason": "opted_out", "channel": self.channel, "address": self.address,
                "opted_out_at": self.since.isoformat() + "Z", "source": self.source,
                "categories": list(self.categories), "category": category,
                "via_message_id": self.message_id if own else None,
                "by_this_app": own}


def refusals(session: Session, channel: str, recipients: Mapping[str, tuple[str, str]],
             category: str | None, message_ids: Mapping[str, str]) -> dict[str, Refusal]:
    """For a batch of one channel: ``{key: (scope, address)}`` -> the keys not to send,
    with why. One query per distinct scope (a campaign's phones share one), never one per
    address. The confirmation a keyword asked for (its message id, from ``message_ids``,
    is on the record) is sent anyway."""
    by_scope: dict[str, set[str]] = {}
    for scope, address in recipients.values():
        by_scope.setdefault(scope, set()).add(address)
    stopped: dict[tuple[str, str], Consent] = {}
    for scope, addresses in by_scope.items():
        for record in session.scalars(select(Consent).where(
                Consent.channel == channel, Consent.scope == scope,
                Consent.address.in_(sorted(addresses)), Consent.status == OPTED_OUT)):
            if blocks(record, category):
                stopped[(scope, record.address)] = record
    found = {}
    for key, pair in recipients.items():
        record = stopped.get(pair)
        confirming = record is not None and record.confirmation_message_id is not None and \
            record.confirmation_message_id == message_ids.get(key)
        if record is not None and not confirming:
            found[key] = Refusal(channel, record.address, record.status,
                                 tuple(record.categories or ()), record.source,
                                 record.updated_at, record.app_id, record.message_id)
    return found


# --- changing ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Change:
    """What to change, and where it came from (for the audit row and the event)."""

    status: str
    categories: tuple[str, ...] = ()
    source: str = API
    app_id: str | None = None
    message_id: str | None = None
    detail: str | None = None


def change(session: Session, channel: str, scope: str, address: str, what: Change,
           tell: bool = True) -> tuple[Consent, bool]:
    """Apply ``what`` to the record (created when new); returns (record, changed). Changes
    merge: opting out of categories adds them, opting in removes them, no categories means
    everything. Opting in to some categories while out of everything raises
    ``ConsentError``. A change that changes nothing writes nothing and tells nobody."""
    record, created = _find_or_create(session, channel, scope, address, what)
    status, categories = _merged(record, what)
    if not created and (status, categories) == (record.status, list(record.categories)):
        return record, False
    record.status, record.categories = status, categories
    record.source, record.app_id, record.message_id = what.source, what.app_id, what.message_id
    record.confirmation_message_id, record.updated_at = None, utcnow()
    session.flush()
    session.add(ConsentChange(
        consent_id=record.id, channel=channel, scope=scope, address=address,
        status=what.status, categories=list(what.categories), source=what.source,
        app_id=what.app_id, message_id=what.message_id, detail=what.detail,
        created_at=record.updated_at))
    if tell:
        add_app_event(session, "consent", event_payload(record, what), what.app_id or DEFAULT_APP)
    return record, True


def _find_or_create(session: Session, channel: str, scope: str, address: str,
                    what: Change) -> tuple[Consent, bool]:
    record = find(session, channel, scope, address)
    if record is not None:
        return record, False
    record = Consent(channel=channel, scope=scope, address=address, status=OPTED_IN,
                     categories=[], source=what.source, updated_at=utcnow())
    try:
        with session.begin_nested():  # a savepoint: a concurrent insert must not undo ours
            session.add(record)
    except IntegrityError:  # created concurrently: change that one
        record = find(session, channel, scope, address)
        assert record is not None
        return record, False
    return record, True


def _merged(record: Consent, what: Change) -> tuple[str, list[str]]:
    current = set(record.categories or ()) if record.status == OPTED_OUT else set()
    everything = record.status == OPTED_OUT and not record.categories
    asked = set(what.categories)
    if what.status == OPTED_OUT:
        if not asked or everything:
            return OPTED_OUT, []
        return OPTED_OUT, sorted(current | asked)
    if not asked:
        return OPTED_IN, []
    if everything:
        raise ConsentError("categories", "opted out of every category on this channel: opt "
                                         "in to everything (no categories) first")
    left = sorted(current - asked)
    return (OPTED_OUT, left) if left else (OPTED_IN, [])


def event_payload(record: Consent, what: Change) -> dict[str, Any]:
    return {"channel": record.channel, "account": record.scope, "address": record.address,
            "status": record.status, "categories": list(record.categories),
            "change": {"status": what.status, "categories": list(what.categories)},
            "source": what.source, "message_id": what.message_id}


def view(record: Consent | None, channel: str, scope: str, address: str) -> dict[str, Any]:
    """A record as the API shows it; an address never recorded is opted in."""
    if record is None:
        return {"channel": channel, "account": scope, "address": address,
                "status": OPTED_IN, "categories": [], "recorded": False}
    return {"channel": record.channel, "account": record.scope, "address": record.address,
            "status": record.status, "categories": list(record.categories or ()),
            "source": record.source, "updated_at": record.updated_at.isoformat() + "Z",
            "recorded": True}


def history(session: Session, record: Consent, app_id: str) -> list[dict[str, Any]]:
    """The record's audit rows ``app_id`` may read: its own changes (the default app, the
    operator's, reads them all); another app's show what changed, not its message."""
    rows = session.scalars(select(ConsentChange).where(
        ConsentChange.consent_id == record.id).order_by(ConsentChange.id)).all()
    return [change_view(row, app_id) for row in rows]


def change_view(row: ConsentChange, app_id: str) -> dict[str, Any]:
    own = app_id == DEFAULT_APP or row.app_id == app_id
    return {"at": row.created_at.isoformat() + "Z", "channel": row.channel,
            "account": row.scope, "address": row.address, "status": row.status,
            "categories": list(row.categories or ()), "source": row.source,
            "app_id": row.app_id if own else None, "message_id": row.message_id if own else None,
            "detail": row.detail if own else None}


# --- keywords in replies (shared.handlers) -------------------------------------------------

KEYWORD_ORDER = -10  # before flows: a STOP is a command, not a step's answer


@handlers.on("reply", order=KEYWORD_ORDER)
def on_reply(work: Any, occurrence: handlers.Occurrence) -> bool:
    """A reply (SMS, Viber, messenger) whose whole text is a keyword changes the consent of
    its sender on the replied channel (every channel for STOPALL); consumed when it was."""
    event, session = occurrence.event, work.session
    if event is None or not event.text or occurrence.message_id is None:
        return False
    message = session.get(Message, occurrence.message_id)
    attempt = session.get(Attempt, occurrence.attempt_id) if occurrence.attempt_id else None
    if message is None or attempt is None:
        return False
    own = app_settings(session, message.app_id)
    keyword = interpret(event.text, own)
    if keyword is None:
        return False
    recipients = _recipients_of(message, attempt.channel, keyword.every_channel)
    if not recipients:
        return False
    what = Change(keyword.status, source=KEYWORD, app_id=message.app_id,
                  message_id=message.id, detail=event.text[:100])
    for channel, (scope, address) in recipients.items():
        record, changed = change(session, channel, scope, address, what)
        if changed and channel == attempt.channel:
            _confirm(work, record, own, message.app_id,
                     {"to": message.request.get("to") or {}}, keyword.status)
    return True


def _recipients_of(message: Message, channel: str, every_channel: bool,
                   ) -> dict[str, tuple[str, str]]:
    """{channel: (scope, address)} of the replied hop, or of every channel the message's
    route and its provider serve (the gateway's Viber and SMS share one phone)."""
    from shared.providers import get_provider, provider_name
    from shared.schemas import SendRequest

    try:
        request = SendRequest.model_validate(message.request)
    except ValueError:  # a stored request that no longer validates names nobody we can key
        log.warning("message %s: its request does not validate; no consent change", message.id)
        return {}
    channels = [channel]
    if every_channel:
        provider_channels = get_provider(provider_name(channel)).channels
        channels += [c for c in (*message.route, *provider_channels) if c not in channels]
    found = {}
    for each in channels:
        try:
            recipient = get_provider(provider_name(each)).recipient(request, each)
        except ValueError:  # the message names no recipient on that channel
            recipient = None
        if recipient is not None:
            found[each] = (recipient.scope, recipient.address)
    return found


@handlers.on("conversation_text", order=KEYWORD_ORDER)
def on_conversation_text(work: Any, occurrence: handlers.Occurrence) -> bool:
    """An in-app message whose whole text is a keyword: the conversation's consumer under
    its advertiser (in-app has one channel, so STOPALL is the same as STOP)."""
    from shared.providers import get_provider

    event, ref = occurrence.event, dict(occurrence.data)
    if event is None or not event.text or not ref.get("consumer_id") or not occurrence.provider:
        return False
    app_id = ref.get("app_id") or DEFAULT_APP
    own = app_settings(work.session, app_id)
    keyword = interpret(event.text, own)
    if keyword is None:
        return False
    channel = get_provider(occurrence.provider).channels[0]  # its conversations' channel
    scope = ref.get("advertiser_id") or default_scope(channel)
    record, changed = change(work.session, channel, scope, str(ref["consumer_id"]), Change(
        keyword.status, source=KEYWORD, app_id=app_id, detail=event.text[:100]))
    if changed:
        conversation = {k: ref[k] for k in ("consumer_id", "advertiser_id", "session_id")
                        if ref.get(k)}
        _confirm(work, record, own, app_id, {"conversation": conversation}, keyword.status)
    return True


@handlers.on("opt_out")
def on_opt_out_report(work: Any, occurrence: handlers.Occurrence) -> bool:
    """A provider report that the person blocked us on this channel (the gateway's
    ``VIBER_BLOCKED_BY_USER``): an opt-out of that channel."""
    session = work.session
    attempt = session.get(Attempt, occurrence.attempt_id) if occurrence.attempt_id else None
    if attempt is None:
        return False
    message = attempt.message
    recipients = _recipients_of(message, attempt.channel, every_channel=False)
    if attempt.channel not in recipients:
        return False
    scope, address = recipients[attempt.channel]
    reason = occurrence.event.reason if occurrence.event is not None else None
    change(session, attempt.channel, scope, address, Change(
        OPTED_OUT, source=PROVIDER_REPORT, app_id=message.app_id, message_id=message.id,
        detail=reason))
    return True


def _confirm(work: Any, record: Consent, own: AppConsentSettings, app_id: str,
             addressing: dict[str, Any], status: str) -> None:
    """The app's confirmation text, sent back on the same channel. It is the one message the
    new opt-out lets through: its id is on the record (``refusals`` exempts it)."""
    from shared.schemas import SendRequest

    text = own.opt_out_confirmation if status == OPTED_OUT else own.opt_in_confirmation
    if not text:
        return
    try:
        request = SendRequest.model_validate({**addressing, "route": [record.channel],
                                              "text": text, "category": "consent"})
    except ValueError as exc:  # e.g. the stored recipient no longer validates
        log.warning("no consent confirmation for %s: %s", record.channel, exc)
        return
    message_id = str(uuid.uuid4())
    insert_message(work.session, message_id, request, app_id)
    record.confirmation_message_id = message_id
    work.task(tasknames.DISPATCH, message_id)


# --- the messenger's friendships ------------------------------------------------------------

_FRIENDSHIP = {"friend": OPTED_IN, "declined": OPTED_OUT, "not_friend": OPTED_OUT}


def friendship(session: Session, channel: str, address: str, scope: str, stage: str,
               apps: Iterable[str]) -> None:
    """A friendship stage with a consent meaning (friend: in; declined, broke up: out) is a
    registry change, audited under the first app that reached the contact. Its apps hear of
    it as the ``contact`` event they already get (``shared.contacts``), not a second one."""
    status = _FRIENDSHIP.get(stage)
    if status is None:
        return
    told = list(apps) or [DEFAULT_APP]
    change(session, channel, scope, address.lower(), Change(
        status, source=FRIENDSHIP, app_id=told[0], detail=f"friendship {stage}"), tell=False)


def may_message(session: Session, channel: str, scope: str, address: str) -> bool:
    """Whether an uncategorised message may go (no record: yes, the provider decides)."""
    record = find(session, channel, scope, address)
    return record is None or not blocks(record, None)


def opted_out_anywhere(session: Session, channel: str, address: str) -> bool:
    """Opted out of everything on ``channel`` under any account (the friend policy asks)."""
    return any(not record.categories for record in session.scalars(select(Consent).where(
        Consent.channel == channel, Consent.address == address.lower(),
        Consent.status == OPTED_OUT)))


# --- suppression lists (CSV) ----------------------------------------------------------------

CSV_COLUMNS = ("channel", "address", "status", "categories", "account")
MAX_IMPORT_ROWS = 10_000


@dataclass(frozen=True)
class ImportRow:
    channel: str
    scope: str
    address: str
    status: str
    categories: tuple[str, ...]


def parse_csv(text: str) -> list[ImportRow]:
    """A suppression list: a header naming ``channel`` and ``address`` (and optionally
    ``status``, default opted_out; ``categories``, separated by ``;``; ``account``). Every
    row is checked before any is applied; raises ``ConsentError`` naming ``rows.<n>.<col>``
    (n counts data rows from 0)."""
    import csv
    import io

    if "\x00" in text:
        raise ConsentError("body", "must not contain NUL characters")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [name.strip().lower() for name in reader.fieldnames or []]
    except csv.Error as exc:
        raise ConsentError("body", f"not CSV: {exc}") from None
    missing = [c for c in ("channel", "address") if c not in header]
    if missing:
        raise ConsentError("header", f"needs the columns channel and address (missing "
                                     f"{', '.join(missing)})")
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if unknown:
        raise ConsentError("header", f"unknown column {unknown[0]!r}")
    reader.fieldnames = header
    rows = []
    try:
        for index, raw in enumerate(reader):
            if index >= MAX_IMPORT_ROWS:
                raise ConsentError("rows", f"at most {MAX_IMPORT_ROWS} rows")
            rows.append(_import_row(index, raw))
    except csv.Error as exc:
        raise ConsentError("body", f"not CSV: {exc}") from None
    if not rows:
        raise ConsentError("rows", "no rows")
    return rows


def _import_row(index: int, raw: Mapping[str, Any]) -> ImportRow:
    def cell(name: str) -> str:
        value = raw.get(name)
        return value.strip() if isinstance(value, str) else ""

    try:
        channel = cell("channel").lower()
        address = address_for(channel, cell("address"))
    except ConsentError as exc:
        raise ConsentError(f"rows.{index}.{exc.field}", exc.message) from None
    status = cell("status").lower() or OPTED_OUT
    if status not in STATUSES:
        raise ConsentError(f"rows.{index}.status", "opted_out or opted_in")
    categories = tuple(sorted({c.strip() for c in cell("categories").split(";") if c.strip()}))
    if any(len(c) > 64 for c in categories) or len(categories) > MAX_CATEGORIES:
        raise ConsentError(f"rows.{index}.categories", "at most 50 names of 1 to 64 characters")
    scope = cell("account") or default_scope(channel)
    if len(scope) > 100:
        raise ConsentError(f"rows.{index}.account", "at most 100 characters")
    return ImportRow(channel, scope, address, status, categories)


def apply_import(session: Session, rows: list[ImportRow], app_id: str, source: str = IMPORT,
                 ) -> dict[str, int]:
    """Apply checked rows (one audit row per change) and tell the app once: {rows, changed,
    skipped}. A row opting in to some categories of an address opted out of everything
    cannot narrow that opt-out: it is skipped and counted."""
    changed = skipped = 0
    for row in rows:
        try:
            _, did = change(session, row.channel, row.scope, row.address, Change(
                row.status, row.categories, source=source, app_id=app_id), tell=False)
        except ConsentError:
            skipped += 1
            continue
        changed += did
    counts = {"rows": len(rows), "changed": changed, "skipped": skipped}
    add_app_event(session, "consent", {"source": source, **counts}, app_id)
    return counts


def export_csv(records: Iterable[Consent]) -> str:
    """Records as a suppression list ``parse_csv`` reads back."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        writer.writerow([r.channel, r.address, r.status, ";".join(r.categories or ()), r.scope])
    return out.getvalue()


def visible(app_id: str) -> Any:
    """The records ``app_id`` lists: those it changed (its requests, imports, replies to and
    reports on its messages); the default app (the operator) lists every record."""
    if app_id == DEFAULT_APP:
        return Consent.id.is_not(None)
    return Consent.id.in_(select(ConsentChange.consent_id).where(ConsentChange.app_id == app_id))
