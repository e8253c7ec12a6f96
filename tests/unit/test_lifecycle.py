"""The status state machine (shared.lifecycle): every transition, table-driven.

The expected tables below are written out by hand from the issue text and the module docstring
(not derived from the implementation's rank dictionaries), so a mistake in either shows up.
"""

from __future__ import annotations

import pytest

from shared.lifecycle import (
    MESSAGE_FINAL,
    Transition,
    apply_attempt,
    apply_message,
    is_message_final,
    route_outcome,
)

# --------------------------------------------------------------------------------------
# Attempts
# --------------------------------------------------------------------------------------

ATTEMPT_STATUSES = (
    "pending", "sending", "submitted", "delivered", "seen", "failed", "undelivered", "expired",
)
ATTEMPT_EVENTS = (
    "submitted", "delivered", "seen", "replied",
    "undelivered", "expired", "deadline", "failed", "interim",
)

# Cell notation: "-" no change; "x" moves to x; "x late" moves to x flagged late;
# "x fb" moves to x and the route falls back.
_ATTEMPT_TABLE = {
    #               submitted    delivered       seen         replied      undelivered
    #               expired      deadline        failed       interim
    "pending":     ("submitted", "delivered", "seen", "seen", "undelivered fb",
                    "expired fb", "expired fb", "failed fb", "-"),
    "sending":     ("submitted", "delivered", "seen", "seen", "undelivered fb",
                    "expired fb", "expired fb", "failed fb", "-"),
    "submitted":   ("-", "delivered", "seen", "seen", "undelivered fb",
                    "expired fb", "expired fb", "-", "-"),
    "delivered":   ("-", "-", "seen", "seen", "-",
                    "-", "-", "-", "-"),
    "seen":        ("-", "-", "-", "-", "-",
                    "-", "-", "-", "-"),
    "failed":      ("-", "delivered late", "seen late", "seen late", "-",
                    "-", "-", "-", "-"),
    "undelivered": ("-", "delivered late", "seen late", "seen late", "-",
                    "-", "-", "-", "-"),
    "expired":     ("-", "delivered late", "seen late", "seen late", "-",
                    "-", "-", "-", "-"),
}


def _expected_transition(current: str, cell: str) -> Transition:
    if cell == "-":
        return Transition(current, changed=False)
    status, _, flag = cell.partition(" ")
    return Transition(status, changed=True, late=flag == "late", falls_back=flag == "fb")


ATTEMPT_CASES = [
    pytest.param(current, event, _expected_transition(current, cell), id=f"{current}-{event}")
    for current, row in _ATTEMPT_TABLE.items()
    for event, cell in zip(ATTEMPT_EVENTS, row, strict=True)
]


def test_attempt_table_covers_every_status_and_event() -> None:
    assert tuple(_ATTEMPT_TABLE) == ATTEMPT_STATUSES
    assert len(ATTEMPT_CASES) == len(ATTEMPT_STATUSES) * len(ATTEMPT_EVENTS)


@pytest.mark.parametrize(("current", "event", "expected"), ATTEMPT_CASES)
def test_apply_attempt_transition(current: str, event: str, expected: Transition) -> None:
    assert apply_attempt(current, event) == expected


@pytest.mark.parametrize("event", ATTEMPT_EVENTS)
@pytest.mark.parametrize("current", ATTEMPT_STATUSES)
def test_apply_attempt_is_idempotent(current: str, event: str) -> None:
    """Applying the same report twice: the second one is always a no-op."""
    first = apply_attempt(current, event)
    second = apply_attempt(first.status, event)
    assert second == Transition(first.status, changed=False)


@pytest.mark.parametrize("event", ATTEMPT_EVENTS)
@pytest.mark.parametrize("current", ATTEMPT_STATUSES)
def test_apply_attempt_never_moves_a_live_status_backwards(current: str, event: str) -> None:
    rank = {"pending": 0, "sending": 1, "submitted": 2, "delivered": 3, "seen": 4}
    result = apply_attempt(current, event)
    if current in rank and result.status in rank:
        assert rank[result.status] >= rank[current]
    if not result.changed:
        assert result.status == current
    assert not (result.late and result.falls_back)


def test_attempt_seen_before_delivered_then_delivered_is_ignored() -> None:
    seen = apply_attempt("submitted", "seen")
    assert seen == Transition("seen", changed=True)
    assert apply_attempt(seen.status, "delivered") == Transition("seen", changed=False)


def test_attempt_delivered_after_seen_is_ignored() -> None:
    assert apply_attempt("seen", "delivered") == Transition("seen", changed=False)


def test_attempt_reply_implies_seen() -> None:
    assert apply_attempt("delivered", "replied") == Transition("seen", changed=True)
    # a second reply (another text) does not change the status again
    assert apply_attempt("seen", "replied") == Transition("seen", changed=False)


