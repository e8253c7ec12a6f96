"""What a provider call meant, recorded for a batch of attempts at once (set-based).

The single-message path is a batch of one; the campaign path a batch of up to
``SWITCHBOARD_BULK_BATCH_SIZE`` phones sharing one request. Either way one outcome applies to
every attempt of the batch, with one statement per table where the database allows it:

* ``submitted`` — accepted, or maybe (``AmbiguousError``): wait for reports until the deadline;
* ``retry_later`` — nothing took effect (``RetryableError``): back to ``pending`` with backoff,
  or ``failed`` once the retries are spent;
* ``failed`` — refused (``PermanentError``), or refused before the call: the route moves on;
* ``unsent`` — claimed, but the request never left (an error of ours): back to ``pending``;
* ``held`` — not sent yet (rate limit, open circuit): ``pending`` until ``not_before``, and a
  running hop deadline stays on the row, so the route still moves on when it passes;
* ``suppressed`` — not sent: the recipient opted out; the route moves on.

Every status comes from ``shared.lifecycle``; each function begins with a compare-and-set on
the expected status, so a batch recorded twice changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from shared import conversations, sendtime
from shared.apps import delivery_target
from shared.consent import Refusal
from shared.lifecycle import (
    AttemptStatus,
    DeliveryStatus,
    MessageStatus,
    apply_attempt,
    apply_message,
    engine_edge,
)
from shared.messages import add_event
from shared.models import Attempt, Delivery, Event, Message, utcnow
from shared.providers.base import AmbiguousError, ProviderError, RetryableError, SendResult
from shared.schemas import SendRequest
from shared.settings import get_settings
from shared.uow import unit_of_work
from worker import route
from worker.timing import RetryLater, backoff

_ATTEMPTS = Attempt.__table__


@dataclass(frozen=True)
class Item:
    """One attempt of a batch; ``key`` is how the provider's answer names it (the phone)."""

    attempt_id: str
    message_id: str
    retries: int
    key: str | None = None
    valid_until: datetime | None = None  # its message's (shared.sendtime, worker.timeliness)
    quiet_hours: dict[str, Any] | None = None  # its message's, the zone resolved


@dataclass(frozen=True)
class Batch:
    """Attempts that share a hop's channel, provider, app and content."""

    channel: str
    provider: str
    hop: int
    app_id: str
    request: SendRequest
    items: tuple[Item, ...]
    deadline_at: datetime | None = None  # a hop deadline already running (held attempts)
    priority: str = "normal"  # its messages' (critical ones ignore quiet hours)

    @property
    def attempt_ids(self) -> list[str]:
        return [item.attempt_id for item in self.items]

    @property
    def retries(self) -> int:
        return max(item.retries for item in self.items)

    def only(self, attempt_ids: set[str]) -> Batch:
        return replace(self, items=tuple(i for i in self.items if i.attempt_id in attempt_ids))


def _set(session: Session, batch: Batch, source: str, **values: Any) -> list[str]:
    """Compare-and-set on every attempt of the batch; returns the ids it moved."""
    return list(session.scalars(
        update(Attempt).where(Attempt.id.in_(batch.attempt_ids), Attempt.status == source)
        .values(updated_at=utcnow(), **values)
        .returning(Attempt.id).execution_options(synchronize_session=False)).all())


def response(outcome: object) -> dict[str, str | None]:
    """The provider's answer (its code and text) for the timeline, from a result or an error."""
    if isinstance(outcome, SendResult):
        return {"response_code": outcome.code, "response_text": outcome.detail or None}
    return {"response_code": getattr(outcome, "code", None) or getattr(outcome, "reason", None),
            "response_text": getattr(outcome, "detail", None) or None}


# --- not sent: held, unsent, retry later ---------------------------------------------------

def held(batch: Batch, countdown: float, reason: str, deadline_at: datetime | None = None,
         ) -> None:
    """Not sent yet, through no fault of the message: ``not_before`` so the recovery sweep
    leaves it be, and the hop deadline (when one runs) indexed. Raises ``RetryLater``."""
    values: dict[str, Any] = {"not_before": utcnow() + timedelta(seconds=countdown)}
    if deadline_at is not None:
        values["deadline_at"] = deadline_at
    with unit_of_work() as work:
        moved = _set(work.session, batch, AttemptStatus.PENDING, **values)
        if deadline_at is not None:
            for attempt_id in moved:
                work.index(attempt_id, deadline_at)
    raise RetryLater(countdown, reason)


