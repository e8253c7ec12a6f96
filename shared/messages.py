"""Creating messages and reading them back: used by the HTTP API, the CLI and the workers.

Message ids for idempotent requests are derived from the key (UUIDv5), so a producer with only
the broker URL gets the same id back for a retried ``send`` and the insert dedupes on it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import sendtime
from shared.apps import default_quiet_hours, delivery_target
from shared.lifecycle import MessageStatus
from shared.models import DEFAULT_APP, Attempt, Delivery, Event, Message, utcnow
from shared.schemas import SendRequest
from shared.schemas import Timing as Timing_

_IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c3a52-6c0e-4b0e-9a57-5b1f0b2a9c11")
log = logging.getLogger(__name__)


class IdempotencyConflict(Exception):
    """An idempotency key reused with another request body: the first request stands, the
    second must not be mistaken for a replay of it (the API answers 409)."""

    def __init__(self, key: str | None) -> None:
        super().__init__(f"idempotency_key {key!r} was already used with a different "
                         "request body")
        self.key = key

    def body(self) -> dict[str, Any]:
        """The JSON error, shaped like a validation error and naming the field."""
        message = "already used with a different request body; use a new key for a new request"
        return {"error": "idempotency_conflict", "message": f"idempotency_key: {message}",
                "errors": [{"field": "idempotency_key", "message": message}]}


def request_hash(data: dict[str, Any]) -> str:
    """SHA-256 of a validated request's canonical JSON (``model_dump(mode="json")``, sorted
    keys, no whitespace), so key order, spacing and equivalent spellings that validate to
    the same request (a phone with spaces) do not count as a different body. ASCII escapes,
    so a lone surrogate (valid in a JSON string, not in UTF-8) hashes instead of raising."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_replay(stored_hash: str | None, new_hash: str, key: str | None) -> None:
    """The one idempotency rule, for messages and campaigns on every path: a reused key is a
    replay only with the same body. Rows stored before the hash existed (NULL) match any
    body, as nothing better is known about them. Raises ``IdempotencyConflict``."""
    if stored_hash is not None and not hmac.compare_digest(stored_hash, new_hash):
        raise IdempotencyConflict(key)


def new_message_id(idempotency_key: str | None, app_id: str = DEFAULT_APP) -> str:
    """Keys are per app: two apps using the same key get two messages."""
    if idempotency_key:
        return str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{app_id}:{idempotency_key}"))
    return str(uuid.uuid4())


def create_message(session: Session, message_id: str, request: SendRequest,
                   app_id: str = DEFAULT_APP) -> tuple[Message, bool]:
    """Insert the message (status ``queued``) unless that id exists; returns (message, created).

    Commits, so the caller can enqueue the dispatch task only once the row is durable. An
    existing id whose key came with another body raises ``IdempotencyConflict``.
    """
    existing = session.get(Message, message_id)
    if existing is None:
        try:  # the flush inside can already hit a concurrent insert of the same id
            message = _insert_or_refuse(session, message_id, request, app_id)
            session.commit()
            return message, True
        except IntegrityError:
            session.rollback()
            existing = session.get(Message, message_id)
            if existing is None:  # the idempotency key was used with another id: impossible
                raise  # by construction, so surface it rather than guess
    check_replay(existing.request_hash, request_hash(request.model_dump(mode="json")),
                 request.idempotency_key)
    return existing, False


def _insert_or_refuse(session: Session, message_id: str, request: SendRequest,
                      app_id: str) -> Message:
    """``insert_message``, or for a template that cannot be rendered ``insert_refused``."""
    from shared.templates import TemplateError

    try:
        return insert_message(session, message_id, request, app_id)
    except TemplateError as exc:
        return insert_refused(session, message_id, request, app_id, exc.errors)


def record_conflict(session: Session, message: Message, request: SendRequest) -> None:
    """A broker-path conflict (``shared.client.send``) has nobody to answer 409 to: the first
    message stands, and the refused body is noted at WARNING and on its timeline (its hash
    only, not its content). The caller commits."""
    log.warning("idempotency_key %r of app %s reused with a different body: message %s "
                "keeps the first request, the new one is dropped", request.idempotency_key,
                message.app_id, message.id)
    add_event(session, message.id, "idempotency_conflict",
              idempotency_key=request.idempotency_key,
              request_hash=request_hash(request.model_dump(mode="json")))


