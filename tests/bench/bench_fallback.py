"""4. Fallback timing at scale: how late each Viber → SMS fallback fires after its deadline.

P messages are inserted already ``submitted`` on Viber (route viber → sms), their deadlines
spread evenly at R per second, so P pending deadlines sit in the database and the Redis index
while they fall due at a steady rate. Worker and beat are the project's own (the deadline sweep
every second, recovery every 15 s); each fallback creates the SMS attempt and sends it to the
simulator. Lateness = the ``deadline_passed`` event's time minus the deadline it carries, for
every deadline that fell due in the measured windows; a deadline that never fired counts as
missing. RSS of each worker (main process + pool children) and of beat is read when the
windows start, after the first window (warm: every code path has run once) and at the end;
"flat" compares warm with end. The headline layout runs the ``sweep`` queue on its own
one-process worker; the baseline is that layout with only the deadlines that fire (no extra
pending rows); the default single worker for send, events and sweep is measured too.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, text

from shared.db import session_scope
from shared.models import Attempt, Message, utcnow
from tests.bench.infra import Env, rss_mb, wait_for
from tests.bench.stats import median, percentile

TARGET_P99_S = 1.5
LEAD = 3.0  # seconds between arming the deadlines and the first one falling due
SETTLE = 5.0  # seconds after the last measured deadline before counting
FAR = timedelta(days=1)
REQUEST = {"to": {"phone": "+32470100000"}, "route": ["viber", "sms"], "text": "Bench",
           "sms_text": "Bench (SMS)"}


def run(env: Env, pending: int, per_second: float, window: float, windows: int,
        ) -> dict[str, Any]:
    """At scale and as the baseline with the sweep on its own worker, then at scale with the
    default single worker serving send, events and sweep (where sweeps queue behind sends)."""
    due = int(per_second * window * windows)
    scale = _measure(env, pending, per_second, window, windows, dedicated_sweep=True)
    base = _measure(env, due, per_second, window, windows, dedicated_sweep=True)
    shared = _measure(env, pending, per_second, window, windows, dedicated_sweep=False)
    return {"pending": pending, "fired_per_window": int(per_second * window), **scale,
            **{f"baseline_{k}": v for k, v in base.items() if "rss" not in k},
            **{f"shared_worker_{k}": v for k, v in shared.items() if "rss" not in k},
            "ratio_p99": round(scale["late_p99_s"] / base["late_p99_s"], 2)
            if base["late_p99_s"] else float("nan")}


def _measure(env: Env, pending: int, per_second: float, window: float, windows: int,
             dedicated_sweep: bool) -> dict[str, Any]:
    env.truncate()
    env.sim_reset()
    base = utcnow() + FAR
    offsets = _insert(pending, per_second, base)
    pids = _start(env, dedicated_sweep)
    try:
        wait_for(lambda: _indexed(env) >= pending, 120, 0.5, "beat's deadline reindex")
        start = _arm(env, offsets, base)
        rss = {"start": {name: rss_mb(pid) for name, pid in pids.items()}}
        _sleep_until(start + timedelta(seconds=window))  # warm: every code path has run
        rss["warm"] = {name: rss_mb(pid) for name, pid in pids.items()}
        end = start + timedelta(seconds=window * windows)
        _sleep_until(end + timedelta(seconds=SETTLE))
        rss["end"] = {name: rss_mb(pid) for name, pid in pids.items()}
    finally:
        for name in pids:
            env.stop_proc(name)
    per_window = _lateness(env, offsets, start, window, windows)
    return {"late_p50_s": round(median([w["p50"] for w in per_window]), 3),
            "late_p99_s": round(median([w["p99"] for w in per_window]), 3),
            "late_max_s": max(w["max"] for w in per_window),
            "missing": sum(w["missing"] for w in per_window),
            **{f"{name}_rss_mb_{when}": rss[when][name] for when in rss for name in pids}}


def _start(env: Env, dedicated_sweep: bool) -> dict[str, int]:
    """The send worker (2 processes), beat, and with ``dedicated_sweep`` a 1-process worker
    for the sweep queue alone; returns name → pid."""
    if not dedicated_sweep:
        return {"worker": env.worker("prefork", 2), "beat": env.beat()}
    return {"worker": env.worker("prefork", 2, queues="send,events,notify"),
            "sweeper": env.worker("prefork", 1, queues="sweep", name="sweeper"),
            "beat": env.beat()}


def _insert(pending: int, per_second: float, base: datetime) -> dict[str, float]:
    """P submitted Viber attempts, deadline ``base + i / R``; returns attempt id → offset."""
    offsets: dict[str, float] = {}
    now = utcnow()
    for start in range(0, pending, 5000):
        messages, attempts = [], []
        for i in range(start, min(pending, start + 5000)):
            message_id, attempt_id, offset = str(uuid.uuid4()), str(uuid.uuid4()), i / per_second
            offsets[attempt_id] = offset
            messages.append({"id": message_id, "app_id": "default", "status": "submitted",
                             "recipient": REQUEST["to"]["phone"], "route": REQUEST["route"],
                             "hop": 0, "request": REQUEST, "event_seq": 0,
                             "created_at": now, "updated_at": now})
            attempts.append({"id": attempt_id, "message_id": message_id, "hop": 0,
                             "channel": "viber", "provider": "messaggio", "status": "submitted",
                             "retries": 0, "submitted_at": now, "created_at": now,
                             "updated_at": now,
                             "deadline_at": base + timedelta(seconds=offset)})
        with session_scope() as session:
            session.execute(insert(Message), messages)
            session.execute(insert(Attempt), attempts)
    return offsets


def _indexed(env: Env) -> int:
    import redis

    from worker.deadlines import KEY

    return redis.Redis.from_url(env.redis_url).zcard(KEY)


def _arm(env: Env, offsets: dict[str, float], base: datetime) -> datetime:
    """Move every deadline from ``base + offset`` to ``start + offset``: rows, then index."""
    import redis

    from worker import deadlines

    start = utcnow() + timedelta(seconds=LEAD)
    shift = (base - start).total_seconds()
    with session_scope() as session:
        session.execute(text("UPDATE attempts SET deadline_at = deadline_at - "
                             "make_interval(secs => :s) WHERE deadline_at IS NOT NULL"),
                        {"s": shift})
    client = redis.Redis.from_url(env.redis_url)
    items = [(a, start + timedelta(seconds=o)) for a, o in offsets.items()]
    for i in range(0, len(items), 10000):
        deadlines.index(client, items[i:i + 10000])
    return start


def _sleep_until(when: datetime) -> None:
    remaining = (when - utcnow()).total_seconds()
    if remaining > 0:
        time.sleep(remaining)


def _lateness(env: Env, offsets: dict[str, float], start: datetime, window: float,
              windows: int) -> list[dict[str, float]]:
    """Per window: p50/p99/max lateness in seconds, and how many never fired."""
    fired = {row[0]: (row[1] - _deadline(row[2])).total_seconds() for row in env.rows(
        "SELECT attempt_id, created_at, payload FROM events WHERE type = 'deadline_passed'")}
    result = []
    for k in range(windows):
        ids = [a for a, o in offsets.items() if k * window <= o < (k + 1) * window]
        late = [fired[a] for a in ids if a in fired]
        result.append({"p50": round(percentile(late, 50), 3),
                       "p99": round(percentile(late, 99), 3),
                       "max": round(max(late, default=float("nan")), 3),
                       "missing": len(ids) - len(late)})
    return result


def _deadline(payload: Any) -> datetime:
    data = payload if isinstance(payload, dict) else json.loads(payload)
    return datetime.fromisoformat(data["deadline_at"].removesuffix("Z"))