def requeue(batch: Batch, countdown: float, exc: ProviderError) -> None:
    """Refused for the account, not the message: back to ``pending`` behind the open
    circuit, no retry charged, the hop deadline kept (and indexed), so fallback still
    happens. Raises ``RetryLater``."""
    target = engine_edge("retry")[1]
    with unit_of_work() as work:
        moved = set(_set(work.session, batch, AttemptStatus.SENDING, status=target,
                         not_before=utcnow() + timedelta(seconds=countdown),
                         error_code=exc.code, error_reason=exc.reason,
                         error_detail=exc.detail, **response(exc)))
        for item in batch.items:
            if item.attempt_id in moved:
                add_event(work.session, item.message_id, "held", item.attempt_id,
                          channel=batch.channel, reason=exc.reason, code=exc.code,
                          retry_in=round(countdown, 2))
    raise RetryLater(countdown, exc.reason)


def unsent(batch: Batch, exc: Exception) -> None:
    """Claimed, but the request never left (Redis, the breaker, building the request): back
    to ``pending`` with a retry like any other. Raises ``RetryLater``. The deadline column is
    cleared; its index entry, if any, is dropped by the sweep when it finds no deadline
    (Redis may be what failed, so nothing is published here)."""
    _back_to_pending(batch, AttemptStatus.SENDING, backoff(batch.retries), "not_sent",
                     {"error_detail": f"{type(exc).__name__}: {exc}", "deadline_at": None})


def retry_later(batch: Batch, exc: RetryableError, source: str) -> None:
    """Nothing took effect: ``pending`` again after the backoff (or what the provider asked
    for), or ``failed`` once ``max_send_retries`` are spent. The hop's deadline, set when it
    was first claimed or held, keeps running through the retries: a provider failing for
    longer than the hop's window moves the route on. Raises ``RetryLater`` unless it failed
    the batch."""
    if batch.retries >= get_settings().max_send_retries:
        failed(batch, exc, source)
        return
    countdown = exc.retry_after or backoff(batch.retries)
    _back_to_pending(batch, source, countdown, exc.reason, {
        "error_code": exc.code, "error_detail": exc.detail, **response(exc)})


def _back_to_pending(batch: Batch, source: str, countdown: float, reason: str,
                     values: dict[str, Any]) -> None:
    target = engine_edge("retry")[1] if source == AttemptStatus.SENDING else source
    with unit_of_work() as work:
        moved = set(_set(work.session, batch, source, status=target,
                         retries=Attempt.retries + 1, error_reason=reason,
                         not_before=utcnow() + timedelta(seconds=countdown), **values))
        for item in batch.items:
            if item.attempt_id in moved:
                add_event(work.session, item.message_id, "retry_scheduled", item.attempt_id,
                          channel=batch.channel, reason=reason, code=values.get("error_code"),
                          retry_in=round(countdown, 2), retries=item.retries + 1)
    raise RetryLater(countdown, reason)


# --- refused ---------------------------------------------------------------------------------

def failed(batch: Batch, exc: Exception, source: str) -> None:
    """Refused (by the provider, or before the call): each attempt fails and its route moves
    on, to the next channel or to the message's end."""
    transition = apply_attempt(source, "failed")
    reason = getattr(exc, "reason", type(exc).__name__)
    detail = getattr(exc, "detail", str(exc))
    with unit_of_work() as work:
        moved = set(_set(work.session, batch, source, status=transition.status,
                         deadline_at=None, error_code=getattr(exc, "code", None),
                         error_reason=reason, error_detail=detail, **response(exc)))
        for item in batch.items:
            work.unindex(item.attempt_id)
            if item.attempt_id not in moved:
                continue
            add_event(work.session, item.message_id, "attempt_failed", item.attempt_id,
                      channel=batch.channel, reason=reason, code=getattr(exc, "code", None),
                      detail=detail)
            route.advance(work, item.message_id, batch.hop, batch.channel, transition.status,
                          reason)


# --- not sent: the recipient opted out -----------------------------------------------------