def insert_message(session: Session, message_id: str, request: SendRequest,
                   app_id: str = DEFAULT_APP) -> Message:
    """Add a ``queued`` message and its first event to the session without committing, for
    callers that create messages inside a larger transaction (a flow step).

    A templated request is rendered here, once (``shared.templates``): the row keeps the
    rendered request and the template version; the hash is of the body the producer sent,
    so a replay matches it. A template that cannot be rendered raises ``TemplateError``
    before anything is added."""
    body_hash = request_hash(request.model_dump(mode="json"))
    request, use = _render_template(session, request, app_id)
    timing = resolve_timing(request, utcnow(), request.to.phone, request.to.timezone,
                            app_quiet_hours(session, request, app_id))
    message = Message(
        id=message_id,
        app_id=app_id,
        status=MessageStatus.SCHEDULED if timing.send_at else MessageStatus.QUEUED,
        send_at=timing.send_at,
        valid_until=timing.valid_until,
        priority=request.priority,
        quiet_hours=timing.quiet_hours,
        recipient=request.recipient(),
        route=list(request.route),
        hop=0,
        request=request.model_dump(mode="json"),
        idempotency_key=request.idempotency_key,
        request_hash=body_hash,
        callback_url=str(request.callback_url) if request.callback_url else None,
    )
    if use is not None:
        message.template_name, message.template_version = use.name, use.version
        message.template_locale = use.locale
    session.add(message)
    session.flush()  # the event's foreign key needs the message row first
    _first_events(session, message, timing, use)
    from shared.contacts import note_recipients  # (that module imports this one)

    note_recipients(session, request, app_id)  # the app lists whom it messaged (issue 14)
    return message


def _first_events(session: Session, message: Message, timing: Timing, use: Any) -> None:
    """``queued`` (or ``scheduled`` with its time), what the timeline must say about the
    quiet hours' zone, and the template the content was rendered from."""
    if timing.send_at:
        add_event(session, message.id, "scheduled", route=list(message.route),
                  send_at=_iso(timing.send_at))
    else:
        add_event(session, message.id, "queued", route=list(message.route))
    if timing.note:
        add_event(session, message.id, "quiet_hours", **timing.note)
    if use is not None:
        add_event(session, message.id, "templated", **use.as_dict())


def _render_template(session: Session, request: SendRequest,
                     app_id: str) -> tuple[SendRequest, Any]:
    """(the request with its template rendered in, the ``TemplateUse``), or the request as
    it is when it names no template."""
    if request.template is None:
        return request, None
    from shared.templates import render_request  # (that module imports schemas only)

    return render_request(session, app_id, request)


def insert_refused(session: Session, message_id: str, request: SendRequest, app_id: str,
                   errors: list[dict[str, Any]]) -> Message:
    """A broker-path message whose template could not be rendered (``shared.client.send``
    has nobody to answer 422 to): stored ``failed`` with reason ``template_error`` and the
    errors on its timeline, so nothing half-rendered leaves and the producer is told."""
    message = Message(id=message_id, app_id=app_id, status=MessageStatus.FAILED,
                      reason="template_error", recipient=request.recipient(),
                      route=list(request.route), hop=0, request=request.model_dump(mode="json"),
                      idempotency_key=request.idempotency_key,
                      request_hash=request_hash(request.model_dump(mode="json")),
                      callback_url=str(request.callback_url) if request.callback_url else None)
    session.add(message)
    session.flush()
    add_event(session, message_id, "queued", route=list(request.route))
    add_event(session, message_id, "status", status=MessageStatus.FAILED,
              reason="template_error", errors=errors)
    return message


@dataclass(frozen=True)
class Timing:
    """When a message may go, as its row keeps it (naive UTC, the zone resolved)."""

    send_at: datetime | None
    valid_until: datetime | None
    quiet_hours: dict[str, Any] | None
    note: dict[str, Any] | None  # what the timeline says about the quiet-hours zone


def app_quiet_hours(session: Session, request: Timing_, app_id: str) -> dict[str, Any] | None:
    """The app's default quiet hours, read only where they would apply."""
    if request.quiet_hours is not None or request.priority == sendtime.CRITICAL:
        return None
    return default_quiet_hours(session, app_id)


