"""Time-aware delivery through the real stack (issue 17): ``send_at`` released by the deadline
sweep at its time, ``valid_until`` ending a message before its fallback, quiet hours holding
a hop until they end (and ``critical`` skipping them), cancelling over HTTP, scheduled
campaigns and flow launches, and the critical queue ahead of a backlog.

Times are a few seconds ahead (quiet hours in ``HH:MM:SS``, zone UTC) so the file stays fast;
every wait is on a condition. "Nothing reached the gateway before T" is read from the
simulator's own records: each accepted message carries the time it arrived
(``received_at``), and each message gets phones of its own (``+3247018NNNN``).
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from shared import apps
from shared.db import session_scope
from tests.integration.conftest import API_KEY, Stack, wait_for
from tests.integration.producer import Producer

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SENT = {"submitted", "delivered", "seen"}
_numbers = itertools.count(2000)  # last four digits 2000+: the simulator's default scenario


def _phone() -> str:
    """A phone no other test uses, delivered then seen on Viber, delivered on SMS."""
    return f"+3247018{next(_numbers):04d}"


def _no_report_phone() -> str:
    """A phone whose Viber message gets no report at all (…0002): only a deadline ends it."""
    return f"+3247{800 + next(_numbers) % 200:03d}0002"


def _at(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _rfc3339(when: datetime) -> str:
    return when.isoformat()


def _parse(value: str) -> datetime:
    """An ISO time of the API (naive UTC + ``Z``) as an aware datetime."""
    return datetime.fromisoformat(value.removesuffix("Z")).replace(tzinfo=UTC)


def _post(stack: Stack, phone: str, **extra: Any) -> requests.Response:
    return stack.post_message(to={"phone": phone}, route=["viber", "sms"], text="Time aware",
                              sms_text="Time aware (SMS)", **extra)


def _accepted(stack: Stack, phone: str, status: str, **extra: Any) -> str:
    response = _post(stack, phone, **extra)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == status
    return response.json()["id"]


def _arrivals(stack: Stack, phone: str, channel: str | None = None) -> list[dict[str, Any]]:
    """What the gateway accepted for this phone (optionally one channel), oldest first."""
    digits = phone.lstrip("+")
    return sorted((m for m in stack.sim_messages() if m["phone"] == digits
                   and (channel is None or m["channel"] == channel)),
                  key=lambda m: m["received_at"])


def _arrived_at(stack: Stack, phone: str) -> datetime:
    first = wait_for(lambda: _arrivals(stack, phone), 20, 0.05, f"a send to {phone}")[0]
    return datetime.fromtimestamp(first["received_at"], UTC)


def _events(view: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [e for e in view["events"] if e["type"] == type_]


def _delete(stack: Stack, path: str) -> requests.Response:
    return requests.delete(f"{stack.api_url}{path}", headers=AUTH, timeout=10)


# --- send_at ----------------------------------------------------------------------------------

def test_a_scheduled_message_waits_for_its_send_at_then_goes(stack: Stack) -> None:
    phone, send_at = _phone(), _at(2.0)
    message_id = _accepted(stack, phone, "scheduled", send_at=_rfc3339(send_at))
    view = stack.get_message(message_id)
    assert view["status"] == "scheduled" and view["attempts"] == []
    assert [e["type"] for e in view["events"]] == ["scheduled"]
    assert _parse(view["events"][0]["detail"]["send_at"]) == send_at

    view = stack.wait_status(message_id, SENT, timeout=20)
    arrived = _arrived_at(stack, phone)
    assert arrived >= send_at, f"sent {(send_at - arrived).total_seconds():.3f}s early"
    assert len(_arrivals(stack, phone)) == 1
    types = [(e["type"], (e["detail"] or {}).get("status")) for e in view["events"]]
    assert types[:3] == [("scheduled", None), ("status", "queued"), ("submitted", None)]
    released = _parse(view["events"][1]["at"])
    assert released >= send_at
    print(f"\nreleased {(released - send_at).total_seconds():.3f}s and sent "
          f"{(arrived - send_at).total_seconds():.3f}s after send_at")


# --- valid_until ------------------------------------------------------------------------------

def test_valid_until_ends_the_message_before_its_fallback(stack: Stack) -> None:
    """Viber never reports and the test deadline (8 s) would fall back to SMS; valid_until
    in 3 s comes first: the hop's deadline is clamped to it, the message ends expired with
    reason valid_until, and no SMS is sent."""
    phone, valid_until = _no_report_phone(), _at(3.0)
    message_id = _accepted(stack, phone, "queued", valid_until=_rfc3339(valid_until))
    view = stack.wait_status(message_id, {"expired"}, timeout=20)
    assert view["reason"] == "valid_until"
    (viber,) = view["attempts"]
    assert viber["channel"] == "viber" and viber["status"] == "expired"
    (deadline,) = _events(view, "deadline_passed")  # clamped: not submitted + 8 s
    assert _parse(deadline["detail"]["deadline_at"]) <= valid_until
    assert viber["request"]["dlr_timeout"] == "60"  # the gateway's floor, not 8 s or a day
    assert _events(view, "fallback") == []
    assert [m["channel"] for m in _arrivals(stack, phone)] == ["viber"]  # no SMS
    ended = _parse(_events(view, "status")[-1]["at"])
    assert ended >= valid_until


# --- quiet hours and priority -----------------------------------------------------------------

def _quiet_now(ends_in: float) -> dict[str, str]:
    """Quiet hours in UTC that began 10 s ago and end ``ends_in`` s from now (to the second)."""
    now = datetime.now(UTC)
    clock = lambda t: t.strftime("%H:%M:%S")  # noqa: E731
    return {"start": clock(now - timedelta(seconds=10)),
            "end": clock(now + timedelta(seconds=ends_in)), "timezone": "UTC"}


def test_quiet_hours_hold_a_message_until_they_end_and_critical_goes_at_once(
        stack: Stack) -> None:
    quiet = _quiet_now(4.0)
    held_phone, critical_phone = _phone(), _phone()
    held_id = _accepted(stack, held_phone, "queued", quiet_hours=quiet)
    critical_id = _accepted(stack, critical_phone, "queued", quiet_hours=quiet,
                            priority="critical")

    held = wait_for(lambda: (v := stack.get_message(held_id)) and _events(v, "held") and v, 20,
                    0.05, "the held event")
    (event,) = _events(held, "held")
    assert event["detail"]["reason"] == "quiet_hours" and event["detail"]["timezone"] == "UTC"
    until = _parse(event["detail"]["until"])
    assert until.strftime("%H:%M:%S") == quiet["end"]
    assert [(a["channel"], a["status"]) for a in held["attempts"]] == [("viber", "pending")]

    critical = stack.wait_status(critical_id, SENT, timeout=10)
    assert _arrived_at(stack, critical_phone) < until
    assert _events(critical, "held") == []

    stack.wait_status(held_id, SENT, timeout=20)
    arrived = _arrived_at(stack, held_phone)
    assert arrived >= until, f"sent {(until - arrived).total_seconds():.3f}s inside quiet hours"
    assert len(_arrivals(stack, held_phone)) == 1


# --- cancel -----------------------------------------------------------------------------------

@pytest.fixture()
def producer() -> Iterator[Producer]:
    made = Producer([])
    yield made
    made.server.shutdown()


def test_a_cancelled_scheduled_message_is_never_sent_and_the_producer_hears(
        stack: Stack, producer: Producer) -> None:
    send_at = _rfc3339(_at(2.0))
    cancelled_phone, witness_phone = _phone(), _phone()
    cancelled = _accepted(stack, cancelled_phone, "scheduled", send_at=send_at,
                          callback_url=producer.url)
    witness = _accepted(stack, witness_phone, "scheduled", send_at=send_at)  # same time

    response = _delete(stack, f"/v1/messages/{cancelled}")
    assert response.status_code == 200, response.text
    assert response.json() == {"id": cancelled, "status": "cancelled"}
    assert _delete(stack, f"/v1/messages/{cancelled}").status_code == 200  # again: the same

    stack.wait_status(witness, SENT, timeout=20)  # the sweep has passed their send_at
    view = stack.get_message(cancelled)
    assert view["status"] == "cancelled" and view["attempts"] == []
    assert [e["detail"]["status"] for e in _events(view, "status")] == ["cancelled"]
    assert _arrivals(stack, cancelled_phone) == []
    hooks = wait_for(lambda: [e for e in producer.accepted() if e["type"] == "status"], 20,
                     0.1, "the cancelled webhook")
    assert [(h["message_id"], h["data"]["status"]) for h in hooks] == [
        (cancelled, "cancelled")]


def test_cancelling_a_sent_message_is_a_409_naming_the_hop(stack: Stack) -> None:
    message_id = _accepted(stack, _phone(), "queued")
    stack.wait_status(message_id, SENT)
    response = _delete(stack, f"/v1/messages/{message_id}")
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["error"] == "already_sent"
    assert body["hop"]["hop"] == 0 and body["hop"]["channel"] == "viber"
    assert body["hop"]["status"] in SENT
    assert stack.get_message(message_id)["status"] in SENT
    assert _delete(stack, f"/v1/messages/{uuid.uuid4()}").status_code == 404


# --- campaigns --------------------------------------------------------------------------------

def _campaign(stack: Stack, phones: list[str], send_at: datetime) -> str:
    response = requests.post(f"{stack.api_url}/v1/campaigns", headers=AUTH, timeout=30, json={
        "route": ["viber", "sms"], "text": "Scheduled sale", "send_at": _rfc3339(send_at),
        "idempotency_key": f"scheduled-{uuid.uuid4()}",
        "recipients": [{"phone": p} for p in phones]})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _counts(stack: Stack, campaign_id: str) -> dict[str, int]:
    response = requests.get(f"{stack.api_url}/v1/campaigns/{campaign_id}", headers=AUTH,
                            timeout=10)
    response.raise_for_status()
    return response.json()["counts"]


def test_a_scheduled_campaign_goes_in_batches_at_send_at_and_another_is_cancelled(
        stack: Stack) -> None:
    send_at = _at(2.5)
    going, stopped = [_phone() for _ in range(25)], [_phone() for _ in range(5)]
    going_id = _campaign(stack, going, send_at)
    stopped_id = _campaign(stack, stopped, send_at)
    assert _counts(stack, going_id) == {"scheduled": 25}

    response = _delete(stack, f"/v1/campaigns/{stopped_id}")
    assert response.status_code == 200, response.text
    assert response.json() == {"id": stopped_id, "cancelled": 5, "not_cancelled": 0}
    assert _counts(stack, stopped_id) == {"cancelled": 5}

    wait_for(lambda: sum(n for s, n in _counts(stack, going_id).items() if s in SENT) == 25,
             30, 0.2, "the campaign to be sent")
    batches: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for phone in going:
        for sent in _arrivals(stack, phone):
            batches[sent["p_transaction_id"]].append(sent)
    assert sorted(len(b) for b in batches.values()) == [5, 20]  # SWITCHBOARD_BULK_BATCH_SIZE
    first = min(m["received_at"] for b in batches.values() for m in b)
    assert datetime.fromtimestamp(first, UTC) >= send_at
    assert all(_arrivals(stack, p) == [] for p in stopped)
    assert _counts(stack, stopped_id) == {"cancelled": 5}


# --- flow launches ----------------------------------------------------------------------------

FLOW = """
name: {name}
route: [sms]
steps:
  - id: day
    type: message
    text: Which day suits you?
    buttons:
      - {{id: mon, caption: Monday, next: done}}
      - {{id: tue, caption: Tuesday, next: done}}
  - {{id: done, type: end}}