def suppressed(batch: Batch, refusals: Mapping[str, Refusal]) -> None:
    """Not sent, before any call: the recipient opted out (``shared.consent``). Each attempt
    ends ``suppressed`` (not ``failed``) with who opted out, when and through which message
    on its timeline, and its route moves on; a message whose every hop was suppressed ends
    ``suppressed``, one with an earlier hop that failed otherwise ends ``failed``."""
    source, target = engine_edge("suppress")
    with unit_of_work() as work:
        moved = set(_set(work.session, batch, source, status=target, deadline_at=None,
                         not_before=None, error_reason="opted_out",
                         error_detail="the recipient opted out of this channel"))
        tried = _tried_before(work.session, batch, moved)
        for item in batch.items:
            if item.attempt_id not in moved:
                continue
            work.unindex(item.attempt_id)  # a hop held behind a circuit had its deadline
            add_event(work.session, item.message_id, "suppressed", item.attempt_id,
                      **refusals[item.attempt_id].payload(batch.app_id, batch.request.category))
            ended = AttemptStatus.FAILED if item.message_id in tried else target
            route.advance(work, item.message_id, batch.hop, batch.channel, ended, "opted_out")


def _tried_before(session: Session, batch: Batch, moved: set[str]) -> set[str]:
    """On a route's last hop: the messages an earlier hop of which was not suppressed (one
    query for the batch); they did not end only for want of consent."""
    if batch.hop + 1 < len(batch.request.route) or not moved:
        return set()
    message_ids = [item.message_id for item in batch.items if item.attempt_id in moved]
    return set(session.scalars(select(Attempt.message_id).where(
        Attempt.message_id.in_(message_ids), Attempt.hop < batch.hop,
        Attempt.status != AttemptStatus.SUPPRESSED)).all())


# --- accepted ---------------------------------------------------------------------------------

def submitted(batch: Batch, result: SendResult | None, window: float,
              ambiguous: AmbiguousError | None = None, batch_id: str | None = None) -> None:
    """Accepted (or maybe): each attempt ``submitted`` with its own provider id and deadline.
    A report may have overtaken us (matched by attempt id): what it set is kept."""
    now = utcnow()
    ends = [i.valid_until for i in batch.items if i.valid_until is not None]
    # the window was measured before the call: clamp again so no deadline passes valid_until
    due = sendtime.clamp_due(now + timedelta(seconds=window), min(ends) if ends else None)
    ids = dict(result.provider_message_ids) if result is not None else {}
    pmids = {item.attempt_id: _pmid(ids, item) for item in batch.items}
    target = apply_attempt(AttemptStatus.SENDING, "submitted").status
    answer = ambiguous if ambiguous is not None else result
    with unit_of_work() as work:
        moved = _set(work.session, batch, AttemptStatus.SENDING, status=target,
                     submitted_at=now, deadline_at=due, **response(answer))
        _record_overtaken_answer(work.session, batch, moved, answer, now)
        _record_ambiguity(work.session, batch, ambiguous)
        _record_provider_ids(work.session, pmids)
        if result is not None and result.conversation and len(batch.items) == 1:
            _remember_conversation(work.session, batch, result)
        _submitted_events(work.session, batch, pmids, batch_id, ambiguous, now)
        for attempt_id in moved:
            work.index(attempt_id, due)


def _pmid(ids: dict[str, str], item: Item) -> str | None:
    """The provider's id for this item: by its key, or the only one for a batch of one."""
    if item.key is not None and item.key in ids:
        return ids[item.key]
    return next(iter(ids.values()), None) if len(ids) == 1 else None


def _record_overtaken_answer(session: Session, batch: Batch, moved: list[str],
                             answer: object, now: datetime) -> None:
    """The provider's answer and when it came, also on the attempts a report moved on while
    the call was waiting (the compare-and-set above skipped them): their timeline keeps
    what the provider said to the send."""
    overtaken = sorted(set(batch.attempt_ids) - set(moved))
    if overtaken:
        session.execute(
            update(Attempt).where(Attempt.id.in_(overtaken)).values(
                submitted_at=func.coalesce(Attempt.submitted_at, now), **response(answer))
            .execution_options(synchronize_session=False))