def resolve_timing(request: Timing_, now: datetime, phone: str | None,
                   to_timezone: str | None, app_default: dict[str, Any] | None) -> Timing:
    """``shared.sendtime``'s rules applied once, at accept: ``send_at`` (None when it has
    passed), ``valid_until`` (a ttl counts from when the message may first go), and quiet
    hours — the message's own, else the app's default; none for ``critical`` messages."""
    send_at = sendtime.schedule_time(request.send_at, now)
    valid_until = sendtime.validity_end(request.valid_until, request.ttl_seconds,
                                        send_at or now)
    if request.priority == sendtime.CRITICAL:
        return Timing(send_at, valid_until, None, None)
    asked = request.quiet_hours.model_dump() if request.quiet_hours else app_default
    quiet = sendtime.resolve_quiet_hours(asked, phone, to_timezone)
    return Timing(send_at, valid_until, quiet if quiet and quiet["timezone"] else None,
                  _zone_note(quiet))


def _zone_note(quiet: dict[str, Any] | None) -> dict[str, Any] | None:
    """The timeline says when quiet hours rest on a guess (the first of a number's zones)
    or cannot be kept (no zone known for ``auto``)."""
    if not quiet or quiet["zone_source"] not in ("phone_first_of_many", "unknown"):
        return None
    if quiet["zone_source"] == "unknown":
        return {"applied": False, "reason": "no time zone known for the recipient: give "
                "to.timezone or a zone in quiet_hours.timezone"}
    return {"applied": True, "timezone": quiet["timezone"], "zones": quiet.get("zones"),
            "reason": "the phone number spans several time zones; the first is used"}


# Events a producer is told about (webhook and /v1/events); the rest is timeline detail.
PUBLIC_EVENTS = frozenset({"queued", "scheduled", "status", "fallback", "cancelled", "replied", "sealed",
                           "seal_failed",
                           "contact", "poke", "flow_result", "inbound_message",
                           "consent", "suppressed"})


def add_event(
    session: Session, message_id: str, type_: str, attempt_id: str | None = None,
    **payload: Any,
) -> Event:
    """Append to the message's timeline with the next sequence number; public events also get
    a delivery row for the producer's callback URL, sent by the notify sweep after commit."""
    seq, callback_url, app_id = session.execute(
        update(Message).where(Message.id == message_id)
        .values(event_seq=Message.event_seq + 1)
        .returning(Message.event_seq, Message.callback_url, Message.app_id)).one()
    event = Event(message_id=message_id, app_id=app_id, seq=seq, attempt_id=attempt_id,
                  type=type_, payload=payload, created_at=utcnow())
    session.add(event)
    if type_ not in PUBLIC_EVENTS:
        return event
    url = callback_url or delivery_target(session, app_id)[0]
    if url:
        session.flush()
        session.add(Delivery(event_id=event.id, message_id=message_id, url=url,
                             next_attempt_at=utcnow()))
    return event


def add_app_event(session: Session, type_: str, payload: dict[str, Any],
                  app_id: str = DEFAULT_APP) -> Event:
    """An event about no message (a friendship change, a poke) for ``app_id``'s feed and
    default callback URL; it has no per-message sequence number."""
    event = Event(message_id=None, app_id=app_id, seq=None, type=type_, payload=payload,
                  created_at=utcnow())
    session.add(event)
    url = delivery_target(session, app_id)[0]
    if url and type_ in PUBLIC_EVENTS:
        session.flush()
        session.add(Delivery(event_id=event.id, message_id=None, url=url,
                             next_attempt_at=utcnow()))
    return event


def redeliver(session: Session, app_id: str, since: datetime | None = None,
              message_id: str | None = None) -> int:
    """Queue public events of ``app_id`` for delivery again; returns how many."""
    query = (select(Event.id, Event.message_id, Message.callback_url)
             .join(Message, Message.id == Event.message_id)
             .where(Message.app_id == app_id, Event.type.in_(sorted(PUBLIC_EVENTS))))
    if since is not None:
        query = query.where(Event.created_at >= since)
    if message_id is not None:
        query = query.where(Event.message_id == message_id)
    default_url = delivery_target(session, app_id)[0]
    count = 0
    for event_id, event_message_id, callback_url in session.execute(query.order_by(Event.id)):
        if url := callback_url or default_url:
            session.add(Delivery(event_id=event_id, message_id=event_message_id, url=url,
                                 next_attempt_at=utcnow()))
            count += 1
    return count


