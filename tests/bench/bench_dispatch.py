"""1. Dispatch throughput: N messages through the whole per-message pipeline vs a bare task.

Pipeline: ``shared.client.send`` → ``switchboard.accept`` (insert) → dispatch (attempt row)
→ send_attempt (rate-limit slot, CAS, deadline index, one POST to the simulator answering
after a fixed 1 ms, CAS to submitted, events). Baseline: ``bench.bare_send`` (one POST of the
same request through the same adapter, one INSERT) in the same Celery app, broker, database
and worker command. The queue is filled first with no worker running; the rate is taken from
the first to the last completion as stamped in the database, so worker start-up and enqueue
speed are not in it. Reports are off (the simulator has no report URL) so only dispatch runs.
"""

from __future__ import annotations

from typing import Any

from shared.client import producer_app, send
from tests.bench.infra import Env, wait_for
from tests.bench.stats import rate

TARGET = 0.70


def run(env: Env, n: int, pool: str, concurrency: int) -> dict[str, Any]:
    """One pipeline run and one baseline run under the same worker settings."""
    pipeline = _measure(env, n, pool, concurrency, _publish_pipeline,
                        "SELECT submitted_at FROM attempts WHERE status = 'submitted'")
    baseline = _measure(env, n, pool, concurrency, _publish_baseline,
                        "SELECT created_at FROM bench_rows")
    return {"pipeline_msgs_per_s": pipeline, "baseline_msgs_per_s": baseline,
            "ratio": round(pipeline / baseline, 3)}


def _measure(env: Env, n: int, pool: str, concurrency: int, publish: Any, stamps_sql: str,
             ) -> float:
    env.truncate()
    publish(n)
    env.worker(pool, concurrency, app="tests.bench.bare_app")
    try:
        wait_for(lambda: len(env.rows(stamps_sql)) >= n, timeout=60 + n / 5, interval=0.2,
                 what=f"{n} completions")
    finally:
        env.stop_proc("worker")
    stamps = sorted(row[0] for row in env.rows(stamps_sql))
    return rate(len(stamps) - 1, (stamps[-1] - stamps[0]).total_seconds())


def _publish_pipeline(n: int) -> None:
    for i in range(n):
        send(to={"phone": f"+32470{i:06d}"}, route=["viber", "sms"], text="Bench",
             sms_text="B")


def _publish_baseline(n: int) -> None:
    app = producer_app()
    for i in range(n):
        app.send_task("bench.bare_send", args=[i], queue="send")
