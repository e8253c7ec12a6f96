"""Fault injection: Redis is wiped (``FLUSHALL``) while messages wait for their ``send_at`` and
one waits for its quiet hours to end (issue 17: a Redis wipe or restart loses no schedule).

The schedule is data: a scheduled message is a ``messages`` row (``status = scheduled``,
``send_at``) that the deadline sweep releases, with no Redis entry at all; a hop held by quiet
hours is a ``pending`` attempt with ``not_before`` at their end, and its Redis wake-up
(``wake:<attempt id>`` in the deadline index) is only an index of that column, rebuilt by
beat's start-up re-index (and, failing that, the recovery sweep re-publishes the attempt once
``not_before`` has passed). So with worker, sweeper and beat killed along with the wipe, every
message must still go once, none before its time, and those due after the restart on time.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from shared.providers.sandbox.messaggio import SimulatorConfig
from tests.integration.conftest import API_KEY, wait_for
from tests.reliability.stack_fixtures import (
    Options,
    ReliabilityStack,
    phone,
    reliability_stack,
)
from worker import deadlines
from worker.timeliness import WAKE_PREFIX

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SCHEDULED = 12
CAMPAIGN = 6
AHEAD = 12.0  # the first send_at, seconds after the requests; the others spread over 8 s,
SPREAD = 8.0  # so that some fall due after the restart (the three processes take seconds)
# Due after the restart, sent within this of its time. Generous: this test is about losing
# nothing on a shared 2-core machine; tests/bench/bench_schedule.py measures the lateness.
ON_TIME = 3.0
SENT = {"submitted", "delivered", "seen"}
OPTIONS = Options(concurrency=2, simulator=SimulatorConfig(report_delay=0.1))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReliabilityStack]:
    with reliability_stack(tmp_path_factory.mktemp("schedule-wipe"), OPTIONS) as running:
        yield running


def _post(stack: ReliabilityStack, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(f"{stack.api_url}{path}", json=body, timeout=10,
                             headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 202, response.text
    return response.json()


def _wipe(stack: ReliabilityStack) -> None:
    """FLUSHALL the embedded Redis; on a shared machine's Redis only our database."""
    if os.environ.get("SWITCHBOARD_TEST_REDIS_URL"):
        stack.redis().flushdb()
    else:
        stack.redis().flushall()


def _crash_wipe_restart(stack: ReliabilityStack) -> None:
    """Worker, sweeper and beat die with Redis (SIGKILL), Redis is wiped, all start again."""
    stack.kill_worker()
    stack.kill_sweeper()
    stack.kill_beat()
    _wipe(stack)
    assert stack.redis().dbsize() == 0
    stack.start_beat()  # re-indexes the deadlines and wake-ups from the database
    stack.start_sweeper()
    stack.start_worker()


def _arrivals(stack: ReliabilityStack) -> dict[str, list[datetime]]:
    """When the gateway accepted each phone's messages (phone with +)."""
    return {number: [at for at, _, _ in sends] for number, sends in _sends(stack).items()}


def _sends(stack: ReliabilityStack) -> dict[str, list[tuple[datetime, str, str]]]:
    """(when, channel, p_transaction_id) of what the gateway accepted, per phone (with +)."""
    assert stack.simulator is not None
    found: dict[str, list[tuple[datetime, str, str]]] = {}
    for sent in stack.simulator.state.messages():
        found.setdefault("+" + sent["phone"], []).append(
            (datetime.fromtimestamp(sent["received_at"], UTC), sent["channel"],
             sent["p_transaction_id"]))
    return found


def _quiet_hours(ends: datetime) -> dict[str, str]:
    start = datetime.now(UTC) - timedelta(seconds=10)
    return {"start": start.strftime("%H:%M:%S"), "end": ends.strftime("%H:%M:%S"),
            "timezone": "UTC"}


