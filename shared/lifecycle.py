"""The status state machine, as pure functions (no I/O), so every transition is unit-tested.

Two levels:

* an **attempt** (one channel try): ``pending → sending → submitted → delivered → seen``, ending
  badly in ``failed`` (refused at send), ``undelivered`` (provider says it never arrived) or
  ``expired`` (our deadline passed). A positive report that arrives after an attempt ended badly
  is still applied to it and flagged ``late``: the user did get that message.
* a **message**: ``queued → submitted → delivered → seen``, terminal ``failed``/``expired`` when
  the route is exhausted. ``replied`` is an event and implies ``seen``. A message with a
  future ``send_at`` starts ``scheduled`` and is ``release``d to ``queued`` when it is due; one
  not yet sent on any hop may be ``cancel``led (``cancelled``, terminal).

Statuses only move forward by rank; duplicate and out-of-order reports become no-ops.

A hop to an address that opted out is never sent: its ``pending`` attempt ends ``suppressed``
(engine edge ``suppress``, not ``failed``), and a message whose every hop was suppressed ends
``suppressed``.

A ``pending`` attempt of a later hop is ``cancelled`` (event ``cancel``) when an earlier hop
turns out delivered after all: the fallback is no longer needed, and it never left.

The engine's own edges go through here too: ``claim`` (``pending → sending``: this worker owns
the attempt, nothing has left yet) and ``retry`` (``sending → pending``: nothing was sent, or
the provider said to try again). A ``deadline`` ends a ``pending`` attempt as well: the hop's
window keeps running while its provider's circuit is open, so the route still moves on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AttemptStatus(StrEnum):
    """Where one channel try stands."""

    PENDING = "pending"
    SENDING = "sending"
    SUBMITTED = "submitted"
    DELIVERED = "delivered"
    SEEN = "seen"
    FAILED = "failed"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    SUPPRESSED = "suppressed"  # never sent: the recipient opted out (shared.consent)


class MessageStatus(StrEnum):
    """Where a message stands, as producers see it."""

    QUEUED = "queued"
    SUBMITTED = "submitted"
    DELIVERED = "delivered"
    SEEN = "seen"
    FAILED = "failed"
    EXPIRED = "expired"
    SUPPRESSED = "suppressed"  # every hop was to an address that opted out
    SCHEDULED = "scheduled"  # waits for its send_at (shared.sendtime)
    CANCELLED = "cancelled"  # cancelled by the producer before any hop was sent


class CallbackStatus(StrEnum):
    """A stored provider callback: waiting, applied, unreadable, or matching nothing."""

    RECEIVED = "received"
    PROCESSED = "processed"
    INVALID = "invalid"
    ORPHAN = "orphan"


class DeliveryStatus(StrEnum):
    """A webhook delivery to a producer: waiting (or retrying), done, or given up."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class RunStatus(StrEnum):
    """A message flow's run: created, asking its steps, and how it ended."""

    STARTING = "starting"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


A = AttemptStatus
ATTEMPT_RANK = {A.PENDING: 0, A.SENDING: 1, A.SUBMITTED: 2, A.DELIVERED: 3, A.SEEN: 4}
ATTEMPT_ENDED_BADLY = frozenset({A.FAILED, A.UNDELIVERED, A.EXPIRED, A.SUPPRESSED})
ATTEMPT_CANCELLED = A.CANCELLED  # never sent: an earlier hop was delivered first
ATTEMPT_POSITIVE = frozenset({A.DELIVERED, A.SEEN})
MESSAGE_RANK = {MessageStatus.QUEUED: 0, MessageStatus.SUBMITTED: 1,
                MessageStatus.DELIVERED: 2, MessageStatus.SEEN: 3}
MESSAGE_FINAL = frozenset({MessageStatus.FAILED, MessageStatus.EXPIRED,
                           MessageStatus.SUPPRESSED})
# Ended before anything was sent: no report can follow, so nothing reopens it.
MESSAGE_CLOSED = frozenset({*MESSAGE_FINAL, MessageStatus.CANCELLED})
# Where a producer's cancel may still land (nothing sent on any hop is checked on attempts).
MESSAGE_CANCELLABLE = frozenset({MessageStatus.SCHEDULED, MessageStatus.QUEUED})
# The engine's own edges: event -> (from, to).
_ENGINE_EDGES = {"claim": (A.PENDING, A.SENDING), "retry": (A.SENDING, A.PENDING),
                 "cancel": (A.PENDING, A.CANCELLED), "suppress": (A.PENDING, A.SUPPRESSED)}

# What a positive event means as a status (a reply proves the message was seen).
_POSITIVE = {"submitted": A.SUBMITTED, "delivered": A.DELIVERED, "seen": A.SEEN,
             "replied": A.SEEN}