@pytest.mark.parametrize("ended", ["expired", "undelivered", "failed"])
@pytest.mark.parametrize(("event", "status"), [("delivered", "delivered"), ("seen", "seen"),
                                               ("replied", "seen")])
def test_late_positive_report_after_a_bad_end_is_applied_and_flagged_late(
    ended: str, event: str, status: str,
) -> None:
    """A Viber attempt that already fell back still records the late report."""
    result = apply_attempt(ended, event)
    assert result == Transition(status, changed=True, late=True, falls_back=False)


def test_late_delivered_then_seen_on_a_fallen_back_attempt() -> None:
    fell_back = apply_attempt("submitted", "deadline")
    assert fell_back == Transition("expired", changed=True, falls_back=True)
    late = apply_attempt(fell_back.status, "delivered")
    assert late == Transition("delivered", changed=True, late=True)
    # it no longer counts as ended badly: the next report moves it normally, not "late"
    assert apply_attempt(late.status, "seen") == Transition("seen", changed=True)
    # and it cannot fall back a second time
    assert apply_attempt(late.status, "expired") == Transition("delivered", changed=False)


@pytest.mark.parametrize("ended", ["expired", "undelivered", "failed"])
def test_late_submitted_after_a_bad_end_is_ignored(ended: str) -> None:
    assert apply_attempt(ended, "submitted") == Transition(ended, changed=False)


@pytest.mark.parametrize("current", ["delivered", "seen"])
@pytest.mark.parametrize("event", ["undelivered", "expired", "deadline", "failed"])
def test_negative_events_after_delivery_are_ignored(current: str, event: str) -> None:
    result = apply_attempt(current, event)
    assert result == Transition(current, changed=False)
    assert not result.falls_back


@pytest.mark.parametrize("ended", ["expired", "undelivered", "failed"])
@pytest.mark.parametrize("event", ["undelivered", "expired", "deadline", "failed"])
def test_second_negative_event_does_not_fall_back_twice(ended: str, event: str) -> None:
    assert apply_attempt(ended, event) == Transition(ended, changed=False)


def test_failed_after_the_provider_accepted_is_ignored() -> None:
    assert apply_attempt("submitted", "failed") == Transition("submitted", changed=False)


@pytest.mark.parametrize("event", ["bogus", "", "DELIVERED", "queued", "pending", "sent"])
def test_apply_attempt_unknown_event_raises(event: str) -> None:
    with pytest.raises(ValueError, match="unknown attempt event"):
        apply_attempt("submitted", event)


# --------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------

MESSAGE_STATUSES = ("queued", "submitted", "delivered", "seen", "failed", "expired")
MESSAGE_EVENTS = ("submitted", "delivered", "seen", "replied", "failed", "expired")

_MESSAGE_TABLE = {
    #             submitted    delivered    seen    replied  failed       expired
    "queued":    ("submitted", "delivered", "seen", "seen", "failed", "expired"),
    "submitted": ("submitted", "delivered", "seen", "seen", "failed", "expired"),
    "delivered": ("delivered", "delivered", "seen", "seen", "delivered", "delivered"),
    "seen":      ("seen", "seen", "seen", "seen", "seen", "seen"),
    # a late delivery turns a failed or expired message into delivered (module docstring)
    "failed":    ("failed", "delivered", "seen", "seen", "failed", "failed"),
    "expired":   ("expired", "delivered", "seen", "seen", "expired", "expired"),
}

MESSAGE_CASES = [
    pytest.param(current, event, expected, id=f"{current}-{event}")
    for current, row in _MESSAGE_TABLE.items()
    for event, expected in zip(MESSAGE_EVENTS, row, strict=True)
]


def test_message_table_covers_every_status_and_event() -> None:
    assert tuple(_MESSAGE_TABLE) == MESSAGE_STATUSES
    assert len(MESSAGE_CASES) == len(MESSAGE_STATUSES) * len(MESSAGE_EVENTS)


@pytest.mark.parametrize(("current", "event", "expected"), MESSAGE_CASES)
def test_apply_message_transition(current: str, event: str, expected: str) -> None:
    assert apply_message(current, event) == expected


@pytest.mark.parametrize("event", MESSAGE_EVENTS)
@pytest.mark.parametrize("current", MESSAGE_STATUSES)
def test_apply_message_is_idempotent(current: str, event: str) -> None:
    once = apply_message(current, event)
    assert apply_message(once, event) == once


def test_message_seen_before_delivered() -> None:
    status = apply_message("submitted", "seen")
    assert status == "seen"
    assert apply_message(status, "delivered") == "seen"
    assert apply_message(status, "submitted") == "seen"


def test_message_delivered_after_seen_is_ignored() -> None:
    assert apply_message("seen", "delivered") == "seen"


def test_message_replied_implies_seen() -> None:
    assert apply_message("queued", "replied") == "seen"


