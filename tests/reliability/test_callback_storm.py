"""Fault injection 4: a callback storm. Every report arrives three times, shuffled, from many
connections at once, including reports that contradict each other and a late Viber
``delivered`` after the SMS fallback went out.

The gateway retries reports for a day and does not order them, so the receiver must store
each once (deduplicated on msg_id, type and status), and the state machine must never move a
status backwards, whatever order they are applied in: ``seen`` before ``delivered`` stays
``seen``; an SMS reported both delivered (0) and not delivered (-1) ends delivered. A Viber
``delivered`` that comes after its deadline passed and the SMS was sent is still recorded on
the Viber attempt (flagged ``late``) and makes the message ``delivered``.

The simulator computes each message's reports (by scenario) but posts none; the test posts
them itself, in two storms: the Viber reports, then (once the fallbacks went out) the SMS
reports, the contradicting ones and the late deliveries. A watcher samples every status all
along, so a status that went backwards and forward again between two reads of the final state
would still be caught.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from shared.models import Attempt, Callback, Message
from shared.providers.sandbox.messaggio import SimulatorConfig
from tests.reliability.stack_fixtures import (
    Options,
    ReliabilityStack,
    assert_no_loss_no_duplicate,
    events_of,
    phone,
    reliability_stack,
    wait_for,
    wait_settled,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SEED = 4242
COPIES = 3
# Scenario (last four digits, see the simulator) -> how many messages; what each must end as.
GROUPS = {None: 40, "0001": 20, "0002": 20, "0003": 10}
FINAL = {None: "seen", "0001": "delivered", "0002": "delivered", "0003": "seen"}
VIBER_REPORTS = {None: 2, "0001": 1, "0002": 0, "0003": 3}  # delivered+seen, undelivered, ...
OPTIONS = Options(concurrency=3, simulator=SimulatorConfig(report_delay=0.05), reports=False,
                  env={"SWITCHBOARD_TEST_DEADLINE_SECONDS": "10"})
# Ranks along which statuses may only move forward (a late positive report lifts a status
# that ended badly; nothing lowers one).
MESSAGE_ORDER = {"queued": 0, "submitted": 1, "failed": 2, "expired": 2, "delivered": 3,
                 "seen": 4}
ATTEMPT_ORDER = {"pending": 0, "sending": 1, "submitted": 2, "failed": 3, "undelivered": 3,
                 "expired": 3, "delivered": 4, "seen": 5}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReliabilityStack]:
    with reliability_stack(tmp_path_factory.mktemp("callback-storm"), OPTIONS) as running:
        yield running


def _phones() -> dict[str, str | None]:
    """Phone (as the gateway writes it, no +) -> scenario."""
    phones: dict[str, str | None] = {}
    for scenario, count in GROUPS.items():
        phones.update({phone(i, scenario).lstrip("+"): scenario for i in range(count)})
    return phones


class Watcher:
    """Samples every message and attempt status until stopped; records each change."""

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-watcher", daemon=True)

    def _run(self) -> None:
        from shared.db import session_scope

        while not self._stop.wait(0.05):
            with session_scope() as session:
                rows = session.execute(select(Message.id, Message.status)).all()
                rows += session.execute(select(Attempt.id, Attempt.status)).all()
            for row_id, status in rows:
                if not self.seen[row_id] or self.seen[row_id][-1] != status:
                    self.seen[row_id].append(status)

    @contextmanager
    def running(self) -> Iterator[Watcher]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(10)


def _unsent(stack: ReliabilityStack, channel: str) -> list[dict[str, str]]:
    """The reports the simulator computed (and did not post) for messages on ``channel``."""
    assert stack.simulator is not None
    state = stack.simulator.state
    channels = {m["msg_id"]: m["channel"] for m in state.messages()}
    return [r["params"] for r in state.reports()
            if r["outcome"] == "unsent" and channels.get(r["msg_id"]) == channel]


def _reported_phones(stack: ReliabilityStack, channel: str) -> set[str]:
    """Phones with a computed report on ``channel`` (an SMS report: the SMS went out)."""
    assert stack.simulator is not None
    phones = {m["msg_id"]: m["phone"] for m in stack.simulator.state.messages()}
    return {phones[params["msg_id"]] for params in _unsent(stack, channel)}


def _storm(stack: ReliabilityStack, reports: list[dict[str, str]], rng: random.Random,
           ) -> Counter[str]:
    """POST every report COPIES times, shuffled, from 8 connections at once; returns how the
    receiver answered (accepted / duplicate)."""
    storm = [dict(r) for r in reports for _ in range(COPIES)]
    rng.shuffle(storm)

    def post(params: dict[str, str]) -> str:
        response = requests.post(stack.callback_url, data=params, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["status"]
    with ThreadPoolExecutor(8) as pool:
        return Counter(pool.map(post, storm))


def _second_wave(stack: ReliabilityStack, by_phone: dict[str, str | None]) -> list[dict[str, str]]:
    """SMS reports, a contradicting "not delivered" for each SMS of the 0001 group, and a late
    Viber "delivered" for each 0002 message (its Viber attempt expired, the SMS went out)."""
    sms = _unsent(stack, "sms")
    assert stack.simulator is not None
    sent = stack.simulator.state.messages()
    contradicting = [{**params, "status": "-1"} for params in sms
                     if by_phone[_phone_of(sent, params["msg_id"])] == "0001"]
    late = [{"msg_id": m["msg_id"], "p_transaction_id": m["p_transaction_id"],
             "type": "delivery", "status": "delivered"}
            for m in sent if m["channel"] == "viber" and by_phone[m["phone"]] == "0002"]
    return sms + contradicting + late


def _phone_of(sent: list[dict[str, Any]], msg_id: str) -> str:
    return next(m["phone"] for m in sent if m["msg_id"] == msg_id)


def test_callback_storm_never_moves_a_status_backwards(stack: ReliabilityStack) -> None:
    rng, by_phone = random.Random(SEED), _phones()
    ids = stack.post_all([{"to": {"phone": f"+{number}"}, "route": ["viber", "sms"],
                           "text": "storm"} for number in by_phone])
    viber_reports = sum(VIBER_REPORTS[s] * n for s, n in GROUPS.items())
    wait_for(lambda: len(_unsent(stack, "viber")) >= viber_reports, 60, 0.1,
             "the simulator to compute every Viber report")
    with Watcher().running() as watcher:
        first = _unsent(stack, "viber")
        answers = _storm(stack, first, rng)
        fallbacks = {number for number, s in by_phone.items() if s in ("0001", "0002")}
        wait_for(lambda: _reported_phones(stack, "sms") >= fallbacks, 60, 0.1,
                 "every SMS fallback to be sent")
        second = _second_wave(stack, by_phone)
        answers += _storm(stack, second, rng)
        wait_settled(stack, timeout=60, transient=())
    distinct = len(first) + len(second)
    assert answers == {"accepted": distinct, "duplicate": (COPIES - 1) * distinct}, answers
    assert stack.count(select(func.count()).select_from(Callback)) == distinct
    rows = assert_no_loss_no_duplicate(stack, ids)
    _assert_final_statuses(rows, by_phone)
    _assert_never_backwards(watcher.seen, rows)
    _assert_late_and_replies_recorded(rows, by_phone)
    paths = Counter(" > ".join(watcher.seen[row.id]) for row in rows.values())
    applied = Counter((e["payload"]["kind"], e["payload"]["applied"], e["payload"]["late"])
                      for e in events_of(["report"]))
    print(f"\n{distinct} reports x{COPIES}; message paths {dict(paths)}; "
          f"reports (kind, applied, late) {dict(applied)}")


def _assert_final_statuses(rows: dict[str, Any], by_phone: dict[str, str | None]) -> None:
    """Each group ends where its reports say, whatever order they came in."""
    ended = Counter((by_phone[row.recipient.lstrip("+")], row.status) for row in rows.values())
    assert ended == {(s, FINAL[s]): n for s, n in GROUPS.items()}, ended
    for row in rows.values():
        scenario, sms = by_phone[row.recipient.lstrip("+")], row.attempts[-1]
        if scenario in ("0001", "0002"):
            assert (sms["channel"], sms["status"]) == ("sms", "delivered"), row


def _assert_never_backwards(seen: dict[str, list[str]], rows: dict[str, Any]) -> None:
    """Every sampled status sequence, and every message's ``status`` events, only go up."""
    attempts = {a["id"] for row in rows.values() for a in row.attempts}
    for row_id, statuses in seen.items():
        order = ATTEMPT_ORDER if row_id in attempts else MESSAGE_ORDER
        ranks = [order[s] for s in statuses]
        assert ranks == sorted(ranks) and len(set(statuses)) == len(statuses), (row_id, statuses)
    by_message: dict[str, list[str]] = defaultdict(list)
    for event in events_of(["status"]):
        by_message[event["message_id"]].append(event["payload"]["status"])
    for message_id, statuses in by_message.items():
        ranks = [MESSAGE_ORDER[s] for s in statuses]
        assert ranks == sorted(ranks), (message_id, statuses)


def _assert_late_and_replies_recorded(rows: dict[str, Any],
                                      by_phone: dict[str, str | None]) -> None:
    """The late Viber delivery is on the Viber attempt, flagged, once; each reply once."""
    reports = [e for e in events_of(["report"]) if e["payload"].get("late")]
    late_attempts = Counter(e["attempt_id"] for e in reports)
    expected = {row.attempts[0]["id"] for row in rows.values()
                if by_phone[row.recipient.lstrip("+")] == "0002"}
    assert set(late_attempts) >= expected and all(late_attempts[a] == 1 for a in expected)
    for row in rows.values():
        if by_phone[row.recipient.lstrip("+")] == "0002":
            assert [a["status"] for a in row.attempts] == ["delivered", "delivered"], row
    replies = Counter(e["message_id"] for e in events_of(["replied"]))
    assert replies == {row.id: 1 for row in rows.values()
                       if by_phone[row.recipient.lstrip("+")] == "0003"}, replies
