"""The dispatch pipeline: claim an attempt, call the provider, apply reports, fall back.

Every state change is a compare-and-set on the row (``UPDATE ... WHERE status = <expected>``),
which is portable across SQLite and PostgreSQL and makes every step safe to run twice. Follow-up
tasks are published only after the transaction that justifies them has committed.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import contacts, conversations, metrics, tasknames
from shared.db import session_scope
from shared.lifecycle import MESSAGE_FINAL, apply_attempt, apply_message, route_outcome
from shared.messages import add_app_event, add_event, create_message
from shared.models import DEFAULT_APP, Attempt, Callback, Message, utcnow
from shared.providers import get_provider, provider_name
from shared.providers.base import (
    MESSAGE_EVENT_KINDS,
    AmbiguousError,
    CallbackError,
    OutboundMessage,
    PermanentError,
    ProviderEvent,
    RetryableError,
    SendResult,
)
from shared.schemas import CONVERSATION_CHANNELS, EMAIL_CHANNELS, SendRequest
from shared.settings import get_settings
from shared.uow import FollowUps, Task, publish, unit_of_work
from worker import breaker
from worker.ratelimit import RateLimiter
from worker.redis_conn import get_redis


class RetryLater(Exception):
    """Ask the calling task to run again after ``countdown`` seconds (never a long ETA)."""

    def __init__(self, countdown: float, reason: str) -> None:
        super().__init__(f"{reason}; retry in {countdown:.1f}s")
        self.countdown = countdown
        self.reason = reason


# --- small database helpers --------------------------------------------------------------

def _cas(session: Session, model: type, row_id: str, expected: Collection[str], **values) -> bool:
    stmt = (update(model).where(model.id == row_id, model.status.in_(list(expected)))
            .values(updated_at=utcnow(), **values))
    return session.execute(stmt).rowcount == 1


def _move_message(session: Session, message_id: str, event: str, **values) -> str | None:
    """Apply a lifecycle event to the message with a CAS loop; returns the new status."""
    for _ in range(10):
        current = session.execute(
            select(Message.status).where(Message.id == message_id)).scalar_one()
        new = apply_message(current, event)
        if new == current:
            return None
        if _cas(session, Message, message_id, [current], status=new, **values):
            add_event(session, message_id, "status", status=new, reason=values.get("reason"))
            return new
    raise RuntimeError(f"message {message_id} kept changing under us")


def deadline_window(channel: str, request: SendRequest) -> float:
    """How long a hop may stay undelivered before the route moves on."""
    settings = get_settings()
    if settings.test_deadline_seconds is not None:
        return settings.test_deadline_seconds
    if channel == "sms" and channel not in request.deadlines:
        return float(settings.sms_report_window_seconds)
    return float(request.deadline_for(channel, settings.default_dlr_timeout))


def backoff(retries: int) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random, capped."""
    cap = get_settings().retry_backoff_max_seconds
    base = min(cap, 2 ** retries)
    return base / 2 + random.uniform(0, base / 2)


# --- accept and dispatch -----------------------------------------------------------------

def accept(message_id: str, request_data: dict, app_id: str = DEFAULT_APP) -> str | None:
    """Insert a message sent through the broker (``shared.client.send``), then dispatch it."""
    request = SendRequest.model_validate(request_data)
    with session_scope() as session:
        create_message(session, message_id, request, app_id)
    return dispatch(message_id)


def dispatch(message_id: str) -> str | None:
    """Ensure the attempt for the message's current hop exists; return it if still pending."""
    with session_scope() as session:
        message = session.get(Message, message_id)
        if message is None or message.status != "queued":
            return None
        existing = session.execute(select(Attempt.id, Attempt.status).where(
            Attempt.message_id == message_id, Attempt.hop == message.hop)).first()
        if existing is not None:
            return existing.id if existing.status == "pending" else None
        attempt_id = _new_attempt(session, message, message.hop)
        try:
            session.commit()
        except IntegrityError:  # a concurrent dispatch created it first
            session.rollback()
            return None
        return attempt_id


def _new_attempt(session: Session, message: Message, hop: int) -> str:
    channel = message.route[hop]
    attempt = Attempt(id=str(uuid.uuid4()), message_id=message.id, hop=hop, channel=channel,
                      provider=provider_name(channel), status="pending")
    session.add(attempt)
    return attempt.id


