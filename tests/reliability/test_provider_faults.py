"""Fault injection 2: the gateway fails 30 % of the calls, every way it can.

The gateway has no idempotency: a request sent twice is two messages on the phone. So each
failure must be classed by whether the request may have arrived:

* surely not (refused connection, the gateway's ``-4``, HTTP 503): retried with backoff;
* maybe (dropped connection, HTTP 500, an answer slower than our read timeout): never resent.
  The attempt stays ``submitted``; its report (matched by our attempt id, sent as
  ``p_transaction_id``) or its deadline settles it, and the deadline moves the route on.

The simulator draws ``-4``, HTTP 500, HTTP 503 (``Retry-After: 1``), dropped connections and
slow answers (accepted, answered after the client timeout) for 30 % of send requests from a
seeded RNG; on top of that its listener is closed for short, seeded windows, so some calls
are refused outright. Counts must still come out exact: every message final, at most one
request accepted per (message, channel), and every ambiguous attempt settled without a resend.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from shared.providers.sandbox.messaggio import SimulatorConfig, SimulatorServer
from tests.integration.conftest import CLIENT_TIMEOUT
from tests.reliability.stack_fixtures import (
    Options,
    ReliabilityStack,
    Row,
    assert_no_loss_no_duplicate,
    events_of,
    phone,
    post_paced,
    reliability_stack,
    wait_settled,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MESSAGES = 200
SEED = 20261123
FAULTS = ["temporary", "http500", "http503", "drop", "slow"]
OPTIONS = Options(
    concurrency=3,
    # Reports come after the client timeout: an accepted but unanswered send is not settled
    # by its report before the client could (wrongly) resend it.
    simulator=SimulatorConfig(report_delay=CLIENT_TIMEOUT + 3, fail_rate=0.3,
                              fail_kinds=FAULTS, seed=SEED,
                              slow_seconds=CLIENT_TIMEOUT + 1.5),
    env={"SWITCHBOARD_MAX_SEND_RETRIES": "30",  # a run of bad luck must not fail a message
         "SWITCHBOARD_RETRY_BACKOFF_MAX_SECONDS": "1",
         "SWITCHBOARD_BREAKER_OPEN_SECONDS": "1",  # the breaker may open; it must not stall
         "SWITCHBOARD_REQUEUE_STUCK_AFTER_SECONDS": "10",
         "SWITCHBOARD_TEST_DEADLINE_SECONDS": "10"})
AMBIGUOUS = frozenset({"timeout_after_send", "connection_dropped", "http_500"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReliabilityStack]:
    with reliability_stack(tmp_path_factory.mktemp("provider-faults"), OPTIONS) as running:
        yield running


@contextmanager
def refusing_connections(simulator: SimulatorServer, seed: int) -> Iterator[list[float]]:
    """Close the simulator's listener for 0.1-0.4 s every 0.5-2 s (seeded) until the block
    ends; yields the list of windows, filled as they happen."""
    rng, stop, windows = random.Random(seed), threading.Event(), []

    def run() -> None:
        while not stop.wait(rng.uniform(0.5, 2.0)):
            windows.append(rng.uniform(0.1, 0.4))
            simulator.refuse_connections(windows[-1])
    thread = threading.Thread(target=run, name="refuse-connections", daemon=True)
    thread.start()
    try:
        yield windows
    finally:
        stop.set()
        thread.join(10)


def _body(index: int) -> dict[str, Any]:
    return {"to": {"phone": phone(index)}, "route": ["viber", "sms"], "text": f"faults {index}"}


def test_faulty_gateway_loses_nothing_and_never_resends_an_ambiguous_call(
        stack: ReliabilityStack) -> None:
    started = time.monotonic()
    assert stack.simulator is not None
    with refusing_connections(stack.simulator, SEED) as windows:
        ids = post_paced(stack, [_body(i) for i in range(MESSAGES)], open_limit=300)
        wait_settled(stack, timeout=150)
    rows = assert_no_loss_no_duplicate(stack, ids)
    retried, ambiguous = _retried_and_ambiguous()
    _assert_every_fault_happened(stack, retried, windows)
    _assert_ambiguous_settled_without_resend(stack, rows, retried, ambiguous)
    statuses = Counter(row.status for row in rows.values())
    assert set(statuses) <= {"seen", "delivered", "expired"}, statuses
    print(f"\n{MESSAGES} messages settled in {time.monotonic() - started:.1f}s: "
          f"{dict(statuses)}; injected {stack.simulator.state.stats()['injected']}, "
          f"{len(windows)} refusal windows, retries {dict(Counter(retried.values()))}, "
          f"ambiguous {dict(Counter(ambiguous.values()))}")


def _retried_and_ambiguous() -> tuple[dict[tuple[str, int], str], dict[str, str]]:
    """From the timeline: each retry as {(attempt, seq): reason}, and each attempt whose
    send was ambiguous as {attempt: reason}. Also checks no retry follows an ambiguous send."""
    retried: dict[tuple[str, int], str] = {}
    ambiguous: dict[str, str] = {}
    for event in events_of(["retry_scheduled", "submitted"]):
        attempt = event["attempt_id"]
        if event["type"] == "retry_scheduled":
            assert attempt not in ambiguous, f"{attempt} was resent after an ambiguous send"
            retried[(attempt, event["seq"])] = event["payload"]["reason"]
        elif event["payload"].get("ambiguous"):
            ambiguous[attempt] = event["payload"]["ambiguous"]
    return retried, ambiguous


def _assert_every_fault_happened(stack: ReliabilityStack, retried: dict[tuple[str, int], str],
                                 windows: list[float]) -> None:
    """The run really met every kind of failure, at 30 % of the calls or more."""
    assert stack.simulator is not None
    stats = stack.simulator.state.stats()
    assert all(stats["injected"][kind] > 0 for kind in FAULTS), stats["injected"]
    refused = sum(1 for reason in retried.values() if reason == "connection_failed")
    assert windows and refused > 0, "no call was refused"
    failed = sum(stats["injected"].values()) + refused
    assert failed >= 0.3 * (stats["requests"] + refused) * 0.8, (failed, stats)


def _assert_ambiguous_settled_without_resend(stack: ReliabilityStack, rows: dict[str, Row],
                                             retried: dict[tuple[str, int], str],
                                             ambiguous: dict[str, str]) -> None:
    """An ambiguous attempt reached the gateway at most once, and was settled by its report
    (the gateway had it: delivered or seen) or by its deadline (it had not: expired)."""
    assert set(ambiguous.values()) <= AMBIGUOUS and len(set(ambiguous.values())) == 3, ambiguous
    accepted = Counter(ptid for ptid, _, _ in stack.sim_sends().elements())
    deadline_passed = {e["attempt_id"] for e in events_of(["deadline_passed"])}
    attempts = {a["id"]: a for row in rows.values() for a in row.attempts}
    for attempt_id in ambiguous:
        status = attempts[attempt_id]["status"]
        if accepted[attempt_id]:
            assert accepted[attempt_id] == 1 and status in ("delivered", "seen"), attempt_id
        else:
            assert status == "expired" and attempt_id in deadline_passed, attempt_id
    assert all(accepted[attempt] <= 1 for attempt, _ in retried)