"""


def test_a_flow_launched_with_send_at_sends_its_first_step_then(stack: Stack) -> None:
    with session_scope() as session:
        key = apps.create(session, f"later-{uuid.uuid4().hex[:8]}").api_key
    headers = {"Authorization": f"Bearer {key}"}
    name = f"later-{uuid.uuid4().hex[:6]}"
    loaded = requests.post(f"{stack.api_url}/v1/flows", data=FLOW.format(name=name).encode(),
                           headers={**headers, "Content-Type": "application/yaml"}, timeout=10)
    assert loaded.status_code == 201, loaded.text
    phone, send_at = _phone(), _at(2.0)
    started = requests.post(f"{stack.api_url}/v1/flows/{name}/start", headers=headers,
                            timeout=10, json={"contacts": [{"to": {"phone": phone}}],
                                              "send_at": _rfc3339(send_at)})
    assert started.status_code == 202, started.text
    run_id = started.json()["runs"][0]["id"]

    def first_step() -> str | None:
        run = requests.get(f"{stack.api_url}/v1/flow-runs/{run_id}", headers=headers,
                           timeout=10).json()
        return next((s["message_id"] for s in run["steps"] if s.get("step_id") == "day"), None)
    message_id = wait_for(first_step, 20, 0.05, "the first step's message")

    def message() -> dict[str, Any]:
        response = requests.get(f"{stack.api_url}/v1/messages/{message_id}", headers=headers,
                                timeout=10)
        response.raise_for_status()
        return response.json()
    if datetime.now(UTC) < send_at - timedelta(seconds=0.5):  # looked at well before send_at
        assert message()["status"] == "scheduled"
    view = wait_for(lambda: (v := message())["status"] in SENT and v, 20, 0.1,
                    "the first step to be sent")
    assert view["events"][0]["type"] == "scheduled"
    assert _arrived_at(stack, phone) >= send_at
    assert "Monday" in _arrivals(stack, phone)[0]["txt"]


# --- the critical queue -----------------------------------------------------------------------

def test_a_critical_message_jumps_a_backlog_of_normal_ones(stack: Stack) -> None:
    """60 normal messages published at once (the Python client: a broker publish each, far
    faster than the worker sends), then one critical: it is sent before the backlog's last."""
    from shared.client import send

    backlog = [send(to={"phone": _phone()}, route=["viber"], text=f"bulk {n}")
               for n in range(60)]
    critical = send(to={"phone": _phone()}, route=["viber"], text="Your code is 123456",
                    priority="critical")

    def submitted_at(message_id: str) -> datetime | None:
        view = stack.get_message(message_id)
        if not view or view["status"] not in SENT or not view["attempts"]:
            return None
        return _parse(view["attempts"][0]["submitted_at"])

    critical_at = wait_for(lambda: submitted_at(critical), 30, 0.05, "the critical message")
    times = [wait_for(lambda m=m: submitted_at(m), 60, 0.1, "the backlog") for m in backlog]
    later = sum(t > critical_at for t in times)
    assert later > 0, "the critical message waited behind the whole backlog"
    print(f"\nthe critical message went ahead of {later} of the 60 normal ones")
