"""The engine: accept a message, create its hop's attempt, and send a batch of attempts.

Sending is one path for one attempt or many (a campaign's phones sharing one request):
prepare the content (the provider's ``outbound``), take rate-limit slots, ask the circuit,
claim (``pending → sending``), call the provider once, and hand what the answer meant to
``worker.outcomes``. "Claimed" is not "sent": an error of ours before the request leaves
returns the attempts to ``pending``; only a request that may have reached the provider waits
for its report or deadline. Nothing here knows a channel or a provider by name.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from shared import sendtime
from shared.db import session_scope
from shared.lifecycle import MESSAGE_FINAL, AttemptStatus, MessageStatus, engine_edge
from shared.messages import IdempotencyConflict, create_message, record_conflict
from shared.models import DEFAULT_APP, Attempt, Message, utcnow
from shared.providers import get_provider
from shared.providers.base import (
    AccountRefusal,
    AmbiguousError,
    OutboundMessage,
    PermanentError,
    Provider,
    RetryableError,
)
from shared.schemas import SendRequest
from shared.settings import get_settings
from shared.uow import FollowUps, publish
from shared.windows import deadline_window
from worker import breaker, content, outcomes, route, timeliness
from worker.outcomes import Batch, Item
from worker.ratelimit import RateLimiter
from worker.redis_conn import get_redis
from worker.timing import RetryLater

__all__ = ["RetryLater", "accept", "dispatch", "send_attempt", "send_batch"]


def accept(message_id: str, request_data: dict, app_id: str = DEFAULT_APP) -> str | None:
    """Insert a message sent through the broker (``shared.client.send``), then dispatch it.
    A key reused with another body keeps the first message (see ``record_conflict``)."""
    request = SendRequest.model_validate(request_data)
    with session_scope() as session:
        try:
            create_message(session, message_id, request, app_id)
        except IdempotencyConflict:
            record_conflict(session, session.get_one(Message, message_id), request)
    return dispatch(message_id)


def dispatch(message_id: str) -> str | None:
    """Ensure the attempt for the message's current hop exists; return it if still pending."""
    with session_scope() as session:
        message = session.get(Message, message_id)
        if message is None or message.status != MessageStatus.QUEUED:
            return None
        existing = session.execute(select(Attempt.id, Attempt.status).where(
            Attempt.message_id == message_id, Attempt.hop == message.hop)).first()
        if existing is not None:
            return existing.id if existing.status == AttemptStatus.PENDING else None
        attempt_id = route.new_attempt(session, message, message.hop)
        try:
            session.commit()
        except IntegrityError:  # a concurrent dispatch created it first
            session.rollback()
            return None
        return attempt_id


def send_attempt(attempt_id: str) -> None:
    """Send one pending attempt once (a batch of one). Raises ``RetryLater`` to be called
    again later."""
    batch = _load(attempt_id)
    if batch is None:
        return
    provider = get_provider(batch.provider)
    with content.conversation_turn(provider, batch.request, batch.app_id):
        send_batch(batch, provider)


def _load(attempt_id: str) -> Batch | None:
    with session_scope() as session:
        attempt = session.get(Attempt, attempt_id)
        if attempt is None or attempt.status != AttemptStatus.PENDING:
            return None
        message = attempt.message
        if message.status in MESSAGE_FINAL or message.status == MessageStatus.SCHEDULED:
            return None  # ended, or not yet due (its release sends it)
        return Batch(attempt.channel, attempt.provider, attempt.hop, message.app_id,
                     SendRequest.model_validate(message.request),
                     (Item(attempt.id, message.id, attempt.retries,
                           valid_until=message.valid_until, quiet_hours=message.quiet_hours),),
                     attempt.deadline_at, priority=message.priority)


def send_batch(batch: Batch, provider: Provider, bulk: bool = False) -> None:
    """Send the batch's attempts in one provider request. ``bulk``: a campaign batch, whose
    request carries every item's phone and a batch id of its own."""
    batch = _without_opted_out(batch, provider)
    if not batch.items:
        return
    batch = timeliness.admit(batch)  # not past valid_until, not in quiet hours
    if not batch.items:
        return
    request_id = str(uuid.uuid4()) if bulk else batch.items[0].attempt_id
    request = timeliness.within_validity(
        batch, deadline_window(batch.channel, batch.request))
    try:
        outbound = content.outbound(provider, request, request_id, batch.channel,
                                    batch.app_id, retries=0 if bulk else batch.retries)
        summary = provider.summarize(outbound)
    except (PermanentError, RetryableError) as exc:
        _refused_before_call(batch, exc)
        return
    if bulk:
        outbound, summary = _for_every_phone(batch, outbound, summary)
    window = timeliness.clamp_window(batch, deadline_window(batch.channel, request))
    _wait_for_slot(batch)
    _wait_for_circuit(batch, window)
    due = sendtime.clamp_due(batch.deadline_at or utcnow() + timedelta(seconds=window),
                             timeliness.valid_until(batch))
    claimed = _claim(batch, summary, due)
    if bulk and len(claimed.items) < len(batch.items):  # another send took some: not theirs
        outbound = replace(outbound, phones=tuple(str(i.key) for i in claimed.items))
    if claimed.items:
        _call(claimed, provider, outbound, window, due, request_id if bulk else None)