def event_body(event: Event) -> dict[str, Any]:
    """An event as producers see it, in webhooks and in ``GET /v1/events``."""
    return {"id": event.id, "type": event.type, "message_id": event.message_id,
            "seq": event.seq, "created_at": _iso(event.created_at), "data": event.payload}


def _iso(value: Any) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def _conversation_of(session: Session, message: Message) -> dict[str, Any] | None:
    """An in-app message's conversation: what the producer named, plus our record once the
    worker has joined it (its id and the provider's VisitId)."""
    named = message.request.get("conversation")
    if not named:
        return None
    from shared.conversations import view
    from shared.models import Conversation, ConversationMessage

    row = session.scalars(select(Conversation).join(
        ConversationMessage, ConversationMessage.conversation_id == Conversation.id)
        .where(ConversationMessage.message_id == message.id).limit(1)).first()
    return {**{k: v for k, v in named.items() if v not in (None, {}, [])},
            **(view(row) if row is not None else {})}


def message_view(session: Session, message: Message) -> dict[str, Any]:
    """The whole story of one message: status, each attempt, and the event timeline."""
    return {
        "id": message.id,
        "status": message.status,
        "reason": message.reason,
        "to": {k: v for k, v in message.request.get("to", {}).items() if v is not None},
        "conversation": _conversation_of(session, message),
        "route": message.route,
        "current_channel": message.route[min(message.hop, len(message.route) - 1)],
        "idempotency_key": message.idempotency_key,
        "metadata": message.request.get("metadata", {}),
        "template": ({"name": message.template_name, "version": message.template_version,
                      "locale": message.template_locale} if message.template_name else None),
        "priority": message.priority,
        "send_at": _iso(message.send_at),
        "valid_until": _iso(message.valid_until),
        "quiet_hours": message.quiet_hours,
        "created_at": _iso(message.created_at),
        "updated_at": _iso(message.updated_at),
        "attempts": [_attempt_view(a) for a in message.attempts],
        "deliveries": _deliveries_of(session, message),
        "events": _timeline_of(session, message),
    }


def _attempt_view(a: Attempt) -> dict[str, Any]:
    """One channel try as producers see it: what we sent, what the provider answered and
    reported, and when; error and response only when there is one, so a clean try reads
    clean."""
    return {
        "id": a.id,
        "hop": a.hop,
        "channel": a.channel,
        "provider": a.provider,
        "status": a.status,
        "provider_message_id": a.provider_message_id,
        "error": ({"code": a.error_code, "reason": a.error_reason, "detail": a.error_detail}
                  if a.error_reason else None),
        "request": a.request_summary,
        "response": ({"code": a.response_code, "text": a.response_text}
                     if a.response_code or a.response_text else None),
        "retries": a.retries,
        "deadline_at": _iso(a.deadline_at),
        "submitted_at": _iso(a.submitted_at),
        "delivered_at": _iso(a.delivered_at),
        "seen_at": _iso(a.seen_at),
    }


def _deliveries_of(session: Session, message: Message) -> list[dict[str, Any]]:
    """The message's webhook deliveries to the producer, oldest first: whether each event
    reached the callback URL, and if not, why and when it is tried again."""
    return [
        {"event_id": d.event_id, "url": d.url, "status": d.status, "attempts": d.attempts,
         "last_status_code": d.last_status_code, "last_error": d.last_error,
         "next_attempt_at": _iso(d.next_attempt_at), "delivered_at": _iso(d.delivered_at)}
        for d in session.scalars(select(Delivery).where(
            Delivery.message_id == message.id).order_by(Delivery.id))
    ]


def _timeline_of(session: Session, message: Message) -> list[dict[str, Any]]:
    """Every event of the message in sequence order, public or not: the whole story, where
    the feed and webhooks carry only the public ones."""
    events = session.scalars(
        select(Event).where(Event.message_id == message.id).order_by(Event.seq)).all()
    return [{"seq": e.seq, "at": _iso(e.created_at), "type": e.type,
             "attempt_id": e.attempt_id, "detail": e.payload} for e in events]