def _record_ambiguity(session: Session, batch: Batch, ambiguous: AmbiguousError | None,
                      ) -> None:
    """Why the answer was unclear, on every attempt of the batch, whatever its status now: a
    report may have moved it on while the call was still waiting."""
    if ambiguous is not None:
        session.execute(
            update(Attempt).where(Attempt.id.in_(batch.attempt_ids)).values(
                error_reason=func.coalesce(Attempt.error_reason, ambiguous.reason),
                error_detail=func.coalesce(Attempt.error_detail, ambiguous.detail))
            .execution_options(synchronize_session=False))


def _record_provider_ids(session: Session, pmids: dict[str, str | None]) -> None:
    """Each attempt's own provider id, unless a report set it first (one executemany)."""
    params = [{"aid": a, "pmid": p} for a, p in pmids.items() if p]
    if params:
        session.execute(
            update(_ATTEMPTS).where(_ATTEMPTS.c.id == bindparam("aid"),
                                    _ATTEMPTS.c.provider_message_id.is_(None))
            .values(provider_message_id=bindparam("pmid")), params)


def _remember_conversation(session: Session, batch: Batch, result: SendResult) -> None:
    """Keep the conversation ids the provider assigned (the VisitId) and file our message."""
    ref = batch.request.conversation
    if ref is None:
        return
    item = batch.items[0]
    conversation = conversations.resolve(session, batch.app_id, ref.model_copy(
        update={"session_id": result.conversation.get("session_id") or ref.session_id}),
        get_settings().contactatonce_advertiser_id)
    conversations.record_sent(session, conversation.id, result.conversation, item.message_id,
                              item.attempt_id, batch.request.text_for(batch.channel))


def _submitted_events(session: Session, batch: Batch, pmids: dict[str, str | None],
                      batch_id: str | None, ambiguous: AmbiguousError | None,
                      now: datetime) -> None:
    """What ``add_event`` and ``route.move_message`` do per message, for the whole batch: a
    ``submitted`` event each, and ``queued → submitted`` with its public ``status`` event."""
    message_ids = [item.message_id for item in batch.items]
    source = MessageStatus.QUEUED  # the only status "submitted" moves a message from
    moved = session.execute(
        update(Message).where(Message.id.in_(message_ids), Message.status == source)
        .values(status=apply_message(source, "submitted"), event_seq=Message.event_seq + 2,
                updated_at=now)
        .returning(Message.id, Message.event_seq, Message.app_id, Message.callback_url)
        .execution_options(synchronize_session=False)).all()
    seqs = {m.id: m.event_seq - 1 for m in moved}
    stayed = sorted(set(message_ids) - set(seqs))
    if stayed:
        seqs.update((row.id, row.event_seq) for row in session.execute(
            update(Message).where(Message.id.in_(stayed))
            .values(event_seq=Message.event_seq + 1)
            .returning(Message.id, Message.event_seq)
            .execution_options(synchronize_session=False)))
    extra = {"batch": batch_id} if batch_id else {}
    session.execute(insert(Event), [
        {"message_id": item.message_id, "app_id": batch.app_id, "seq": seqs[item.message_id],
         "attempt_id": item.attempt_id, "type": "submitted", "created_at": now,
         "payload": {"channel": batch.channel, "provider": batch.provider, **extra,
                     "provider_message_id": pmids[item.attempt_id],
                     "ambiguous": ambiguous.reason if ambiguous else None}}
        for item in batch.items])
    _status_events(session, moved, batch.app_id, now)


def _status_events(session: Session, moved: list[Any], app_id: str, now: datetime) -> None:
    """The public ``status: submitted`` events, with a webhook delivery where one is due."""
    if not moved:
        return
    rows = [{"message_id": m.id, "app_id": m.app_id, "seq": m.event_seq, "type": "status",
             "created_at": now, "payload": {"status": MessageStatus.SUBMITTED.value,
                                            "reason": None}}
            for m in moved]
    default_url = delivery_target(session, app_id)[0]
    urls = [m.callback_url or default_url for m in moved]
    if not any(urls):
        session.execute(insert(Event), rows)
        return
    event_ids = session.scalars(
        insert(Event).returning(Event.id, sort_by_parameter_order=True), rows).all()
    session.execute(insert(Delivery), [
        {"event_id": event_id, "message_id": m.id, "url": url, "next_attempt_at": now,
         "status": DeliveryStatus.PENDING, "attempts": 0, "created_at": now}
        for event_id, m, url in zip(event_ids, moved, urls, strict=True) if url])

