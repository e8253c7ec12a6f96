"""Fault injection 1: the worker is SIGKILLed in the middle of 1,000 messages.

A SIGKILL gives the worker no warm shutdown: tasks it had reserved are never acked (Redis
hands them back only after the visibility timeout, 8 minutes by default: work only the broker
holds is test_broker_redelivery.py's), a send may be cut between
"claimed" and "provider answered", a report half applied. The sweeper beside it dies too (one
host going down): a fallback may be committed but its task not published. The promise is that the database drives recovery: pending attempts, queued
messages, unhandled callbacks and due deadlines are picked up again by the recovery sweep, and
an attempt that may have reached the gateway is never resent (its report or its deadline
settles it). So after a restart every message must end final, with no (message, channel)
accepted twice by the gateway.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import func, select

from shared.db import session_scope
from shared.models import Attempt, Message
from shared.providers.sandbox.messaggio import SimulatorConfig
from tests.reliability.stack_fixtures import (
    ACTIVE_ATTEMPT,
    FINAL_MESSAGE,
    Options,
    ReliabilityStack,
    assert_no_loss_no_duplicate,
    phone,
    post_paced,
    reliability_stack,
    unsettled,
    wait_for,
    wait_settled,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

MESSAGES = 1000
# At most this much open work (see ``unsettled``) while posting: enough that the kill lands
# on sends, reports and fallbacks in every stage, little enough that nothing waits in a queue
# past the recovery sweep's "stuck" age (10 s here), so what it re-publishes is the kill's.
OPEN_LIMIT = 250
GATEWAY = {"report_delay": 0.1, "latency": 0.02}
SLOW_GATEWAY = {"report_delay": 15.0, "latency": 1.0}  # around the kill, see below
OPTIONS = Options(
    concurrency=4, simulator=SimulatorConfig(**GATEWAY),
    env={"SWITCHBOARD_REQUEUE_STUCK_AFTER_SECONDS": "10",
         # long enough that a slow report is not overtaken by its deadline under load
         "SWITCHBOARD_TEST_DEADLINE_SECONDS": "30"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReliabilityStack]:
    with reliability_stack(tmp_path_factory.mktemp("worker-kill"), OPTIONS) as running:
        yield running


def _final(stack: ReliabilityStack) -> int:
    return stack.count(select(func.count()).select_from(Message)
                       .where(Message.status.in_(sorted(FINAL_MESSAGE))))


def _body(index: int) -> dict[str, Any]:
    return {"to": {"phone": phone(index)}, "route": ["viber", "sms"], "text": f"kill {index}"}


@dataclass
class KillPoint:
    """What was going on when the worker was killed."""

    posted: int = 0
    final: int = 0
    open_work: int = 0  # see ``unsettled``
    active: dict[str, int] = field(default_factory=dict)  # attempts by status
    cut_mid_send: set[str] = field(default_factory=set)  # the gateway had them, no answer yet
    slowed: bool = False

    def __bool__(self) -> bool:
        return self.posted > 0


def _accepted_unanswered(stack: ReliabilityStack) -> set[str]:
    """Attempts still ``sending`` whose request the gateway has already accepted."""
    accepted = {ptid for ptid, _, _ in stack.sim_sends()}
    with session_scope() as session:
        sending = session.scalars(select(Attempt.id).where(Attempt.status == "sending")).all()
    return accepted.intersection(sending)


def _kill_once_a_quarter_is_final(stack: ReliabilityStack, at_kill: KillPoint,
                                  ids: list[str]) -> None:
    """Once MESSAGES // 4 are final, SIGKILL the worker and its pool, and the sweeper with it
    (one host going down), then start new ones.

    The kill is timed to hurt most: the gateway is made to hold its answers (1 s) and its
    reports (15 s, longer than the recovery sweep's "stuck" age plus a restart), and the kill
    waits until it has accepted some sends it has not answered yet. Those attempts must not
    be sent again; their late reports settle them.
    """
    assert stack.simulator is not None
    if at_kill or _final(stack) < MESSAGES // 4:
        return
    if not at_kill.slowed:  # the next chunk meets the slow gateway; kill after it is posted
        stack.simulator.state.update_config(SLOW_GATEWAY)
        at_kill.slowed = True
        return
    wait_for(lambda: len(_accepted_unanswered(stack)) >= 2, 30, 0.02,
             "the gateway to hold some sends")
    stack.kill_worker()
    stack.kill_sweeper()
    at_kill.posted, at_kill.final, at_kill.open_work = len(ids), _final(stack), unsettled(stack)
    at_kill.cut_mid_send = _accepted_unanswered(stack)
    with session_scope() as session:
        at_kill.active = dict(session.execute(
            select(Attempt.status, func.count()).where(Attempt.status.in_(ACTIVE_ATTEMPT))
            .group_by(Attempt.status)).all())
    stack.start_sweeper()
    stack.start_worker()
    stack.simulator.state.update_config(GATEWAY)


def test_sigkill_mid_run_loses_nothing_and_sends_nothing_twice(stack: ReliabilityStack) -> None:
    started = time.monotonic()
    at_kill = KillPoint()
    ids = post_paced(stack, [_body(i) for i in range(MESSAGES)], OPEN_LIMIT,
                     lambda ids: _kill_once_a_quarter_is_final(stack, at_kill, ids))
    assert 0 < at_kill.final < at_kill.posted < MESSAGES, f"not killed mid-run: {at_kill}"
    assert at_kill.open_work > 0 and at_kill.cut_mid_send, f"nothing cut mid-send: {at_kill}"
    wait_settled(stack, timeout=120)
    rows = assert_no_loss_no_duplicate(stack, ids)
    attempts = {a["id"]: a["status"] for row in rows.values() for a in row.attempts}
    assert {attempts[a] for a in at_kill.cut_mid_send} == {"seen"}, "not settled by its report"
    statuses = Counter(row.status for row in rows.values())
    # Viber seen, or (cut before it reached the gateway) its deadline passed and the SMS went.
    assert set(statuses) <= {"seen", "delivered"}, statuses
    print(f"\nkilled with {at_kill.final}/{at_kill.posted} posted final, attempts "
          f"{at_kill.active}, {len(at_kill.cut_mid_send)} cut mid-send; settled after "
          f"{time.monotonic() - started:.1f}s: {dict(statuses)}")
