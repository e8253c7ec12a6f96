"""Provider reports: apply one stored callback to its attempt, or hand it to its handlers.

A report about one of our messages (delivered, seen, undelivered, a reply, ...) moves its
attempt through ``shared.lifecycle``; positive ones move the message and cancel fallbacks that
have not left, negative ones move the route on. Everything else a provider tells us (a contact,
a poke, a native flow's result, an inbound message) and what a reply means to a flow reach
their features through ``shared.handlers``.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared import handlers, metrics
from shared.lifecycle import (
    ATTEMPT_POSITIVE,
    AttemptStatus,
    CallbackStatus,
    Transition,
    apply_attempt,
)
from shared.messages import add_event
from shared.models import Attempt, Callback, utcnow
from shared.providers import get_provider
from shared.providers.base import MESSAGE_EVENT_KINDS, CallbackError, ProviderEvent
from shared.uow import UnitOfWork, unit_of_work
from worker import route
from worker.timing import RetryLater

UNMATCHED_TRIES = 5  # a report's attempt may still be committing; after this, an orphan


def handle_callback(callback_id: int) -> None:
    """Apply one stored callback. Raises ``RetryLater`` if its attempt is not known yet.

    The unmatched case commits its bumped ``tries`` before asking for the retry: raised
    inside the transaction, the increment rolled back with it and the retries never ended.
    """
    with unit_of_work() as work:
        retry = _handle_callback(work, callback_id)
    if retry is not None:
        raise retry


def _handle_callback(work: UnitOfWork, callback_id: int) -> RetryLater | None:
    callback = work.session.get(Callback, callback_id)
    if callback is None or callback.status != CallbackStatus.RECEIVED:
        return None
    try:
        event = get_provider(callback.provider).parse_callback(callback.params)
    except CallbackError as exc:
        callback.status, callback.error = CallbackStatus.INVALID, str(exc)
        return None
    if event.kind not in MESSAGE_EVENT_KINDS:
        handlers.dispatch(work, handlers.Occurrence(
            event.kind, provider=callback.provider, event=event, answer=callback.answer))
    else:
        attempt = _find_attempt(work.session, callback.provider, event)
        if attempt is None:
            return _unmatched(callback)
        callback.attempt_id = attempt.id
        apply_event(work, attempt, event)
    callback.status, callback.processed_at = CallbackStatus.PROCESSED, utcnow()
    return None


def _unmatched(callback: Callback) -> RetryLater | None:
    """A report for an id we do not know (yet): try a few times, then keep it as an orphan.

    Returns the retry to ask for once the bumped ``tries`` has committed."""
    callback.tries += 1
    if callback.tries >= UNMATCHED_TRIES:
        callback.status = CallbackStatus.ORPHAN
        callback.error = "no attempt matches this report"
        return None
    return RetryLater(2.0 ** callback.tries, "report for an unknown attempt")


def _find_attempt(session: Session, provider: str, event: ProviderEvent) -> Attempt | None:
    """The report's attempt: by the provider's id first, else by our attempt id (a report
    may come before the send's answer gave us the provider's id, or carry only one of
    them). A report that names another channel than the attempt it matched is about that
    message's hop on its channel (a hop the provider sent itself, under the first one's
    ids); until that hop's attempt exists, it matches nothing yet."""
    attempt = None
    if event.provider_message_id:
        attempt = session.scalars(select(Attempt).where(
            Attempt.provider_message_id == event.provider_message_id)).first()
    if attempt is None and event.attempt_ref:
        attempt = session.get(Attempt, event.attempt_ref)
    if attempt is not None and _names_another_hop(attempt, event):
        attempt = session.scalars(select(Attempt).where(
            Attempt.message_id == attempt.message_id, Attempt.channel == event.channel)
        ).first()
    if attempt is not None and attempt.provider != provider:
        return None
    return attempt


def _names_another_hop(attempt: Attempt, event: ProviderEvent) -> bool:
    """The report names a channel of the message's route other than the matched attempt's.
    A channel the route does not have says nothing about hops (e.g. an SMS reply the gateway
    reports in its Viber report shape): it stays with the attempt it matched."""
    return event.channel not in (None, attempt.channel) and \
        event.channel in attempt.message.route


def apply_event(work: UnitOfWork, attempt: Attempt, event: ProviderEvent) -> None:
    """Apply a report to its attempt and do what the new status means."""
    session = work.session
    transition, first_delivery = _move_attempt(session, attempt, event)
    if event.provider_message_id:
        session.execute(update(Attempt).where(
            Attempt.id == attempt.id, Attempt.provider_message_id.is_(None),
        ).values(provider_message_id=event.provider_message_id))
    add_event(session, attempt.message_id, "report", attempt.id, channel=attempt.channel,
              kind=event.kind, status=event.status, reason=event.reason,
              applied=transition.changed, late=transition.late, raw=dict(event.raw))
    if event.data.get("opt_out"):  # the provider says the person blocked us there
        handlers.dispatch(work, handlers.Occurrence(
            "opt_out", provider=attempt.provider, event=event, message_id=attempt.message_id,
            attempt_id=attempt.id))
    if event.kind == "replied":
        add_event(session, attempt.message_id, "replied", attempt.id, channel=attempt.channel,
                  text=event.text, **event.data)
        handlers.dispatch(work, handlers.Occurrence(
            "reply", provider=attempt.provider, event=event, message_id=attempt.message_id,
            attempt_id=attempt.id))
    if transition.changed:
        _after_move(work, attempt, event, transition, first_delivery)


def _move_attempt(session: Session, attempt: Attempt,
                  event: ProviderEvent) -> tuple[Transition, bool]:
    """The CAS loop: the transition applied, and whether it is the first positive report."""
    now = utcnow()
    for _ in range(route.CAS_TRIES):
        current = session.execute(
            select(Attempt.status).where(Attempt.id == attempt.id)).scalar_one()
        transition = apply_attempt(current, event.kind)
        if not transition.changed:
            return transition, False
        values: dict = {"status": transition.status}
        first = transition.status in ATTEMPT_POSITIVE and attempt.delivered_at is None
        if transition.status in ATTEMPT_POSITIVE:
            values.update(deadline_at=None, delivered_at=attempt.delivered_at or now)
            if transition.status == AttemptStatus.SEEN:
                values["seen_at"] = now
        if transition.falls_back:
            values.update(deadline_at=None, error_reason=event.reason, error_code=event.status)
        if route.cas(session, Attempt, attempt.id, [current], **values):
            return transition, first
    raise RuntimeError(f"attempt {attempt.id} kept changing under us")


def _after_move(work: UnitOfWork, attempt: Attempt, event: ProviderEvent,
                transition: Transition, first_delivery: bool) -> None:
    """Delivered: move the message and cancel later hops not sent. Ended badly: fall back."""
    if transition.status in ATTEMPT_POSITIVE:
        work.unindex(attempt.id)
        route.move_message(work.session, attempt.message_id, transition.status)
        route.cancel_later_hops(work.session, attempt)
        if first_delivery:
            metrics.delivery_report(attempt.provider, attempt.channel, attempt.submitted_at,
                                    utcnow())
    if transition.late:
        metrics.late_report(attempt.provider, attempt.channel)
    if transition.falls_back:
        work.unindex(attempt.id)
        route.advance(work, attempt.message_id, attempt.hop, attempt.channel,
                      transition.status, event.reason)
