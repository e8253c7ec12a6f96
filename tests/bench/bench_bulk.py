"""2. Bulk path: a campaign through the gateway's multi-phone request vs the per-message path.

Bulk: ``shared.client.send_campaign`` with N recipients → ``switchboard.accept_campaign``
(every row in one transaction) → ``switchboard.send_bulk`` batches of ``bulk_batch_size``
phones, one gateway request each. Per-message: the same content sent with ``send()`` once per
phone, each through accept → dispatch → send_attempt. Both are timed end to end, from the
producer's first call to the last attempt the gateway accepted (``submitted_at``), with the
worker already running and the same worker settings; the rate limit is set out of the way
(10^6/s) for both, since at the gateway's 10 msg/s account default both would simply measure
the limit. The per-message run uses fewer phones (the rate is what is compared).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.client import send, send_campaign
from shared.models import utcnow
from shared.settings import get_settings
from tests.bench.infra import Env, wait_for
from tests.bench.stats import rate

TARGET = 5.0
CONTENT = {"route": ["viber", "sms"], "text": "Spring sale", "sms_text": "Spring sale (SMS)"}


def run(env: Env, n_bulk: int, n_single: int, pool: str = "prefork",
        concurrency: int = 2) -> dict[str, Any]:
    bulk = _timed(env, n_bulk, pool, concurrency, _campaign)
    single = _timed(env, n_single, pool, concurrency, _one_by_one)
    return {"bulk_msgs_per_s": bulk, "per_message_msgs_per_s": single,
            "ratio": round(bulk / single, 2),
            "bulk_batch_size": get_settings().bulk_batch_size}


def _timed(env: Env, n: int, pool: str, concurrency: int, publish: Any) -> float:
    env.truncate()
    env.sim_reset()
    env.worker(pool, concurrency)
    try:
        started = utcnow()
        publish(n)
        wait_for(lambda: _submitted(env) >= n, timeout=120 + n / 10, interval=0.25,
                 what=f"{n} submitted attempts")
    finally:
        env.stop_proc("worker")
    last: datetime = env.scalar("SELECT max(submitted_at) FROM attempts")
    return rate(n, (last - started).total_seconds())


def _submitted(env: Env) -> int:
    return env.scalar("SELECT count(*) FROM attempts WHERE status = 'submitted'") or 0


def _phones(n: int) -> list[str]:
    return [f"+32470{100000 + i:06d}" for i in range(n)]


def _campaign(n: int) -> None:
    send_campaign(recipients=[{"phone": p} for p in _phones(n)], **CONTENT)


def _one_by_one(n: int) -> None:
    for phone in _phones(n):
        send(to={"phone": phone}, **CONTENT)