# --- sending one attempt -----------------------------------------------------------------

@dataclass(frozen=True)
class _Job:
    attempt_id: str
    message_id: str
    channel: str
    provider: str
    hop: int
    retries: int
    request: SendRequest
    app_id: str = DEFAULT_APP


def send_attempt(attempt_id: str) -> None:
    """Send one pending attempt once. Raises ``RetryLater`` to be called again later."""
    job = _load_job(attempt_id)
    if job is None:
        return
    with _conversation_turn(job):
        _send_job(job)


@contextmanager
def _conversation_turn(job: _Job) -> Iterator[None]:
    """In-app messages to one consumer go one at a time: the first one's Start call creates
    the provider conversation (VisitId) the next ones must join, and agents read them in order.
    """
    if job.channel not in CONVERSATION_CHANNELS or job.request.conversation is None:
        yield
        return
    ref = job.request.conversation
    key = hashlib.sha256(f"{job.app_id}|{ref.advertiser_id}|{ref.consumer_id}".encode())
    lock = get_redis().lock(f"switchboard:lock:conversation:{key.hexdigest()}",
                            timeout=3 * get_settings().contactatonce_timeout_seconds + 30,
                            blocking_timeout=10)
    if not lock.acquire():
        raise RetryLater(1 + random.uniform(0, 1), "conversation busy")
    try:
        yield
    finally:
        lock.release()


def _send_job(job: _Job) -> None:
    attempt_id = job.attempt_id
    provider = get_provider(job.provider)
    try:
        outbound = _outbound(job, provider)
        summary = provider.summarize(outbound)
    except (PermanentError, RetryableError) as exc:
        _fail_before_send(job, exc)
        return
    _wait_for_slot(job)
    _wait_for_circuit(job)
    window = deadline_window(job.channel, job.request)
    due = _claim(job, summary, window)
    if due is not None:
        _call_provider(job, provider, outbound, window, due)


def _claim(job: _Job, summary: dict, window: float) -> datetime | None:
    """``pending → sending``: this worker owns the attempt now; nothing has left yet.
    Returns the deadline, which ``_call_provider`` indexes (a failure there unclaims)."""
    due = utcnow() + timedelta(seconds=window)
    with session_scope() as session:
        if not _cas(session, Attempt, job.attempt_id, ["pending"], status="sending",
                    deadline_at=due, not_before=None, request_summary=summary):
            return None
    return due


def _call_provider(job: _Job, provider: object, outbound: OutboundMessage, window: float,
                   due: datetime) -> None:
    """Call the provider and record what the answer means.

    An error of ours before the request could leave (Redis, the breaker) returns the claimed
    attempt to ``pending`` with a retry; only a request that may have reached the provider
    waits for its report or deadline.
    """
    reached = False
    try:
        publish(FollowUps(index=[(job.attempt_id, due)]))
        with breaker.watched_call(job.provider, job.channel):  # timed, counted, breaker told
            reached = True
            result = provider.send(outbound)  # type: ignore[attr-defined]
    except RetryableError as exc:
        _on_retryable(job, exc)
    except PermanentError as exc:
        _on_permanent(job, exc)
    except AmbiguousError as exc:
        _on_submitted(job, None, window, ambiguous=exc)
    except Exception as exc:
        if reached:
            raise  # it may have left: report or deadline settles it
        _unclaim(job, exc)
    else:
        _on_submitted(job, result, window)


def _unclaim(job: _Job, exc: Exception) -> None:
    """``sending → pending`` for a request that never left, with a retry like any other.

    The deadline column is cleared; its index entry, if any, is dropped by the sweep when it
    finds no deadline (Redis may be what failed)."""
    countdown = backoff(job.retries)
    with unit_of_work() as work:
        if _cas(work.session, Attempt, job.attempt_id, ["sending"], status="pending",
                retries=job.retries + 1, deadline_at=None,
                not_before=utcnow() + timedelta(seconds=countdown),
                error_reason="not_sent", error_detail=f"{type(exc).__name__}: {exc}"):
            add_event(work.session, job.message_id, "retry_scheduled", job.attempt_id,
                      channel=job.channel, reason="not_sent", retry_in=round(countdown, 2),
                      retries=job.retries + 1)
    raise RetryLater(countdown, "not sent") from exc


