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
A message not sent within the drain time counts as missing. Three layouts of the same run:
the asked rate at scale, the same rate without the far-ahead rows (the baseline), and a rate
the send pipeline sustains on this machine (section 1 of the notes) at scale.
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
from shared.models import Message, utcnow
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
    """The asked rate at scale and without the extra rows, and a sustainable rate at scale."""
    scale = _measure(env, pending, per_second, window)
    base = _measure(env, int(per_second * window), per_second, window)
    sustained = _measure(env, pending, sustained_per_second, window)
    return {"pending": pending, "due": int(per_second * window), **scale,
            **{f"baseline_{k}": v for k, v in base.items()},
            **{f"sustained_{k}": v for k, v in sustained.items()},
            "ratio_p99": round(scale["sent_p99_s"] / base["sent_p99_s"], 2)
            if base["sent_p99_s"] else float("nan")}


def _measure(env: Env, pending: int, per_second: float, window: float) -> dict[str, Any]:
    env.truncate()
    env.sim_reset()
    due = int(per_second * window)
    base = utcnow() + FAR
    inserted = time.monotonic()
    _insert(pending, due, per_second, base)
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


def _insert(pending: int, due: int, per_second: float, base: datetime) -> None:
    """``pending`` scheduled messages: the first ``due`` at ``base + i / R`` (the measured
    set, armed later), the others spread over the days after ``base + FAR``."""
    now = utcnow()
    for start in range(0, pending, CHUNK):
        rows = []
        for i in range(start, min(pending, start + CHUNK)):
            send_at = (base + timedelta(seconds=i / per_second) if i < due
                       else base + FAR + timedelta(seconds=i))
            rows.append({"id": str(uuid.uuid4()), "app_id": "default", "status": "scheduled",
                         "recipient": REQUEST["to"]["phone"], "route": REQUEST["route"],
                         "hop": 0, "request": REQUEST, "event_seq": 0, "priority": "normal",
                         "send_at": send_at, "created_at": now, "updated_at": now})
        with session_scope() as session:
            session.execute(insert(Message), rows)


def _arm(base: datetime, window: float) -> datetime:
    """Move the measured set from ``base + offset`` to ``start + offset``, one UPDATE."""
    start = utcnow() + timedelta(seconds=LEAD)
    with session_scope() as session:
        session.execute(text("UPDATE messages SET send_at = send_at - make_interval(secs => :s)"
                             " WHERE status = 'scheduled' AND send_at < :cut"),
                        {"s": (base - start).total_seconds(),
                         "cut": base + timedelta(seconds=window + 1)})
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
    sent: dict[str, float] = {}
    for record in requests.get(f"{env.sim_url}_sim/messages", timeout=60).json():
        found = attempts.get(record.get("p_transaction_id"))
        if found is not None:
            message_id = found[0]
            sent.setdefault(message_id, record["received_at"] - _epoch(measured[message_id]))
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