def test_schedules_and_quiet_hours_survive_a_redis_wipe(stack: ReliabilityStack) -> None:
    first = datetime.now(UTC) + timedelta(seconds=AHEAD)
    due: dict[str, datetime] = {}  # phone -> not before
    for index in range(SCHEDULED):
        number, send_at = phone(index), first + timedelta(seconds=SPREAD * index / SCHEDULED)
        body = {"to": {"phone": number}, "route": ["viber", "sms"], "text": "later",
                "send_at": send_at.isoformat()}
        assert _post(stack, "/v1/messages", body)["status"] == "scheduled"
        due[number] = send_at
    campaign_at = first + timedelta(seconds=SPREAD / 2)
    phones = [phone(100 + index) for index in range(CAMPAIGN)]
    _post(stack, "/v1/campaigns", {"route": ["viber"], "text": "later, in bulk",
                                   "send_at": campaign_at.isoformat(),
                                   "idempotency_key": f"wipe-{uuid.uuid4()}",
                                   "recipients": [{"phone": p} for p in phones]})
    due.update(dict.fromkeys(phones, campaign_at))
    quiet_phone = phone(200)
    held_id = _post(stack, "/v1/messages", {
        "to": {"phone": quiet_phone}, "route": ["viber", "sms"], "text": "in the morning",
        "quiet_hours": _quiet_hours(first.replace(microsecond=0) + timedelta(seconds=1))})["id"]
    until, attempt_id = _held(stack, held_id)
    due[quiet_phone] = until
    wake = WAKE_PREFIX + attempt_id
    wait_for(lambda: stack.redis().zscore(deadlines.KEY, wake) is not None, 10, 0.05,
             "the wake-up to be indexed (after the hold's commit): the wipe removes it")

    _crash_wipe_restart(stack)
    wait_for(lambda: stack.redis().zscore(deadlines.KEY, wake) == deadlines._score(
        until.replace(tzinfo=None)), 30, 0.1, "beat to re-index the quiet-hours wake-up")
    restarted = datetime.now(UTC)  # beat is up: its sweeps run from now on

    wait_for(lambda: set(_arrivals(stack)) >= set(due), 60, 0.2, "every message to be sent")
    arrivals = _arrivals(stack)
    print("\nlate (s):", sorted(round((arrivals[n][0] - t).total_seconds(), 2)
                             for n, t in due.items()))
    for number, not_before in due.items():
        assert len(arrivals[number]) == 1, (number, _sends(stack)[number])  # once
        (sent,) = arrivals[number]
        assert sent >= not_before, f"{number} sent {(not_before - sent).total_seconds()}s early"
        if not_before > restarted:
            late = (sent - not_before).total_seconds()
            assert late <= ON_TIME, f"{number} sent {late:.2f}s after its time"
    on_time = [n for n, t in due.items() if t > restarted]
    print(f"\nrestarted {(restarted - first).total_seconds():+.1f}s from the first send_at; "
          f"{len(on_time)} of {len(due)} were due after the restart")
    assert on_time, "the restart outlasted every schedule: nothing shows they kept their time"
    view = _message(stack, held_id)
    assert [e["type"] for e in view["events"]].count("held") == 1


def _held(stack: ReliabilityStack, message_id: str) -> tuple[datetime, str]:
    """The held event's ``until`` (aware UTC) and the waiting attempt's id."""
    def held() -> dict[str, Any] | None:
        view = _message(stack, message_id)
        return next((e for e in view["events"] if e["type"] == "held"), None)
    event = wait_for(held, 20, 0.05, "the quiet-hours hold")
    until = datetime.fromisoformat(event["detail"]["until"].removesuffix("Z"))
    return until.replace(tzinfo=UTC), event["attempt_id"]


def _message(stack: ReliabilityStack, message_id: str) -> dict[str, Any]:
    view = stack.get_message(message_id)
    assert view is not None
    return view


def test_the_recovery_sweep_sends_a_held_message_whose_wake_up_is_gone(
        stack: ReliabilityStack) -> None:
    """Without beat's re-index (the wake-up lost while beat runs on): the recovery sweep
    re-publishes the attempt once ``not_before`` has passed by the stuck age (3 s here)."""
    ends = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    number = phone(300)
    held_id = _post(stack, "/v1/messages", {"to": {"phone": number}, "route": ["viber"],
                                            "text": "woken by recovery",
                                            "quiet_hours": _quiet_hours(ends + timedelta(
                                                seconds=1))})["id"]
    until, attempt_id = _held(stack, held_id)
    wait_for(lambda: stack.redis().zrem(deadlines.KEY, WAKE_PREFIX + attempt_id), 10, 0.05,
             "the wake-up to be indexed, then removed")
    started = time.monotonic()
    view = wait_for(lambda: (v := _message(stack, held_id))["status"] in SENT and v, 30, 0.2,
                    "the recovery sweep to send it")
    (sent,) = _arrivals(stack)[number]
    assert sent >= until
    print(f"\nsent {(sent - until).total_seconds():.1f}s after its quiet hours ended "
          f"(waited {time.monotonic() - started:.1f}s)")
    assert [e["type"] for e in view["events"]].count("held") == 1
