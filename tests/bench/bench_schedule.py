"""6. Schedule timing at scale: how late each scheduled message goes after its ``send_at``.

P messages are inserted straight into the database ``scheduled`` (bulk inserts, as
``shared.campaigns`` does; no attempt: ``release_scheduled`` dispatches a plain message and
its first attempt is created then), all of them far ahead at first. Once the worker, the
sweeper and beat are up, the measured set (R per second over the window) is moved to fall due
from a few seconds later; the others stay a day or more ahead, so P rows sit in the
``(status, send_at)`` index while the measured ones come due. Worker, sweeper and beat are the
project's own (the Procfile's layout: a prefork x2 worker for ``critical,send,events,notify``,
a one-process worker for ``sweep``, beat); each release dispatches the message, whose SMS goes
to the simulator.

Figures, for the measured set: **release** lateness = the ``status: queued`` event's time
minus ``send_at`` (the scheduler alone: the sweep that moves ``scheduled → queued``);
**sent** lateness = the simulator's receipt time minus ``send_at`` (what the issue's target is
about: "sent at that time"); ``submitted`` = the attempt's ``submitted_at`` minus ``send_at``.
A message not sent within the drain time counts as missing. Four runs: the asked rate at
scale, the same rate without the far-ahead rows (the baseline), a rate the per-message send
pipeline sustains on this machine (section 1 of the notes) at scale, and the asked rate at
scale with the measured set one scheduled campaign's messages (released to the bulk path).
"""

from __future__ import annotations

import calendar
import json
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import requests
from sqlalchemy import insert, text

from shared.db import session_scope
from shared.models import Attempt, Message, utcnow
from shared.schemas import SendRequest
from tests.bench.infra import Env, wait_for
from tests.bench.stats import percentile

TARGET_P99_S = 1.0
LEAD = 3.0  # seconds between arming the measured set and its first send_at
FAR = timedelta(days=1)  # where every row waits until armed; the others stay beyond it
CHUNK = 5000
REQUEST = SendRequest.model_validate({"to": {"phone": "+32470100000"}, "route": ["sms"],
                                      "text": "Bench (scheduled)"}).model_dump(mode="json")


def run(env: Env, pending: int, per_second: float, window: float,
        sustained_per_second: float) -> dict[str, Any]:
    """The asked rate at scale and without the extra rows, a sustainable rate at scale, and
    the asked rate at scale with the measured set one scheduled campaign's (bulk sends)."""
    scale = _measure(env, pending, per_second, window)
    base = _measure(env, int(per_second * window), per_second, window)
    sustained = _measure(env, pending, sustained_per_second, window)
    campaign = _measure(env, pending, per_second, window, campaign=True)
    return {"pending": pending, "due": int(per_second * window), **scale,
            **{f"baseline_{k}": v for k, v in base.items()},
            **{f"sustained_{k}": v for k, v in sustained.items()},
            **{f"campaign_{k}": v for k, v in campaign.items()},
            "ratio_p99": round(scale["sent_p99_s"] / base["sent_p99_s"], 2)
            if base["sent_p99_s"] else float("nan")}


def _measure(env: Env, pending: int, per_second: float, window: float,
             campaign: bool = False) -> dict[str, Any]:
    env.truncate()
    env.sim_reset()
    due = int(per_second * window)
    base = utcnow() + FAR
    inserted = time.monotonic()
    _insert(pending, due, per_second, base, campaign)
    insert_s = time.monotonic() - inserted
    pids = {"beat": env.beat(),  # first: ticking by the time both workers answer a ping
            "worker": env.worker("prefork", 2, queues="critical,send,events,notify"),
            "sweeper": env.worker("prefork", 1, queues="sweep", name="sweeper")}
    try:
        start = _arm(base, window)
        drain = max(60.0, due / 20.0)  # the send pipeline does some 20-40 msg/s here
        ends = start + timedelta(seconds=window)
        _sleep_until(ends)
        try:
            wait_for(lambda: _submitted(base) >= due, drain, 0.5, "the measured set")
        except TimeoutError:
            pass  # counted as missing below
    finally:
        for name in pids:
            env.stop_proc(name)
    return {"rate_per_s": per_second, "insert_s": round(insert_s, 1), **_lateness(env, base)}


