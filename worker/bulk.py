"""The bulk path's back half: send a batch of first-hop attempts in ONE gateway request.

A campaign (``shared.campaigns``) creates one message and one pending attempt per phone; this
module sends up to ``bulk_batch_size`` of them with the gateway's multi-phone request (the
repeated ``phone`` field) and maps each phone's ``msg_id`` back onto its own attempt. What
makes it cheaper than the per-message path is the shape of the work, not fewer guarantees:
one bulk compare-and-set claims the batch (``pending → sending``), one HTTP request carries
it, a few set-based statements record the outcome, and one ``ZADD`` indexes the deadlines.

Outcomes follow the per-message rules (``worker.pipeline``):

* accepted: each attempt ``submitted`` with its own ``provider_message_id`` and deadline;
  reports, fallback (e.g. Viber → SMS) and the deadline sweep then work per message;
* ``RetryableError``: the batch goes back to ``pending`` with ``not_before`` and the task runs
  again later (nothing was sent, the gateway said so);
* ``PermanentError``: each attempt fails through the normal per-message fallback;
* ``AmbiguousError``: the batch stays ``submitted`` and its deadlines settle it. The gateway
  takes one ``p_transaction_id`` per request, so ours is a batch id, not an attempt id: a
  report can only be matched by its ``msg_id``, which an ambiguous answer never gave us.

Rate limit: the gateway's documented limit is messages per second per account, so a request
of N phones takes N tokens of the shared bucket (reserved at once: the request goes when the
first is due and the bucket advances by N), i.e. bulk sends never exceed the account rate.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from shared.apps import delivery_target
from shared.db import session_scope
from shared.lifecycle import MESSAGE_FINAL
from shared.messages import add_event
from shared.models import Attempt, Delivery, Event, Message, utcnow
from shared.providers import get_provider
from shared.providers.base import (
    AmbiguousError,
    OutboundMessage,
    PermanentError,
    ProviderError,
    RetryableError,
    SendResult,
)
from shared.schemas import SendRequest
from shared.settings import get_settings
from shared.uow import FollowUps, publish
from worker import pipeline
from worker.ratelimit import RateLimiter
from worker.redis_conn import get_redis

_NOT_CONTENT = ("to", "metadata", "idempotency_key", "callback_url")
_ATTEMPTS = Attempt.__table__


@dataclass(frozen=True)
class Item:
    """One phone of a batch: its attempt and message."""

    attempt_id: str
    message_id: str
    phone: str  # international digits, no "+" (the gateway's form)
    retries: int


@dataclass(frozen=True)
class Batch:
    """Attempts that share channel and content, so one request can carry them all.

    ``job`` is the first attempt's per-message job: its content, channel and hop stand for
    the whole batch (only the phone differs between the batch's messages).
    """

    job: pipeline._Job
    items: tuple[Item, ...]

    @property
    def attempt_ids(self) -> list[str]:
        return [item.attempt_id for item in self.items]

    def only(self, attempt_ids: set[str]) -> Batch:
        return replace(self, items=tuple(i for i in self.items if i.attempt_id in attempt_ids))

    def item_job(self, item: Item) -> pipeline._Job:
        """A per-message job for one item, to hand it to the per-message helpers."""
        return replace(self.job, attempt_id=item.attempt_id, message_id=item.message_id,
                       retries=item.retries)


@dataclass(frozen=True)
class Reschedule:
    """Attempts to send again in ``countdown`` seconds (rate limited, or a retryable error)."""

    attempt_ids: list[str]
    countdown: float


class _Later(Exception):
    def __init__(self, countdown: float) -> None:
        super().__init__(f"retry in {countdown:.1f}s")
        self.countdown = countdown


def send_bulk(attempt_ids: list[str]) -> list[Reschedule]:
    """Send every still-pending attempt of ``attempt_ids``, one request per batch; returns
    what the task must run again later. Safe to run twice: each batch starts with a CAS."""
    later = []
    for batch in load_batches(attempt_ids):
        try:
            _send_batch(batch)
        except _Later as exc:
            later.append(Reschedule(batch.attempt_ids, exc.countdown))
    return later


# --- loading ------------------------------------------------------------------------------

def load_batches(attempt_ids: list[str]) -> list[Batch]:
    """Pending attempts grouped by what the request carries, split so a phone appears once
    per request and no request exceeds ``bulk_batch_size`` phones."""
    with session_scope() as session:
        rows = session.execute(
            select(Attempt.id, Attempt.message_id, Attempt.channel, Attempt.provider,
                   Attempt.hop, Attempt.retries, Message.request, Message.app_id)
            .join(Message, Message.id == Attempt.message_id)
            .where(Attempt.id.in_(attempt_ids), Attempt.status == "pending",
                   Message.status.not_in(sorted(MESSAGE_FINAL)))).all()
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        content = {k: v for k, v in row.request.items() if k not in _NOT_CONTENT}
        key = (row.channel, row.provider, row.hop, row.app_id, json.dumps(content, sort_keys=True))
        groups.setdefault(key, []).append(row)
    size = get_settings().bulk_batch_size
    return [batch for group in groups.values() for batch in _split(group, size)]


def _split(rows: list[Any], size: int) -> list[Batch]:
    """Batches of at most ``size`` distinct phones (a repeated phone waits for the next)."""
    chunks: list[dict[str, Any]] = []
    for row in rows:
        phone = row.request["to"]["phone"].lstrip("+")
        target = next((c for c in chunks if phone not in c and len(c) < size), None)
        if target is None:
            target = {}
            chunks.append(target)
        target[phone] = row
    return [_batch(chunk) for chunk in chunks]


def _batch(chunk: dict[str, Any]) -> Batch:
    first = next(iter(chunk.values()))
    items = tuple(Item(r.id, r.message_id, phone, r.retries) for phone, r in chunk.items())
    job = pipeline._Job(first.id, first.message_id, first.channel, first.provider, first.hop,
                        max(i.retries for i in items), SendRequest.model_validate(first.request),
                        first.app_id)
    return Batch(job, items)


# --- sending ------------------------------------------------------------------------------

def _send_batch(batch: Batch) -> None:
    """Claim, send once, record: the per-message ``_send_job``, set-based."""
    job = batch.job
    provider = get_provider(job.provider)
    batch_id = str(uuid.uuid4())
    try:
        template = replace(pipeline._phone_outbound(job, provider), attempt_id=batch_id)
        summary = _summary(provider, template)
    except (PermanentError, RetryableError) as exc:
        _fail_before_send(batch, exc)
        return
    _wait_for_slot(batch)
    window = pipeline.deadline_window(job.channel, job.request)
    due = utcnow() + timedelta(seconds=window)
    batch = _claim(batch, summary, due)
    if not batch.items:
        return
    publish(FollowUps(index=[(a, due) for a in batch.attempt_ids]))
    outbound = replace(template, phones=tuple(item.phone for item in batch.items))
    try:
        result = provider.send(outbound)
    except RetryableError as exc:
        _on_retryable(batch, exc)
    except PermanentError as exc:
        _on_permanent(batch, exc)
    except AmbiguousError as exc:
        _on_submitted(batch, None, window, batch_id, ambiguous=exc)
    else:
        _on_submitted(batch, result, window, batch_id)


def _summary(provider: Any, template: OutboundMessage) -> dict[str, Any]:
    """The request as sent, for every attempt's timeline: the phones are left out (each
    message names its own), the batch id (``p_transaction_id``) kept."""
    summary = provider.summarize(template)
    summary.pop("phone", None)
    return {**summary, "bulk": True}


def _claim(batch: Batch, summary: dict[str, Any], due: datetime) -> Batch:
    """One compare-and-set for the whole batch; only the attempts it moved are sent."""
    with session_scope() as session:
        claimed = session.scalars(
            update(Attempt).where(Attempt.id.in_(batch.attempt_ids), Attempt.status == "pending")
            .values(status="sending", deadline_at=due, not_before=None, request_summary=summary,
                    updated_at=utcnow())
            .returning(Attempt.id).execution_options(synchronize_session=False)).all()
    return batch.only(set(claimed))


def _wait_for_slot(batch: Batch) -> None:
    """N phones take N tokens of the account's bucket: sleep briefly, or come back later."""
    settings = get_settings()
    rate = getattr(settings, f"{batch.job.provider}_rate_per_second", None)
    if not rate:
        return
    reservation = RateLimiter(get_redis(), rate).reserve(
        batch.job.provider, settings.max_inline_rate_wait_seconds, cost=len(batch.items))
    if reservation.granted:
        if reservation.wait > 0:
            time.sleep(reservation.wait)
        return
    countdown = reservation.wait + random.uniform(0, 1)
    _postpone(batch, countdown, {})
    raise _Later(countdown)