@pytest.mark.parametrize("current", ["delivered", "seen"])
@pytest.mark.parametrize("event", ["failed", "expired"])
def test_received_message_never_becomes_final_failure(current: str, event: str) -> None:
    assert apply_message(current, event) == current


@pytest.mark.parametrize("event", ["undelivered", "deadline", "interim", "bogus", "", "queued"])
def test_apply_message_unknown_event_raises(event: str) -> None:
    with pytest.raises(ValueError, match="unknown message event"):
        apply_message("submitted", event)


# --------------------------------------------------------------------------------------
# Route outcome
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("route_length", "hop", "attempt_status", "expected"),
    [
        pytest.param(2, 0, "expired", ("fallback", 1), id="viber-expired-falls-back-to-sms"),
        pytest.param(2, 0, "undelivered", ("fallback", 1), id="viber-undelivered-falls-back"),
        pytest.param(2, 0, "failed", ("fallback", 1), id="viber-refused-falls-back"),
        pytest.param(3, 1, "expired", ("fallback", 2), id="middle-hop-falls-back"),
        pytest.param(2, 1, "expired", ("final", "expired"), id="last-hop-expired"),
        pytest.param(2, 1, "undelivered", ("final", "failed"), id="last-hop-undelivered"),
        pytest.param(2, 1, "failed", ("final", "failed"), id="last-hop-failed"),
        pytest.param(1, 0, "expired", ("final", "expired"), id="single-hop-expired"),
        pytest.param(1, 0, "undelivered", ("final", "failed"), id="single-hop-undelivered"),
        pytest.param(1, 0, "failed", ("final", "failed"), id="single-hop-failed"),
        pytest.param(2, 0, "suppressed", ("fallback", 1), id="opted-out-hop-falls-back"),
        pytest.param(2, 1, "suppressed", ("final", "suppressed"), id="last-hop-suppressed"),
    ],
)
def test_route_outcome(route_length: int, hop: int, attempt_status: str,
                       expected: tuple[str, int | str]) -> None:
    assert route_outcome(route_length, hop, attempt_status) == expected


def test_route_outcome_final_status_is_a_final_message_status() -> None:
    for status in ("expired", "undelivered", "failed"):
        kind, value = route_outcome(1, 0, status)
        assert kind == "final"
        assert is_message_final(str(value))
        assert value in MESSAGE_FINAL


@pytest.mark.parametrize(
    ("status", "final"),
    [("failed", True), ("expired", True), ("queued", False), ("submitted", False),
     ("delivered", False), ("seen", False)],
)
def test_is_message_final(status: str, final: bool) -> None:
    assert is_message_final(status) is final


# --- cancelling a fallback that is no longer needed --------------------------------------

def test_only_a_pending_attempt_can_be_cancelled() -> None:
    assert apply_attempt("pending", "cancel") == Transition("cancelled", changed=True)
    for status in ("sending", "submitted", "delivered", "failed", "expired"):
        assert apply_attempt(status, "cancel") == Transition(status, changed=False)


def test_a_cancelled_attempt_takes_no_further_event() -> None:
    for event in ("submitted", "delivered", "seen", "deadline", "failed", "cancel"):
        assert apply_attempt("cancelled", event) == Transition("cancelled", changed=False)


# --- the engine's own edges --------------------------------------------------------------

@pytest.mark.parametrize(("event", "source", "target"), [
    ("claim", "pending", "sending"), ("retry", "sending", "pending")])
def test_engine_edges_move_only_from_their_source(event: str, source: str, target: str) -> None:
    assert apply_attempt(source, event) == Transition(target, changed=True)
    for status in ATTEMPT_STATUSES + ("cancelled",):
        if status != source:
            assert apply_attempt(status, event) == Transition(status, changed=False)


def test_a_pending_attempt_past_its_deadline_falls_back() -> None:
    """A hop held behind an open circuit: its window keeps running, the route moves on."""
    assert apply_attempt("pending", "deadline") == Transition("expired", changed=True,
                                                              falls_back=True)


def test_statuses_are_str_enums_equal_to_their_wire_strings() -> None:
    assert apply_attempt("sending", "submitted").status == "submitted"
    assert apply_message("queued", "submitted") == "submitted"
    assert route_outcome(1, 0, "expired") == ("final", "expired")


def test_a_pending_attempt_is_suppressed_and_nothing_moves_it_afterwards() -> None:
    """Consent: a hop to an opted-out address ends ``suppressed`` before it is claimed; no
    report can follow (nothing was sent), and a negative one changes nothing."""
    assert apply_attempt("pending", "suppress") == Transition("suppressed", changed=True)
    assert apply_attempt("sending", "suppress").changed is False  # it may have left
    assert apply_attempt("suppressed", "deadline").changed is False
    assert apply_message("queued", "suppressed") == "suppressed"
    assert apply_message("delivered", "suppressed") == "delivered"
    assert is_message_final("suppressed")