def _insert(pending: int, due: int, per_second: float, base: datetime,
            campaign: bool) -> None:
    """``pending`` scheduled messages: the first ``due`` at ``base + i / R`` (the measured
    set, armed later, each to a phone of its own), the others spread over the days after
    ``base + FAR``. With ``campaign`` the measured set is one campaign's messages, with
    their first attempts ``pending`` until ``send_at`` (``not_before``), as
    ``shared.campaigns`` stores a scheduled campaign."""
    now, campaign_id = utcnow(), str(uuid.uuid4()) if campaign else None
    for start in range(0, pending, CHUNK):
        rows, attempts = [], []
        for i in range(start, min(pending, start + CHUNK)):
            measured = i < due
            send_at = (base + timedelta(seconds=i / per_second) if measured
                       else base + FAR + timedelta(seconds=i))
            number = _phone(i) if measured else REQUEST["to"]["phone"]
            rows.append({"id": str(uuid.uuid4()), "app_id": "default", "status": "scheduled",
                         "recipient": number, "route": REQUEST["route"], "hop": 0,
                         "request": {**REQUEST, "to": {**REQUEST["to"], "phone": number}},
                         "event_seq": 0, "priority": "normal", "send_at": send_at,
                         "campaign_id": campaign_id if measured else None,
                         "created_at": now, "updated_at": now})
            if measured and campaign:
                attempts.append({"id": str(uuid.uuid4()), "message_id": rows[-1]["id"],
                                 "hop": 0, "channel": "sms", "provider": "messaggio",
                                 "status": "pending", "retries": 0, "not_before": send_at,
                                 "created_at": now, "updated_at": now})
        with session_scope() as session:
            session.execute(insert(Message), rows)
            if attempts:
                session.execute(insert(Attempt), attempts)


def _phone(index: int) -> str:
    """A distinct valid Belgian mobile number per measured message (default scenario)."""
    return f"+3247{index // 9000:03d}{1000 + index % 9000:04d}"


def _arm(base: datetime, window: float) -> datetime:
    """Move the measured set from ``base + offset`` to ``start + offset``, one UPDATE."""
    start = utcnow() + timedelta(seconds=LEAD)
    shift = {"s": (base - start).total_seconds(), "cut": base + timedelta(seconds=window + 1)}
    with session_scope() as session:
        session.execute(text("UPDATE messages SET send_at = send_at - make_interval(secs => :s)"
                             " WHERE status = 'scheduled' AND send_at < :cut"), shift)
        session.execute(text("UPDATE attempts SET not_before = not_before - "
                             "make_interval(secs => :s) WHERE not_before < :cut"), shift)
    return start


def _submitted(base: datetime) -> int:
    with session_scope() as session:
        return session.execute(text(
            "SELECT count(*) FROM attempts a JOIN messages m ON m.id = a.message_id "
            "WHERE m.send_at < :base AND a.submitted_at IS NOT NULL"), {"base": base}).scalar()


def _lateness(env: Env, base: datetime) -> dict[str, Any]:
    """p50/p99/max of release, sent and submitted lateness over the measured set."""
    measured = {r[0]: r[1] for r in env.rows(
        "SELECT id, send_at FROM messages WHERE send_at < :base", base=base)}
    released = {r[0]: (r[1] - measured[r[0]]).total_seconds() for r in env.rows(
        "SELECT e.message_id, e.created_at, e.payload FROM events e JOIN messages m "
        "ON m.id = e.message_id WHERE e.type = 'status' AND m.send_at < :base", base=base)
        if _status(r[2]) == "queued"}
    attempts = {r[0]: (r[1], r[2]) for r in env.rows(
        "SELECT a.id, a.message_id, a.submitted_at FROM attempts a JOIN messages m "
        "ON m.id = a.message_id WHERE m.send_at < :base", base=base)}
    submitted = [(at - measured[m]).total_seconds() for m, at in attempts.values()
                 if at is not None]
    by_phone = {r[0].lstrip("+"): r[1] for r in env.rows(
        "SELECT recipient, send_at FROM messages WHERE send_at < :base", base=base)}
    sent: dict[str, float] = {}  # phone -> lateness of its first arrival at the gateway
    for record in requests.get(f"{env.sim_url}_sim/messages", timeout=60).json():
        if record["phone"] in by_phone:
            sent.setdefault(record["phone"],
                            record["received_at"] - _epoch(by_phone[record["phone"]]))
    return {**_figures("release", list(released.values())),
            **_figures("sent", list(sent.values())),
            **_figures("submitted", submitted),
            "early": sum(v < 0 for v in sent.values()),
            "missing": len(measured) - len(sent)}


def _figures(name: str, values: list[float]) -> dict[str, float]:
    return {f"{name}_p50_s": round(percentile(values, 50), 3),
            f"{name}_p99_s": round(percentile(values, 99), 3),
            f"{name}_max_s": round(max(values, default=float("nan")), 3)}


def _status(payload: Any) -> str | None:
    data = payload if isinstance(payload, dict) else json.loads(payload)
    return data.get("status")


def _epoch(naive_utc: datetime) -> float:
    return calendar.timegm(naive_utc.timetuple()) + naive_utc.microsecond / 1e6


def _sleep_until(when: datetime) -> None:
    remaining = (when - utcnow()).total_seconds()
    if remaining > 0:
        time.sleep(remaining)
