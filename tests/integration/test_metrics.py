"""Metrics and the circuit breaker through the real stack: the web's /metrics adds up the
worker processes' counts (one shared directory), and a failing gateway opens the breaker,
which holds sends (not failed) until a probe finds the gateway back.

The stack runs the breaker with a threshold of 3 and a 2 s cool-down (conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Stack, broker_is_redis, wait_for

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(stack: Stack) -> Samples:
    response = requests.get(f"{stack.api_url}/metrics", timeout=10)
    response.raise_for_status()
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved_by(stack: Stack, before: Samples, name: str, **labels: str) -> Callable[[], float]:
    """How far a sample moved since ``before`` (a predicate source for ``wait_for``)."""
    return lambda: value(scrape(stack), name, **labels) - value(before, name, **labels)


def _send(stack: Stack, phone: str) -> str:
    response = stack.post_message(to={"phone": phone}, route=["viber", "sms"], text="Hello")
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_counts_move_as_messages_flow(stack: Stack) -> None:
    before = scrape(stack)
    message_id = _send(stack, "+32470120001")  # Viber undelivered: falls back to SMS
    stack.wait_status(message_id, {"delivered"})
    expected = [
        (1, "switchboard_sends_total", {"channel": "viber", "provider": "messaggio",
                                        "outcome": "accepted"}),
        (1, "switchboard_sends_total", {"channel": "sms", "provider": "messaggio",
                                        "outcome": "accepted"}),
        (2, "switchboard_provider_call_duration_seconds_count", {"provider": "messaggio"}),
        (1, "switchboard_fallbacks_total", {"from_channel": "viber", "to_channel": "sms",
                                            "reason": "viber_user_not_found"}),
        (2, "switchboard_callbacks_received_total", {"provider": "messaggio",
                                                     "result": "accepted"}),
        (1, "switchboard_delivery_report_latency_seconds_count", {"provider": "messaggio",
                                                                  "channel": "sms"}),
    ]
    for least, name, labels in expected:
        wait_for(lambda n=name, lb=labels, m=least: moved_by(stack, before, n, **lb)() >= m,
                 20, 0.2, f"{name}{labels} to move by {least}")
    after = scrape(stack)
    # Queue depth is read from a Redis broker; RabbitMQ exports its own (and we export none).
    on_redis = broker_is_redis(stack.env["SWITCHBOARD_BROKER_URL"])
    for queue in ("send", "events", "sweep", "notify"):
        sample = ("switchboard_queue_depth", frozenset({("queue", queue)}))
        assert (sample in after) is on_redis, (queue, on_redis)
    assert value(after, "switchboard_messages_stuck", status="submitted") == 0
    assert ("switchboard_circuit_state",
            frozenset({("provider", "messaggio"), ("reason", "")})) in after


def test_late_report_is_counted(stack: Stack) -> None:
    before = scrape(stack)
    message_id = _send(stack, "+32470120002")  # no Viber report: the deadline falls back
    view = stack.wait_status(message_id, {"delivered"}, timeout=40)
    viber = view["attempts"][0]
    msg_id = stack.sim_messages(viber["id"])[0]["msg_id"]
    requests.post(f"{stack.simulator.url}_sim/report", timeout=5, json={
        "msg_id": msg_id, "params": {"msg_id": msg_id, "p_transaction_id": viber["id"],
                                     "type": "delivery", "status": "delivered"}}
                  ).raise_for_status()
    late = moved_by(stack, before, "switchboard_late_reports_total", provider="messaggio",
                    channel="viber")
    wait_for(lambda: late() >= 1, 20, 0.2, "the late report to be counted")
    assert moved_by(stack, before, "switchboard_fallbacks_total", from_channel="viber",
                    to_channel="sms", reason="deadline_passed")() >= 1


def _circuit(stack: Stack) -> str:
    response = requests.get(f"{stack.api_url}/healthz", timeout=10)
    assert response.status_code == 200
    return response.json()["providers"]["messaggio"]["circuit"]


def _probes(stack: Stack) -> float:
    return value(scrape(stack), "switchboard_circuit_transitions_total", provider="messaggio",
                 state="half_open")


def _requests_seen(stack: Stack) -> int:
    assert stack.simulator is not None
    return stack.simulator.state.stats()["requests"]


def test_breaker_opens_holds_sends_and_closes(stack: Stack) -> None:
    """While the circuit is open only probes reach the gateway and held sends neither fail
    nor spend retries; their hop deadline keeps running (so a held Viber hop may fall back
    to SMS), and once the gateway is back every held message is delivered on some hop."""
    before = scrape(stack)
    stack.sim_config(fail_rate=1.0, fail_kinds=["http503"])
    try:
        first = _send(stack, "+32470120000")
        wait_for(lambda: _circuit(stack) in ("open", "half_open"), 30, 0.1,
                 "the circuit to open after 3 failed calls")
        assert value(scrape(stack), "switchboard_circuit_state", provider="messaggio",
                     reason="") >= 1
        held = [first, _send(stack, "+32470120000"), _send(stack, "+32470120000")]
        probes, calls = _probes(stack), _requests_seen(stack)
        wait_for(lambda: _probes(stack) >= probes + 2, 30, 0.2, "two more probes")
        # While open, only the probes reach the gateway, whatever the number of waiting sends.
        assert _requests_seen(stack) - calls <= _probes(stack) - probes + 1
        for message_id in held:
            view = stack.get_message(message_id)
            assert view is not None and view["status"] == "queued", view
            assert {a["status"] for a in view["attempts"]} <= {"pending", "expired"}, view
            assert not [e for e in view["events"] if e["type"] == "attempt_failed"]
    finally:
        stack.sim_config(fail_rate=0.0)
    for message_id in held:
        view = stack.wait_status(message_id, {"seen", "delivered"}, timeout=60)
        assert not [a for a in view["attempts"] if a["status"] == "failed"], view["attempts"]
    wait_for(lambda: _circuit(stack) == "closed", 20, 0.1, "the circuit to close")
    after = scrape(stack)
    assert value(after, "switchboard_circuit_state", provider="messaggio", reason="") == 0
    for state in ("open", "closed"):
        assert value(after, "switchboard_circuit_transitions_total", provider="messaggio",
                     state=state) > value(before, "switchboard_circuit_transitions_total",
                                          provider="messaggio", state=state)
    assert value(after, "switchboard_sends_total", channel="viber", provider="messaggio",
                 outcome="retryable") >= value(before, "switchboard_sends_total",
                                               channel="viber", provider="messaggio",
                                               outcome="retryable") + 3
