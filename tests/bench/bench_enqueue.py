"""5. Enqueue latency: ``send()`` p50/p99 from a producer process.

``send()`` validates the request (pydantic, phonenumbers), derives the id and publishes
``switchboard.accept``. The baseline publishes a no-op task with the same producer app and
broker (Celery's own publish cost). Calls alternate (send, bare, send, ...) so noise from the
shared machine hits both alike. No worker runs: this is the producer's side only.
"""

from __future__ import annotations

import time
from typing import Any

from shared.client import producer_app, send
from tests.bench.infra import Env
from tests.bench.stats import percentile

TARGET_P99_MS = 5.0
WARMUP = 50


def run(env: Env, n: int) -> dict[str, Any]:
    env.truncate()
    app = producer_app()
    sends: list[float] = []
    bares: list[float] = []
    for i in range(n + WARMUP):
        started = time.perf_counter()
        send(to={"phone": f"+32470{i:06d}"}, route=["viber", "sms"], text="Bench")
        mid = time.perf_counter()
        app.send_task("bench.noop", args=[i], queue="send")
        end = time.perf_counter()
        if i >= WARMUP:
            sends.append((mid - started) * 1000)
            bares.append((end - mid) * 1000)
    env.truncate()
    result = {"send_p50_ms": round(percentile(sends, 50), 3),
              "send_p99_ms": round(percentile(sends, 99), 3),
              "baseline_p50_ms": round(percentile(bares, 50), 3),
              "baseline_p99_ms": round(percentile(bares, 99), 3)}
    result["ratio_p99"] = round(result["send_p99_ms"] / result["baseline_p99_ms"], 3)
    return result