def _without_opted_out(batch: Batch, provider: Provider) -> Batch:
    """Before anything is built, taken or claimed: the hops to addresses that opted out
    (one registry query for the whole batch) end ``suppressed`` and their routes move on;
    the rest is sent."""
    refused = content.opted_out(provider, batch.request, batch.channel,
                                [(i.attempt_id, i.message_id, i.key) for i in batch.items])
    if refused:
        outcomes.suppressed(batch.only(set(refused)), refused)
    return batch.only(set(batch.attempt_ids) - set(refused))


def _for_every_phone(batch: Batch, template: OutboundMessage,
                     summary: dict) -> tuple[OutboundMessage, dict]:
    """One request for the whole batch: every item's phone; the timeline's summary leaves
    the phones out (each message names its own) and keeps the batch id."""
    summary = {k: v for k, v in summary.items() if k != "phone"}
    return (replace(template, phones=tuple(str(i.key) for i in batch.items)),
            {**summary, "bulk": True})


def _refused_before_call(batch: Batch, exc: PermanentError | RetryableError) -> None:
    """Preparing the content failed (the recipient is not reachable, an image upload)."""
    if isinstance(exc, RetryableError):
        outcomes.retry_later(batch, exc, AttemptStatus.PENDING)
    else:
        outcomes.failed(batch, exc, AttemptStatus.PENDING)


def _wait_for_slot(batch: Batch) -> None:
    """N items take N tokens of the provider's global bucket: sleep briefly, or come back."""
    settings = get_settings()
    rate = getattr(settings, f"{batch.provider}_rate_per_second", None)
    if not rate:
        return
    reservation = RateLimiter(get_redis(), rate).reserve(
        batch.provider, settings.max_inline_rate_wait_seconds, cost=len(batch.items))
    if reservation.granted:
        if reservation.wait > 0:
            time.sleep(reservation.wait)
        return
    outcomes.held(batch, reservation.wait + random.uniform(0, 1), "rate limited")


def _wait_for_circuit(batch: Batch, window: float) -> None:
    """While the provider's circuit is open the send waits, neither failed nor charged a
    retry; the hop's deadline keeps running, so the route still moves on when it passes."""
    wait = breaker.admit(batch.provider)
    if wait is None:
        return
    due = sendtime.clamp_due(batch.deadline_at or utcnow() + timedelta(seconds=window),
                             timeliness.valid_until(batch))
    outcomes.held(batch, wait + random.uniform(0, 1), "circuit open", deadline_at=due)


def _claim(batch: Batch, summary: dict, due: datetime) -> Batch:
    """``pending → sending`` for the whole batch: this worker owns what it moved; nothing
    has left yet. The deadline is set now and indexed by ``_call``."""
    source, target = engine_edge("claim")
    with session_scope() as session:
        claimed = session.scalars(
            update(Attempt).where(Attempt.id.in_(batch.attempt_ids), Attempt.status == source)
            .values(status=target, deadline_at=due, not_before=None, request_summary=summary,
                    updated_at=utcnow())
            .returning(Attempt.id).execution_options(synchronize_session=False)).all()
    return batch.only(set(claimed))


def _call(batch: Batch, provider: Provider, outbound: OutboundMessage, window: float,
          due: datetime, batch_id: str | None) -> None:
    """Call the provider once and record what the answer means for every item."""
    reached = False
    try:
        publish(FollowUps(index=[(a, due) for a in batch.attempt_ids]))
        with breaker.watched_call(batch.provider, batch.channel):  # timed, counted, told
            reached = True
            result = provider.send(outbound)
    except RetryableError as exc:
        outcomes.retry_later(batch, exc, AttemptStatus.SENDING)
    except AccountRefusal as exc:
        _account_refused(batch, exc)
    except PermanentError as exc:
        content.learn_refusal(provider, batch.request, batch.channel, exc.reason)
        outcomes.failed(batch, exc, AttemptStatus.SENDING)
    except AmbiguousError as exc:
        outcomes.submitted(batch, None, window, ambiguous=exc, batch_id=batch_id)
    except Exception as exc:
        if reached:
            raise  # it may have left: report or deadline settles it
        outcomes.unsent(batch, exc)
    else:
        outcomes.submitted(batch, result, window, batch_id=batch_id)


def _account_refused(batch: Batch, exc: AccountRefusal) -> None:
    """The provider refused the account, not the message (credentials, balance): every one
    of its messages would fail alike. Its circuit opens for all of them, this batch waits
    behind it with its deadline running, and the route falls back when that passes."""
    wait = breaker.trip(batch.provider, exc.reason, exc.detail)
    outcomes.requeue(batch, wait + random.uniform(0, 1), exc)