def _postpone(batch: Batch, countdown: float, values: dict[str, Any]) -> None:
    """Pending attempts get their ``not_before``, so the recovery sweep leaves them be."""
    with session_scope() as session:
        session.execute(
            update(Attempt).where(Attempt.id.in_(batch.attempt_ids), Attempt.status == "pending")
            .values(not_before=utcnow() + timedelta(seconds=countdown), updated_at=utcnow(),
                    **values).execution_options(synchronize_session=False))


# --- outcomes -----------------------------------------------------------------------------

def _fail_before_send(batch: Batch, exc: ProviderError) -> None:
    """Preparing the shared content failed (e.g. the image could not be uploaded)."""
    if isinstance(exc, RetryableError) and batch.job.retries < get_settings().max_send_retries:
        countdown = exc.retry_after or pipeline.backoff(batch.job.retries)
        _postpone(batch, countdown, {"retries": Attempt.retries + 1, "error_reason": exc.reason,
                                     "error_detail": exc.detail})
        raise _Later(countdown)
    for item in batch.items:
        pipeline._end_attempt(batch.item_job(item), "failed", exc, expected=["pending"])


def _on_retryable(batch: Batch, exc: RetryableError) -> None:
    """Nothing was sent: back to ``pending`` for all, or failed once retries are spent."""
    if batch.job.retries >= get_settings().max_send_retries:
        for item in batch.items:
            pipeline._end_attempt(batch.item_job(item), "failed", exc, expected=["sending"])
        return
    countdown = exc.retry_after or pipeline.backoff(batch.job.retries)
    with session_scope() as session:
        session.execute(
            update(Attempt).where(Attempt.id.in_(batch.attempt_ids), Attempt.status == "sending")
            .values(status="pending", retries=Attempt.retries + 1, deadline_at=None,
                    not_before=utcnow() + timedelta(seconds=countdown), error_code=exc.code,
                    error_reason=exc.reason, error_detail=exc.detail, updated_at=utcnow(),
                    **pipeline._response(exc)).execution_options(synchronize_session=False))
        for item in batch.items:
            add_event(session, item.message_id, "retry_scheduled", item.attempt_id,
                      channel=batch.job.channel, reason=exc.reason, code=exc.code,
                      retry_in=round(countdown, 2), retries=item.retries + 1, bulk=True)
    publish(FollowUps(unindex=batch.attempt_ids))
    raise _Later(countdown)