def _load_job(attempt_id: str) -> _Job | None:
    with session_scope() as session:
        attempt = session.get(Attempt, attempt_id)
        if attempt is None or attempt.status != "pending":
            return None
        message = attempt.message
        if message.status in MESSAGE_FINAL:
            return None
        return _Job(attempt.id, message.id, attempt.channel, attempt.provider, attempt.hop,
                    attempt.retries, SendRequest.model_validate(message.request),
                    message.app_id)


class _RedisCache:
    """Remembers uploaded image ids for 30 days, so a campaign uploads each image once."""

    def get(self, key: str) -> str | None:
        value = get_redis().get(f"switchboard:image:{key}")
        return value.decode() if value else None

    def set(self, key: str, value: str) -> None:
        get_redis().set(f"switchboard:image:{key}", value, ex=30 * 86400)


def _ensure_image_id(provider: object, image_url: str) -> str:
    """Upload an image once per URL, even when a campaign's sends race for it."""
    key = hashlib.sha256(image_url.encode()).hexdigest()
    with get_redis().lock(f"switchboard:lock:image:{key}", timeout=120, blocking_timeout=60):
        return provider.ensure_image_id(image_url, _RedisCache())  # type: ignore[attr-defined]


def _outbound(job: _Job, provider: object) -> OutboundMessage:
    if job.channel in EMAIL_CHANNELS:
        return _messenger_outbound(job)
    if job.channel in CONVERSATION_CHANNELS:
        return _inapp_outbound(job)
    return _phone_outbound(job, provider)


def _messenger_outbound(job: _Job) -> OutboundMessage:
    """A messenger hop: refused before any provider call if the contact gave no consent."""
    from shared.providers import rogerthat

    req = job.request
    email, app_id = _messenger_identity(req)
    with session_scope() as session:
        if not contacts.may_message(session, job.channel, email, app_id):
            raise PermanentError("not_a_friend", f"{email} is not a friend of the service")
    return OutboundMessage(attempt_id=job.attempt_id, channel=job.channel, phones=(),
                           text=req.text_for(job.channel), email=email, app_id=app_id,
                           content=rogerthat.content_from_request(req))


def _inapp_outbound(job: _Job) -> OutboundMessage:
    """An in-app hop joins its conversation: Start when it has no VisitId yet, else
    SendMessage into it (the adapter picks by ``visit_id``)."""
    ref = job.request.conversation
    assert ref is not None  # the schema requires it for inapp hops
    with session_scope() as session:
        conversation = conversations.resolve(
            session, job.app_id, ref, get_settings().contactatonce_advertiser_id)
        content = {
            "conversation_id": conversation.id, "advertiser_id": conversation.advertiser_id,
            "consumer_id": conversation.consumer_id, "session_id": conversation.session_id,
            "visit_id": conversation.visit_id,
            "reply_to": conversations.latest_agent_message_id(session, conversation.id),
            "consumer": ref.consumer.model_dump(exclude_none=True) if ref.consumer else {},
            "listing_details": dict(ref.listing_details)}
    return OutboundMessage(attempt_id=job.attempt_id, channel=job.channel, phones=(),
                           text=job.request.text_for(job.channel), content=content)


def _messenger_identity(request: SendRequest) -> tuple[str, str]:
    from shared.providers.rogerthat import DEFAULT_APP_ID

    return str(request.to.email), request.to.app_id or DEFAULT_APP_ID


def _phone_outbound(job: _Job, provider: object) -> OutboundMessage:
    req = job.request
    assert req.to.phone is not None  # the schema requires it for phone channels
    image_id = req.image_id
    if job.channel != "sms" and req.image_url and not image_id:
        image_id = _ensure_image_id(provider, str(req.image_url))
    viber = job.channel != "sms"
    return OutboundMessage(
        attempt_id=job.attempt_id,
        channel=job.channel,
        phones=(req.to.phone.lstrip("+"),),
        text=req.text_for(job.channel),
        sms_text=req.sms_text if viber else None,
        image_id=image_id if viber else None,
        button_text=req.button.text if viber and req.button else None,
        button_url=str(req.button.url) if viber and req.button else None,
        sender=req.sender,
        dlr_timeout=req.deadline_for(job.channel, get_settings().default_dlr_timeout)
        if viber else None,
    )


