"""The status state machine, as pure functions (no I/O), so every transition is unit-tested.

Two levels:

* an **attempt** (one channel try): ``pending → sending → submitted → delivered → seen``, ending
  badly in ``failed`` (refused at send), ``undelivered`` (provider says it never arrived) or
  ``expired`` (our deadline passed). A positive report that arrives after an attempt ended badly
  is still applied to it and flagged ``late``: the user did get that message.
* a **message**: ``queued → submitted → delivered → seen``, terminal ``failed``/``expired`` when
  the route is exhausted. ``replied`` is an event and implies ``seen``.

Statuses only move forward by rank; duplicate and out-of-order reports become no-ops.

A ``pending`` attempt of a later hop is ``cancelled`` (event ``cancel``) when an earlier hop
turns out delivered after all: the fallback is no longer needed, and it never left.
"""

from __future__ import annotations

from dataclasses import dataclass

ATTEMPT_RANK = {"pending": 0, "sending": 1, "submitted": 2, "delivered": 3, "seen": 4}
ATTEMPT_ENDED_BADLY = frozenset({"failed", "undelivered", "expired"})
ATTEMPT_CANCELLED = "cancelled"  # never sent: an earlier hop was delivered first
MESSAGE_RANK = {"queued": 0, "submitted": 1, "delivered": 2, "seen": 3}
MESSAGE_FINAL = frozenset({"failed", "expired"})

# What a positive event means as a status (a reply proves the message was seen).
_POSITIVE = {"submitted": "submitted", "delivered": "delivered", "seen": "seen", "replied": "seen"}
# Negative events and the attempt statuses they lead to; all of them move the route on.
_NEGATIVE = {"undelivered": "undelivered", "expired": "expired", "deadline": "expired",
             "failed": "failed"}


@dataclass(frozen=True)
class Transition:
    """The outcome of applying one event: the new status and what the caller must do."""

    status: str
    changed: bool
    late: bool = False  # a positive report on an attempt that had already ended badly
    falls_back: bool = False  # the attempt ended badly just now: move to the next hop


def apply_attempt(current: str, event: str) -> Transition:
    """Apply ``event`` (``submitted|delivered|seen|replied|undelivered|expired|deadline|failed|
    interim|cancel``) to an attempt in status ``current``. Only a ``pending`` attempt can be
    cancelled, and a cancelled one takes no further event."""
    if event not in _POSITIVE and event not in _NEGATIVE and event not in ("interim", "cancel"):
        raise ValueError(f"unknown attempt event {event!r}")
    if current == ATTEMPT_CANCELLED or event == "interim":
        return Transition(current, changed=False)
    if event == "cancel":
        if current == "pending":
            return Transition(ATTEMPT_CANCELLED, changed=True)
        return Transition(current, changed=False)  # it may have left: the report is recorded
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
    if event == "deadline" and current == "pending":
        return Transition(current, changed=False)  # never sent: nothing to time out
    if event == "failed" and current == "submitted":
        return Transition(current, changed=False)  # the provider accepted it; reports decide
    return Transition(_NEGATIVE[event], changed=True, falls_back=True)


def apply_message(current: str, event: str) -> str:
    """Apply ``event`` (a positive event, or ``failed``/``expired`` when the route is exhausted)
    to a message. A late delivery report still turns a ``failed`` or ``expired`` message into
    ``delivered``/``seen``: the person did get it (e.g. the Viber message arrived after its
    SMS fallback had failed), and a status that hides that would mislead the producer."""
    if event in _POSITIVE:
        target = _POSITIVE[event]
        if current in MESSAGE_FINAL:
            return target if target != "submitted" else current
        return target if MESSAGE_RANK[target] > MESSAGE_RANK[current] else current
    if event in MESSAGE_FINAL:
        if current in MESSAGE_FINAL or MESSAGE_RANK[current] >= MESSAGE_RANK["delivered"]:
            return current  # a message someone received does not fail afterwards
        return event
    raise ValueError(f"unknown message event {event!r}")


def route_outcome(route_length: int, hop: int, attempt_status: str) -> tuple[str, int | str]:
    """After the attempt at ``hop`` ended badly: ``("fallback", next_hop)`` when the route has
    another channel, else ``("final", "expired" | "failed")`` for the message."""
    if hop + 1 < route_length:
        return "fallback", hop + 1
    return "final", "expired" if attempt_status == "expired" else "failed"


def is_message_final(status: str) -> bool:
    return status in MESSAGE_FINAL
