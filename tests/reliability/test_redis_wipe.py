"""Fault injection 3: Redis is wiped (``FLUSHALL``) while 10,000 fallback deadlines wait.

Deadlines are data: ``attempts.deadline_at`` is the truth and the Redis sorted set only an
index of it, rebuilt from the database when beat starts and topped up by the recovery sweep.
So wiping Redis, with the workers and beat crashing along with it, must not lose a single
fallback, and restarting must not fire any twice: each Viber attempt expires once, each
message gets exactly one SMS attempt, and the gateway sees exactly one SMS per message.

How it is scaled to run in CI on two cores:

* The 10,000 waiting Viber attempts are bulk-inserted straight into the database (and indexed
  in Redis as the pipeline would), already ``submitted``: this test is about deadlines
  surviving the wipe, not about accepting 10,000 requests and sending 10,000 Viber messages.
* All 10,000 must come back into the index, each at its own deadline, but only the first
  1,000 fall due during the test (the others an hour later, and none of them may fire
  early): a fallback costs the pipeline some 40 ms of CPU (the expiry in the one deadline
  sweeper, then a real SMS send), so all 10,000 would take minutes.
  ``SWITCHBOARD_RELIABILITY_FIRING=10000`` runs the full wave.
* The SMS fallbacks are real sends to the simulator, which posts no reports (the SMS deadline
  is an hour), so the messages rest at ``submitted`` on their SMS hop.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, insert, select

from shared.db import session_scope
from shared.models import Attempt, Message, utcnow
from shared.providers.sandbox.messaggio import SimulatorConfig
from shared.schemas import SendRequest
from tests.integration.conftest import wait_for
from tests.reliability.stack_fixtures import (
    Options,
    ReliabilityStack,
    events_of,
    load_rows,
    phone,
    reliability_stack,
)
from worker import deadlines

pytestmark = [pytest.mark.integration, pytest.mark.timeout(360)]

WAITING = 10_000
FIRING = min(WAITING, int(os.environ.get("SWITCHBOARD_RELIABILITY_FIRING", "1000")))
LEAD = timedelta(seconds=15)  # the first deadlines fall due this long after the rows are in
LATER = timedelta(hours=1)  # the others: they must be re-indexed, and must not fire
OPTIONS = Options(
    concurrency=2, simulator=SimulatorConfig(report_delay=0.1), reports=False,
    env={"SWITCHBOARD_TEST_DEADLINE_SECONDS": "3600",  # the SMS hop waits: no second wave
         "SWITCHBOARD_REQUEUE_STUCK_AFTER_SECONDS": "600",  # the SMS backlog is not "stuck"
         "SWITCHBOARD_MESSAGGIO_RATE_PER_SECOND": "5000"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReliabilityStack]:
    with reliability_stack(tmp_path_factory.mktemp("redis-wipe"), OPTIONS) as running:
        yield running


def _insert_waiting(count: int, due: Callable[[int], datetime]) -> dict[str, datetime]:
    """``count`` Viber+SMS messages whose Viber attempt is submitted and waits for
    ``due(index)``, in two bulk inserts; returns {attempt id: deadline}."""
    template = SendRequest.model_validate({"to": {"phone": phone(0)}, "route": ["viber", "sms"],
                                           "text": "wipe"}).model_dump(mode="json")
    now, messages, attempts = utcnow(), [], []
    for index in range(count):
        message_id, number = str(uuid.uuid4()), phone(index)
        messages.append({"id": message_id, "status": "submitted", "recipient": number,
                         "route": ["viber", "sms"], "hop": 0,
                         "request": {**template, "to": {**template["to"], "phone": number}}})
        attempts.append({"id": str(uuid.uuid4()), "message_id": message_id, "hop": 0,
                         "channel": "viber", "provider": "messaggio", "status": "submitted",
                         "provider_message_id": f"wipe-{index}", "submitted_at": now,
                         "deadline_at": due(index)})
    with session_scope() as session:
        session.execute(insert(Message), messages)
        session.execute(insert(Attempt), attempts)
    return {a["id"]: a["deadline_at"] for a in attempts}


def _wipe(stack: ReliabilityStack) -> None:
    """FLUSHALL the embedded Redis; on a shared machine Redis only our database (FLUSHDB):
    everything Switchboard keeps in Redis lives in that one database either way."""
    if os.environ.get("SWITCHBOARD_TEST_REDIS_URL"):
        stack.redis().flushdb()
    else:
        stack.redis().flushall()


def _sms_sent(stack: ReliabilityStack) -> int:
    assert stack.simulator is not None
    return stack.simulator.state.stats()["by_channel"]["sms"]


def _deadline(start: datetime) -> Callable[[int], datetime]:
    """The first FIRING deadlines spread over a second from ``start``, the rest LATER."""
    return lambda index: start + (timedelta(milliseconds=index % 1000) if index < FIRING
                                  else LATER)


def _crash_wipe_restart(stack: ReliabilityStack) -> None:
    """Worker, sweeper and beat die with Redis (SIGKILL), Redis is wiped, all start again."""
    stack.kill_worker()
    stack.kill_sweeper()
    stack.kill_beat()
    _wipe(stack)
    assert stack.redis().dbsize() == 0
    stack.start_sweeper()
    stack.start_worker()
    stack.start_beat()  # rebuilds the index from attempts.deadline_at


def test_fallbacks_fire_exactly_once_after_redis_is_wiped(stack: ReliabilityStack) -> None:
    started = time.monotonic()
    waiting = _insert_waiting(WAITING, _deadline(utcnow() + LEAD))
    client = stack.redis()
    deadlines.index(client, waiting.items())
    assert client.zcard(deadlines.KEY) == WAITING
    _crash_wipe_restart(stack)
    later = {a: deadlines._score(d) for a, d in waiting.items() if d > utcnow() + LATER / 2}
    # Only beat's rebuild can bring back deadlines an hour away (recovery adds due ones).
    wait_for(lambda: _indexed(stack).items() >= later.items(), 30, 0.2,
             "beat to re-index every deadline, each at its own time")
    restarted = time.monotonic()
    wait_for(lambda: _sms_sent(stack) >= FIRING, 240, 0.5, "every SMS fallback to be sent")
    _assert_fired_once(stack, waiting)
    print(f"\n{WAITING} deadlines re-indexed {restarted - started:.1f}s after the insert; "
          f"{FIRING} fallbacks sent {time.monotonic() - restarted:.1f}s later")


def _indexed(stack: ReliabilityStack) -> dict[str, float]:
    """The deadline index as {attempt id: score}."""
    return {member.decode(): score for member, score in
            stack.redis().zrange(deadlines.KEY, 0, -1, withscores=True)}


def _assert_fired_once(stack: ReliabilityStack, waiting: dict[str, datetime]) -> None:
    """One expiry, one fallback, one SMS attempt and one SMS at the gateway per message whose
    deadline passed; nothing at all for the others."""
    wait_for(lambda: stack.count(select(func.count()).select_from(Attempt).where(
        Attempt.channel == "sms", Attempt.status == "submitted")) >= FIRING, 60, 0.5,
        "the SMS attempts to record their submission")
    due = {a for a, d in waiting.items() if d < utcnow()}
    assert len(due) == FIRING
    rows = load_rows()
    shapes = Counter(tuple((a["channel"], a["status"]) for a in row.attempts)
                     for row in rows.values())
    assert shapes == {(("viber", "expired"), ("sms", "submitted")): FIRING,
                      (("viber", "submitted"),): WAITING - FIRING}, shapes
    fired = Counter((e["type"], e["attempt_id"] if e["type"] == "deadline_passed"
                     else e["message_id"]) for e in events_of(["deadline_passed", "fallback"]))
    assert set(fired.values()) == {1} and len(fired) == 2 * FIRING, "a deadline fired twice"
    assert {k[1] for k in fired if k[0] == "deadline_passed"} == due
    sms = {a["id"]: row for row in rows.values() for a in row.attempts if a["channel"] == "sms"}
    sent = stack.sim_sends()
    assert sum(sent.values()) == FIRING and set(sent.values()) == {1}, "an SMS went twice"
    assert {(ptid, channel) for ptid, _, channel in sent} == {(a, "sms") for a in sms}
    assert all(sms[ptid].recipient == f"+{number}" for ptid, number, _ in sent)