def _wait_for_slot(job: _Job) -> None:
    """Take a slot in the provider's global rate limit: sleep briefly, or retry later."""
    settings = get_settings()
    rate = getattr(settings, f"{job.provider}_rate_per_second", None)
    if not rate:
        return
    limiter = RateLimiter(get_redis(), rate)
    reservation = limiter.reserve(job.provider, settings.max_inline_rate_wait_seconds)
    if reservation.granted:
        if reservation.wait > 0:
            time.sleep(reservation.wait)
        return
    countdown = reservation.wait + random.uniform(0, 1)
    with session_scope() as session:
        _cas(session, Attempt, job.attempt_id, ["pending"],
             not_before=utcnow() + timedelta(seconds=countdown))
    raise RetryLater(countdown, "rate limited")


def _wait_for_circuit(job: _Job) -> None:
    """While the provider's circuit is open (worker/breaker.py) the send waits, re-scheduled
    like a rate-limited one: not failed, and no retry spent on an outage."""
    wait = breaker.admit(job.provider)
    if wait is None:
        return
    countdown = wait + random.uniform(0, 1)
    with session_scope() as session:
        _cas(session, Attempt, job.attempt_id, ["pending"],
             not_before=utcnow() + timedelta(seconds=countdown))
    raise RetryLater(countdown, "circuit open")


def _fail_before_send(job: _Job, exc: Exception) -> None:
    """Preparing the content failed (e.g. the image could not be uploaded)."""
    if isinstance(exc, RetryableError) and job.retries < get_settings().max_send_retries:
        countdown = exc.retry_after or backoff(job.retries)
        with session_scope() as session:
            _cas(session, Attempt, job.attempt_id, ["pending"], retries=job.retries + 1,
                 not_before=utcnow() + timedelta(seconds=countdown),
                 error_reason=exc.reason, error_detail=exc.detail)
        raise RetryLater(countdown, exc.reason)
    _end_attempt(job, "failed", exc, expected=["pending"])


def _on_retryable(job: _Job, exc: RetryableError) -> None:
    if job.retries >= get_settings().max_send_retries:
        _end_attempt(job, "failed", exc, expected=["sending"])
        return
    countdown = exc.retry_after or backoff(job.retries)
    with session_scope() as session:
        _cas(session, Attempt, job.attempt_id, ["sending"], status="pending",
             retries=job.retries + 1, deadline_at=None,
             not_before=utcnow() + timedelta(seconds=countdown), error_code=exc.code,
             error_reason=exc.reason, error_detail=exc.detail, **_response(exc))
        add_event(session, job.message_id, "retry_scheduled", job.attempt_id,
                  channel=job.channel, reason=exc.reason, code=exc.code,
                  retry_in=round(countdown, 2), retries=job.retries + 1)
    publish(FollowUps(unindex=[job.attempt_id]))
    raise RetryLater(countdown, exc.reason)


def _on_permanent(job: _Job, exc: PermanentError) -> None:
    if exc.reason == "not_a_friend" and job.request.to.email:  # learnt: skip them next time
        with session_scope() as session:
            contacts.record(session, job.channel, *_messenger_identity(job.request),
                            "not_friend")
    _end_attempt(job, "failed", exc, expected=["sending"])


def _end_attempt(job: _Job, event: str, exc: Exception, expected: list[str]) -> None:
    with unit_of_work() as work:
        session, followups = work.session, work.followups
        followups.unindex.append(job.attempt_id)
        transition = apply_attempt(expected[0], event)
        reason = getattr(exc, "reason", type(exc).__name__)
        if not _cas(session, Attempt, job.attempt_id, expected, status=transition.status,
                    deadline_at=None, error_code=getattr(exc, "code", None),
                    error_reason=reason, error_detail=getattr(exc, "detail", str(exc)),
                    **_response(exc)):
            return
        add_event(session, job.message_id, "attempt_failed", job.attempt_id,
                  channel=job.channel, reason=reason, code=getattr(exc, "code", None),
                  detail=getattr(exc, "detail", str(exc)))
        _advance(session, job.message_id, job.hop, job.channel, transition.status, reason,
                 followups)


