"""The bulk path's back half: send a batch of first-hop attempts in ONE gateway request.

A campaign (``shared.campaigns``) creates one message and one pending attempt per phone; this
module sends up to ``bulk_batch_size`` of them with the gateway's multi-phone request (the
repeated ``phone`` field) and maps each phone's ``msg_id`` back onto its own attempt. What
makes it cheaper than the per-message path is the shape of the work, not fewer guarantees:
one bulk compare-and-set claims the batch (``pending → sending``), one HTTP request carries
it, a few set-based statements record the outcome, and one ``ZADD`` indexes the deadlines.

It is the engine's one send path (``worker.engine.send_batch``) with a batch of many, and
its outcomes are the per-message ones, set-based (``worker.outcomes``):

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
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from shared.db import session_scope
from shared.lifecycle import MESSAGE_FINAL, AttemptStatus, MessageStatus
from shared.models import Attempt, Message
from shared.providers import get_provider
from shared.schemas import SendRequest
from shared.settings import get_settings
from worker import engine
from worker.outcomes import Batch, Item
from worker.timing import RetryLater

_NOT_CONTENT = ("to", "metadata", "idempotency_key", "callback_url")


@dataclass(frozen=True)
class Reschedule:
    """Attempts to send again in ``countdown`` seconds (rate limited, or a retryable error)."""

    attempt_ids: list[str]
    countdown: float


def send_bulk(attempt_ids: list[str]) -> list[Reschedule]:
    """Send every still-pending attempt of ``attempt_ids``, one request per batch; returns
    what the task must run again later. Safe to run twice: each batch starts with a CAS."""
    later = []
    for batch in load_batches(attempt_ids):
        try:
            engine.send_batch(batch, get_provider(batch.provider), bulk=True)
        except RetryLater as exc:
            later.append(Reschedule(batch.attempt_ids, exc.countdown))
    return later


def load_batches(attempt_ids: list[str]) -> list[Batch]:
    """Pending attempts grouped by what the request carries, split so a phone appears once
    per request and no request exceeds ``bulk_batch_size`` phones."""
    with session_scope() as session:
        rows = session.execute(
            select(Attempt.id, Attempt.message_id, Attempt.channel, Attempt.provider,
                   Attempt.hop, Attempt.retries, Message.request, Message.app_id,
                   Message.valid_until, Message.quiet_hours, Message.priority)
            .join(Message, Message.id == Attempt.message_id)
            .where(Attempt.id.in_(attempt_ids), Attempt.status == AttemptStatus.PENDING,
                   Message.status.not_in(sorted({*MESSAGE_FINAL, MessageStatus.SCHEDULED})))
        ).all()
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        content = {k: v for k, v in row.request.items() if k not in _NOT_CONTENT}
        key = (row.channel, row.provider, row.hop, row.app_id, row.priority,
               json.dumps(content, sort_keys=True))
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
    """The first row's content, channel and hop stand for the whole batch (only the phone
    differs between its messages)."""
    first = next(iter(chunk.values()))
    items = tuple(Item(r.id, r.message_id, r.retries, phone, r.valid_until, r.quiet_hours)
                  for phone, r in chunk.items())
    return Batch(first.channel, first.provider, first.hop, first.app_id,
                 SendRequest.model_validate(first.request), items, priority=first.priority)