# Negative events and the attempt statuses they lead to; all of them move the route on.
_NEGATIVE = {"undelivered": A.UNDELIVERED, "expired": A.EXPIRED, "deadline": A.EXPIRED,
             "failed": A.FAILED}


@dataclass(frozen=True)
class Transition:
    """The outcome of applying one event: the new status and what the caller must do."""

    status: str
    changed: bool
    late: bool = False  # a positive report on an attempt that had already ended badly
    falls_back: bool = False  # the attempt ended badly just now: move to the next hop


def apply_attempt(current: str, event: str) -> Transition:
    """Apply ``event`` (``submitted|delivered|seen|replied|undelivered|expired|deadline|failed|
    interim``, or the engine's ``claim|retry|cancel``) to an attempt in status ``current``.
    Only a ``pending`` attempt can be cancelled, and a cancelled one takes no further event."""
    if event not in _POSITIVE and event not in _NEGATIVE and event not in _ENGINE_EDGES \
            and event != "interim":
        raise ValueError(f"unknown attempt event {event!r}")
    current = AttemptStatus(current)
    if current == ATTEMPT_CANCELLED or event == "interim":
        return Transition(current, changed=False)
    if event in _ENGINE_EDGES:  # a sent one may have left: a cancel leaves it to its report
        source, target = _ENGINE_EDGES[event]
        return Transition(target, changed=True) if current == source \
            else Transition(current, changed=False)
    if event in _POSITIVE:
        return _apply_positive(current, _POSITIVE[event])
    return _apply_negative(current, event)


def _apply_positive(current: str, target: str) -> Transition:
    if current in ATTEMPT_ENDED_BADLY:
        if target == "submitted":
            return Transition(current, changed=False)
        return Transition(target, changed=True, late=True)
    if ATTEMPT_RANK[target] > ATTEMPT_RANK[current]:
        return Transition(target, changed=True)
    return Transition(current, changed=False)


def _apply_negative(current: str, event: str) -> Transition:
    if current in ATTEMPT_ENDED_BADLY or ATTEMPT_RANK[current] >= ATTEMPT_RANK["delivered"]:
        return Transition(current, changed=False)
    if event == "failed" and current == A.SUBMITTED:
        return Transition(current, changed=False)  # the provider accepted it; reports decide
    return Transition(_NEGATIVE[event], changed=True, falls_back=True)


def engine_edge(event: str) -> tuple[AttemptStatus, AttemptStatus]:
    """``(from, to)`` of an engine edge, for set-based compare-and-set updates."""
    return _ENGINE_EDGES[event]


def apply_message(current: str, event: str) -> MessageStatus:
    """Apply ``event`` (a positive event, ``failed``/``expired`` when the route is exhausted,
    ``release`` when a scheduled message is due, ``cancel`` from the producer) to a message.
    A cancelled message takes no further event. A late delivery report still turns a ``failed`` or ``expired`` message into
    ``delivered``/``seen``: the person did get it (e.g. the Viber message arrived after its
    SMS fallback had failed), and a status that hides that would mislead the producer."""
    current = MessageStatus(current)
    if current == MessageStatus.CANCELLED:
        return current
    if event == "release":
        return MessageStatus.QUEUED if current == MessageStatus.SCHEDULED else current
    if event == "cancel":
        return MessageStatus.CANCELLED if current in MESSAGE_CANCELLABLE else current
    if current == MessageStatus.SCHEDULED:
        current = MessageStatus.QUEUED  # (a report cannot come before it is sent)
    if event in _POSITIVE:
        target = MessageStatus(_POSITIVE[event])
        if current in MESSAGE_FINAL:
            return target if target != MessageStatus.SUBMITTED else current
        return target if MESSAGE_RANK[target] > MESSAGE_RANK[current] else current
    if event in MESSAGE_FINAL:
        if current in MESSAGE_FINAL or \
                MESSAGE_RANK[current] >= MESSAGE_RANK[MessageStatus.DELIVERED]:
            return current  # a message someone received does not fail afterwards
        return MessageStatus(event)
    raise ValueError(f"unknown message event {event!r}")


def route_outcome(route_length: int, hop: int, attempt_status: str) -> tuple[str, int | str]:
    """After the attempt at ``hop`` ended badly: ``("fallback", next_hop)`` when the route has
    another channel, else ``("final", "expired" | "suppressed" | "failed")`` for the message
    (``suppressed`` only when the caller says every hop was: see ``worker.outcomes``)."""
    if hop + 1 < route_length:
        return "fallback", hop + 1
    final = {A.EXPIRED: MessageStatus.EXPIRED, A.SUPPRESSED: MessageStatus.SUPPRESSED}
    return "final", final.get(AttemptStatus(attempt_status), MessageStatus.FAILED)


def is_message_final(status: str) -> bool:
    return status in MESSAGE_CLOSED