def _on_submitted(job: _Job, result: SendResult | None, window: float,
                  ambiguous: AmbiguousError | None = None) -> None:
    """The provider accepted it (or may have): wait for reports until the deadline."""
    now = utcnow()
    due = now + timedelta(seconds=window)
    pmid = next(iter(result.provider_message_ids.values()), None) if result else None
    with unit_of_work() as work:
        session = work.session
        moved = _cas(session, Attempt, job.attempt_id, ["sending"], status="submitted",
                     submitted_at=now, deadline_at=due,
                     **_response(ambiguous if ambiguous is not None else result))
        # A report may have overtaken us (matched by attempt id): keep what it set.
        extra = {"provider_message_id": pmid} if pmid else {}
        if ambiguous is not None:
            extra.update(error_reason=ambiguous.reason, error_detail=ambiguous.detail)
        if extra:
            session.execute(update(Attempt).where(Attempt.id == job.attempt_id).values(
                **{k: func.coalesce(getattr(Attempt, k), v) for k, v in extra.items()}))
        if result is not None and result.conversation:
            _remember_conversation(session, job, result)
        add_event(session, job.message_id, "submitted", job.attempt_id, channel=job.channel,
                  provider=job.provider, provider_message_id=pmid,
                  ambiguous=ambiguous.reason if ambiguous else None)
        _move_message(session, job.message_id, "submitted")
        if moved:
            work.index(job.attempt_id, due)


def _remember_conversation(session: Session, job: _Job, result: SendResult) -> None:
    """Keep the VisitId the provider assigned and file our message in the conversation."""
    ref = job.request.conversation
    if ref is None:
        return
    conversation = conversations.resolve(session, job.app_id, ref.model_copy(
        update={"session_id": result.conversation.get("session_id") or ref.session_id}),
        get_settings().contactatonce_advertiser_id)
    conversations.record_sent(session, conversation.id, result.conversation, job.message_id,
                              job.attempt_id, job.request.text_for(job.channel))


def _response(outcome: object) -> dict[str, str | None]:
    """The provider's answer (its code and text) for the timeline, from a result or an error."""
    if isinstance(outcome, SendResult):
        return {"response_code": outcome.code, "response_text": outcome.detail or None}
    return {"response_code": getattr(outcome, "code", None) or getattr(outcome, "reason", None),
            "response_text": getattr(outcome, "detail", None) or None}


# --- route progression -------------------------------------------------------------------

def _advance(session: Session, message_id: str, hop: int, channel: str, attempt_status: str,
             reason: str | None, followups: FollowUps) -> None:
    """The attempt at ``hop`` ended badly: fall back to the next channel or end the message."""
    message = session.get(Message, message_id, populate_existing=True)
    assert message is not None
    kind, value = route_outcome(len(message.route), hop, attempt_status)
    if kind == "fallback":
        next_hop = int(value)
        if session.execute(update(Message).where(Message.id == message_id, Message.hop == hop)
                           .values(hop=next_hop, updated_at=utcnow())).rowcount != 1:
            return  # someone else already moved the route on
        attempt_id = _new_attempt(session, message, next_hop)
        add_event(session, message_id, "fallback", attempt_id, from_channel=channel,
                  to_channel=message.route[next_hop], reason=reason)
        metrics.fallback(channel, message.route[next_hop], reason)
        followups.tasks.append(Task(tasknames.SEND_ATTEMPT, (attempt_id,)))
    else:
        _move_message(session, message_id, str(value), reason=reason)
        _flows().on_message_final(session, message_id, str(value), followups)


def _flows():  # type: ignore[no-untyped-def]
    """The flow runtime, imported late: flows build on the pipeline, not the other way."""
    from shared.flows import runtime

    return runtime


# --- provider reports --------------------------------------------------------------------

def handle_callback(callback_id: int) -> None:
    """Apply one stored callback. Raises ``RetryLater`` if its attempt is not known yet.

    The unmatched case commits its bumped ``tries`` before asking for the retry: raised
    inside the transaction, the increment rolled back with it and the retries never ended.
    """
    with unit_of_work() as work:
        retry = _handle_callback(work.session, callback_id, work.followups)
    if retry is not None:
        raise retry


def _handle_callback(session: Session, callback_id: int,
                     followups: FollowUps) -> RetryLater | None:
    callback = session.get(Callback, callback_id)
    if callback is None or callback.status != "received":
        return None
    try:
        event = get_provider(callback.provider).parse_callback(callback.params)
    except CallbackError as exc:
        callback.status, callback.error = "invalid", str(exc)
        return None
    if event.kind not in MESSAGE_EVENT_KINDS:
        _apply_other(session, callback.provider, event, callback.answer, followups)
    else:
        attempt = _find_attempt(session, callback.provider, event)
        if attempt is None:
            return _unmatched(callback)
        callback.attempt_id = attempt.id
        _apply_event(session, attempt, event, followups)
    callback.status, callback.processed_at = "processed", utcnow()
    return None