def _on_permanent(batch: Batch, exc: PermanentError) -> None:
    """The gateway refused the request: every attempt fails and falls back on its own."""
    for item in batch.items:
        pipeline._end_attempt(batch.item_job(item), "failed", exc, expected=["sending"])


def _on_submitted(batch: Batch, result: SendResult | None, window: float, batch_id: str,
                  ambiguous: AmbiguousError | None = None) -> None:
    """Accepted (or maybe): each attempt ``submitted`` with its own msg_id and deadline."""
    now = utcnow()
    due = now + timedelta(seconds=window)
    ids = result.provider_message_ids if result is not None else {}
    pmids = {item.attempt_id: ids.get(item.phone) for item in batch.items}
    outcome: object = ambiguous if ambiguous is not None else result
    extra = ({"error_reason": ambiguous.reason, "error_detail": ambiguous.detail}
             if ambiguous is not None else {})
    with session_scope() as session:
        moved = session.scalars(
            update(Attempt).where(Attempt.id.in_(batch.attempt_ids), Attempt.status == "sending")
            .values(status="submitted", submitted_at=now, deadline_at=due, updated_at=now,
                    **pipeline._response(outcome), **extra)
            .returning(Attempt.id).execution_options(synchronize_session=False)).all()
        _record_msg_ids(session, pmids)
        _submitted_events(session, batch, pmids, batch_id, ambiguous, now)
    publish(FollowUps(index=[(a, due) for a in moved]))


def _record_msg_ids(session: Session, pmids: dict[str, str | None]) -> None:
    """Each attempt's own msg_id, unless a report set it first (executemany, one statement)."""
    params = [{"aid": a, "pmid": p} for a, p in pmids.items() if p]
    if params:
        session.execute(
            update(_ATTEMPTS).where(_ATTEMPTS.c.id == bindparam("aid"),
                                    _ATTEMPTS.c.provider_message_id.is_(None))
            .values(provider_message_id=bindparam("pmid")), params)


def _submitted_events(session: Session, batch: Batch, pmids: dict[str, str | None],
                      batch_id: str, ambiguous: AmbiguousError | None, now: datetime) -> None:
    """What ``add_event`` and ``_move_message`` do per message, for the whole batch: a
    ``submitted`` event each, and ``queued → submitted`` with its public ``status`` event."""
    message_ids = [item.message_id for item in batch.items]
    moved = session.execute(
        update(Message).where(Message.id.in_(message_ids), Message.status == "queued")
        .values(status="submitted", event_seq=Message.event_seq + 2, updated_at=now)
        .returning(Message.id, Message.event_seq, Message.app_id, Message.callback_url)
        .execution_options(synchronize_session=False)).all()
    stayed = sorted(set(message_ids) - {m.id for m in moved})
    seqs = {m.id: m.event_seq - 1 for m in moved}
    if stayed:
        seqs.update(session.execute(
            update(Message).where(Message.id.in_(stayed))
            .values(event_seq=Message.event_seq + 1)
            .returning(Message.id, Message.event_seq)
            .execution_options(synchronize_session=False)).tuples().all())
    job, reason = batch.job, ambiguous.reason if ambiguous else None
    session.execute(insert(Event), [
        {"message_id": item.message_id, "app_id": job.app_id, "seq": seqs[item.message_id],
         "attempt_id": item.attempt_id, "type": "submitted", "created_at": now,
         "payload": {"channel": job.channel, "provider": job.provider, "batch": batch_id,
                     "provider_message_id": pmids[item.attempt_id], "ambiguous": reason}}
        for item in batch.items])
    _status_events(session, moved, job.app_id, now)


def _status_events(session: Session, moved: list[Any], app_id: str, now: datetime) -> None:
    """The public ``status: submitted`` events, with a webhook delivery where one is due."""
    if not moved:
        return
    rows = [{"message_id": m.id, "app_id": m.app_id, "seq": m.event_seq, "type": "status",
             "created_at": now, "payload": {"status": "submitted", "reason": None}}
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
         "status": "pending", "attempts": 0, "created_at": now}
        for event_id, m, url in zip(event_ids, moved, urls, strict=True) if url])