UNMATCHED_TRIES = 5  # a report's attempt may still be committing; after this, an orphan

_CONTACT_STATUS = {("invite_result", "accepted"): "friend",
                   ("invite_result", "established"): "friend",
                   ("invite_result", "decline"): "declined",
                   ("broke_up", None): "not_friend"}


def _apply_other(session: Session, provider: str, event: ProviderEvent, answer: object,
                 followups: FollowUps) -> None:
    """Callbacks about a contact or a conversation rather than one of our messages."""
    data = dict(event.data)
    if event.kind == "contact":
        change, email = data.get("change"), data.get("email")
        status = ("friend" if answer == "accepted" else "declined") if change == "invited" \
            else _CONTACT_STATUS.get((change, data.get("result")))
        if email:
            contacts.record(session, provider, email, data.get("app_id") or "", status,
                            name=data.get("name"))
        add_app_event(session, "contact", {"channel": provider, "status": status, **data})
    elif event.kind == "poke":
        add_app_event(session, event.kind, {"channel": provider, **data})
        _poke_flow(session, data, followups)
    elif event.kind == "flow_result":
        if not _flows().on_native_result(session, data, followups):
            add_app_event(session, event.kind, {"channel": provider, **data})
    elif event.kind == "inbound":
        _apply_inbound(session, event, followups)


def _poke_flow(session: Session, data: dict, followups: FollowUps) -> None:
    """A poke whose tag a flow lists starts that flow for the person who poked."""
    runtime = _flows()
    flow = runtime.triggered_flow(session, poke_tag=data.get("tag"))
    if flow is not None and data.get("email"):
        contact = {"to": {"email": data["email"], "app_id": data.get("app_id") or "rogerthat"}}
        runtime.start_triggered(session, flow, contact, "poke", followups)


def _apply_inbound(session: Session, event: ProviderEvent, followups: FollowUps) -> None:
    """An agent wrote into an in-app conversation: file it and tell the producer."""
    conversation, new = conversations.record_inbound(
        session, event.data, event.text, event.occurred_at,
        get_settings().contactatonce_advertiser_id)
    if new:
        add_app_event(session, "inbound_message", conversations.inbound_payload(
            conversation, event.data, event.text, event.occurred_at), conversation.app_id)
        ref = {"consumer_id": conversation.consumer_id, "session_id": conversation.session_id,
               "advertiser_id": conversation.advertiser_id}
        _flows().on_conversation_text(session, conversation.consumer_id, ref, event.text,
                                      followups)


def _unmatched(callback: Callback) -> RetryLater | None:
    """A report for an id we do not know (yet): try a few times, then keep it as an orphan.

    Returns the retry to ask for once the bumped ``tries`` has committed."""
    callback.tries += 1
    if callback.tries >= UNMATCHED_TRIES:
        callback.status, callback.error = "orphan", "no attempt matches this report"
        return None
    return RetryLater(2.0 ** callback.tries, "report for an unknown attempt")


def _find_attempt(session: Session, provider: str, event: ProviderEvent) -> Attempt | None:
    attempt = None
    if event.provider_message_id:
        attempt = session.scalars(select(Attempt).where(
            Attempt.provider_message_id == event.provider_message_id)).first()
    if attempt is None and event.attempt_ref:
        attempt = session.get(Attempt, event.attempt_ref)
    if attempt is not None and attempt.provider != provider:
        return None
    return attempt


def _apply_event(session: Session, attempt: Attempt, event: ProviderEvent,
                 followups: FollowUps) -> None:
    now = utcnow()
    for _ in range(10):
        current = session.execute(
            select(Attempt.status).where(Attempt.id == attempt.id)).scalar_one()
        transition = apply_attempt(current, event.kind)
        if not transition.changed:
            break
        values: dict = {"status": transition.status}
        if transition.status in ("delivered", "seen"):
            values.update(deadline_at=None, delivered_at=attempt.delivered_at or now)
            if transition.status == "seen":
                values["seen_at"] = now
        if transition.falls_back:
            values.update(deadline_at=None, error_reason=event.reason, error_code=event.status)
        if _cas(session, Attempt, attempt.id, [current], **values):
            break
    else:
        raise RuntimeError(f"attempt {attempt.id} kept changing under us")
    if event.provider_message_id:
        session.execute(update(Attempt).where(
            Attempt.id == attempt.id, Attempt.provider_message_id.is_(None),
        ).values(provider_message_id=event.provider_message_id))
    add_event(session, attempt.message_id, "report", attempt.id, channel=attempt.channel,
              kind=event.kind, status=event.status, reason=event.reason,
              applied=transition.changed, late=transition.late, raw=dict(event.raw))
    if event.kind == "replied":
        add_event(session, attempt.message_id, "replied", attempt.id, channel=attempt.channel,
                  text=event.text, **event.data)
        _flow_reply(session, attempt, event, followups)
    if not transition.changed:
        return
    if transition.status in ("delivered", "seen"):
        followups.unindex.append(attempt.id)
        _move_message(session, attempt.message_id, transition.status)
        _cancel_later_hops(session, attempt)
        if values["delivered_at"] is now:  # the attempt's first positive report
            metrics.delivery_report(attempt.provider, attempt.channel, attempt.submitted_at, now)
    if transition.late:
        metrics.late_report(attempt.provider, attempt.channel)
    if transition.falls_back:
        followups.unindex.append(attempt.id)
        _advance(session, attempt.message_id, attempt.hop, attempt.channel, transition.status,
                 event.reason, followups)


def _cancel_later_hops(session: Session, attempt: Attempt) -> None:
    """An earlier hop was delivered after all: a later hop's attempt that has not left yet
    (``pending``) is cancelled, never sent. One already ``sending`` or ``submitted`` may have
    reached its provider; it stays, and this report is recorded as a late one."""
    later = session.scalars(select(Attempt.id).where(
        Attempt.message_id == attempt.message_id, Attempt.hop > attempt.hop,
        Attempt.status == "pending")).all()
    transition = apply_attempt("pending", "cancel")
    for later_id in later:
        if _cas(session, Attempt, later_id, ["pending"], status=transition.status,
                not_before=None, error_reason="earlier_hop_delivered"):
            add_event(session, attempt.message_id, "cancelled", later_id,
                      reason="earlier_hop_delivered", delivered_attempt=attempt.id)


def _flow_reply(session: Session, attempt: Attempt, event: ProviderEvent,
                followups: FollowUps) -> None:
    """A reply answers a flow step, or carries a keyword that starts a flow."""
    runtime = _flows()
    button_id = event.data.get("button_id")
    text = None if button_id else event.text
    if runtime.on_reply(session, attempt.message_id, followups, answer_id=button_id, text=text):
        return
    flow = runtime.triggered_flow(session, keyword=text) if text else None
    if flow is not None:
        runtime.start_triggered(session, flow, runtime.contact_of_message(
            attempt.message.request), "keyword", followups)


# --- deadlines -----------------------------------------------------------------------------

def expire_attempt(attempt_id: str, now: datetime) -> bool:
    """The sweep found this attempt due: if it is still undelivered, fall back. Idempotent."""
    with unit_of_work() as work:
        session, followups = work.session, work.followups
        row = session.execute(select(Attempt.status, Attempt.deadline_at, Attempt.message_id,
                                     Attempt.hop, Attempt.channel)
                              .where(Attempt.id == attempt_id)).first()
        if row is None or row.deadline_at is None:
            followups.unindex.append(attempt_id)
        elif row.deadline_at > now:
            followups.index.append((attempt_id, row.deadline_at))  # it moved: re-score
        else:
            transition = apply_attempt(row.status, "deadline")
            followups.unindex.append(attempt_id)
            if transition.changed and _cas(session, Attempt, attempt_id, [row.status],
                                           status=transition.status, deadline_at=None,
                                           error_reason="deadline_passed"):
                add_event(session, row.message_id, "deadline_passed", attempt_id,
                          channel=row.channel, deadline_at=row.deadline_at.isoformat() + "Z")
                _advance(session, row.message_id, row.hop, row.channel, transition.status,
                         "deadline_passed", followups)
            elif not transition.changed:
                session.execute(update(Attempt).where(Attempt.id == attempt_id)
                                .values(deadline_at=None))
    return bool(followups.tasks)
