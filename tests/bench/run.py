"""Run every benchmark, print one JSON line each, and rewrite ``tests/bench/RESULTS.md``.

    .venv/bin/python -m tests.bench.run            # full sizes, each benchmark 3 times
    .venv/bin/python -m tests.bench.run --quick    # small sizes, once: a smoke run (~3 min)

Each JSON line holds the median figures of the repeats, the baseline measured in the same
run, their ratio (the median of the per-run ratios: each run's ratio is against its own
baseline, which is what stays meaningful on a noisy shared machine), the target and whether it
was met, the settings, and every run's raw figures. Not part of the test suite: pytest only
collects ``test_*.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from tests.bench import (
    bench_bulk,
    bench_dispatch,
    bench_enqueue,
    bench_fallback,
    bench_schedule,
    bench_webhook,
)
from tests.bench.infra import SIM_LATENCY, Env
from tests.bench.stats import median

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
NOTES = HERE / "NOTES.md"

FULL = {"repeat": 3, "dispatch_n": 300, "bulk_n": 10_000, "single_n": 600,
        "webhook_seconds": 10, "webhook_connections": 16, "fallback_pending": 100_000,
        "fallback_rate": 20.0, "fallback_window": 15.0, "fallback_windows": 3,
        "enqueue_n": 2_000, "schedule_pending": 100_000, "schedule_rate": 200.0,
        "schedule_window": 15.0, "schedule_sustained_rate": 20.0}
QUICK = {"repeat": 1, "dispatch_n": 150, "bulk_n": 2_000, "single_n": 300,
         "webhook_seconds": 3, "webhook_connections": 16, "fallback_pending": 10_000,
         "fallback_rate": 20.0, "fallback_window": 5.0, "fallback_windows": 2,
         "enqueue_n": 300, "schedule_pending": 10_000, "schedule_rate": 200.0,
         "schedule_window": 5.0, "schedule_sustained_rate": 20.0}


def repeated(times: int, once: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``once`` ``times`` times; the median of every numeric figure, plus the raw runs."""
    runs = [once() for _ in range(times)]
    summary: dict[str, Any] = {}
    for key, value in runs[0].items():
        values = [r[key] for r in runs]
        summary[key] = median(values) if isinstance(value, (int, float)) else value
    return {**summary, "runs": runs}


def verdict(value: float, target: float, higher_is_better: bool, unit: str) -> dict[str, Any]:
    """Met or not; when missed, by how much (absolute, and as a share of the target)."""
    met = value >= target if higher_is_better else value <= target
    out: dict[str, Any] = {"target": target, "met": met}
    if not met:
        gap = abs(target - value)
        out["missed_by"] = f"{gap:.3g}{unit} ({gap / target:.0%} of the target)"
    return out


def bench_1(env: Env, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    lines = []
    for pool, concurrency in (("prefork", 2), ("threads", 4)):
        fig = repeated(cfg["repeat"], lambda p=pool, c=concurrency: bench_dispatch.run(
            env, cfg["dispatch_n"], p, c))
        lines.append({"bench": "dispatch_throughput", "pool": pool, **fig,
                      **verdict(fig["ratio"], bench_dispatch.TARGET, True, ""),
                      "settings": {"n": cfg["dispatch_n"], "pool": pool,
                                   "concurrency": concurrency,
                                   "provider_latency_ms": SIM_LATENCY * 1000,
                                   "worker": "acks_late, prefetch 1, events on (-E), "
                                             "ignore_result", "rate_limit_per_s": 1_000_000}})
    return lines


def bench_2(env: Env, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    fig = repeated(cfg["repeat"], lambda: bench_bulk.run(env, cfg["bulk_n"], cfg["single_n"]))
    return [{"bench": "bulk_path", **fig, **verdict(fig["ratio"], bench_bulk.TARGET, True, "x"),
             "settings": {"campaign_phones": cfg["bulk_n"], "per_message_phones": cfg["single_n"],
                          "pool": "prefork", "concurrency": 2,
                          "provider_latency_ms": SIM_LATENCY * 1000,
                          "rate_limit_per_s": 1_000_000}}]


def bench_3(env: Env, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    fig = repeated(cfg["repeat"], lambda: bench_webhook.run(
        env, cfg["webhook_seconds"], cfg["webhook_connections"]))
    return [{"bench": "webhook_receiver", **fig,
             **verdict(fig["ratio"], bench_webhook.TARGET, True, ""),
             "settings": {"load_generator": _wrk_version(), "seconds": cfg["webhook_seconds"],
                          "connections": cfg["webhook_connections"], "wrk_threads": 2,
                          "gunicorn": "2 workers x 4 threads (gthread)"}}]


def bench_4(env: Env, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    fig = bench_fallback.run(env, cfg["fallback_pending"], cfg["fallback_rate"],
                             cfg["fallback_window"], cfg["fallback_windows"])
    rss_flat = all(fig[f"{name}_rss_mb_end"] - fig[f"{name}_rss_mb_warm"] < limit
                   for name, limit in (("worker", 20), ("sweeper", 20), ("beat", 5)))
    judged = verdict(fig["late_p99_s"], bench_fallback.TARGET_P99_S, False, " s")
    if not rss_flat:
        judged.update(met=False, rss="grew: see the *_rss_mb_* figures")
    return [{"bench": "fallback_timing", **fig, "rss_flat": rss_flat, **judged,
             "settings": {"pending": cfg["fallback_pending"],
                          "falling_due_per_s": cfg["fallback_rate"],
                          "window_s": cfg["fallback_window"],
                          "windows (the repeats)": cfg["fallback_windows"],
                          "sweep_interval_s": 1.0,
                          "layout": "send worker prefork x2 (-Q send,events,notify) + sweep "
                                    "worker prefork x1 (-Q sweep) + beat; shared_worker_*: "
                                    "one prefork x2 worker for all queues",
                          "rss_flat_means": "from warm (after window 1) to the end, each worker "
                                            "grew < 20 MiB, beat < 5 MiB"}}]


def bench_5(env: Env, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    fig = repeated(cfg["repeat"], lambda: bench_enqueue.run(env, cfg["enqueue_n"]))
    return [{"bench": "enqueue_latency", **fig,
             **verdict(fig["send_p99_ms"], bench_enqueue.TARGET_P99_MS, False, " ms"),
             "settings": {"calls": cfg["enqueue_n"], "warmup": bench_enqueue.WARMUP,
                          "broker": "private redis-server, unix socket"}}]


def bench_6(env: Env, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    fig = bench_schedule.run(env, cfg["schedule_pending"], cfg["schedule_rate"],
                             cfg["schedule_window"], cfg["schedule_sustained_rate"])
    return [{"bench": "schedule_timing", **fig,
             **verdict(fig["sent_p99_s"], bench_schedule.TARGET_P99_S, False, " s"),
             "settings": {"scheduled": cfg["schedule_pending"],
                          "falling_due_per_s": cfg["schedule_rate"],
                          "window_s": cfg["schedule_window"],
                          "sustained_per_s": cfg["schedule_sustained_rate"],
                          "sweep_interval_s": 1.0, "route": ["sms"],
                          "layout": "send worker prefork x2 (-Q critical,send,events,notify) + "
                                    "sweep worker prefork x1 (-Q sweep) + beat",
                          "figures": "release = status queued event - send_at; sent = "
                                     "simulator receipt - send_at; submitted = attempt "
                                     "submitted_at - send_at; target on sent p99"}}]


BENCHES = {"dispatch": bench_1, "bulk": bench_2, "webhook": bench_3, "fallback": bench_4,
           "enqueue": bench_5, "schedule": bench_6}


def machine(env: Env) -> dict[str, Any]:
    """Cores, CPU model and the versions that shape the figures."""
    import redis

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cores": os.cpu_count(), "cpu": cpu,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "redis": redis.Redis.from_url(env.redis_url).info("server")["redis_version"],
            "postgresql": env.scalar("SHOW server_version"),
            **{name: version(name) for name in ("celery", "kombu", "redis", "sqlalchemy",
                                                "psycopg2-binary", "flask", "gunicorn")},
            "wrk": _wrk_version()}


def _wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], check=False, capture_output=True,
                             text=True).stdout
    except OSError:
        return "not installed"
    return out.split("Copyright")[0].strip()


def write_results(command: str, info: dict[str, Any], lines: list[dict[str, Any]],
                  elapsed: float) -> None:
    """RESULTS.md: the summary table, the machine, the JSON lines, then the notes."""
    rows = [_row(line) for line in lines]
    text = "\n".join([
        "# Benchmark results", "",
        (f"Produced by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in "
        f"{elapsed / 60:.1f} min. Rewritten by every run; the analysis of missed targets "
        "below it comes from `tests/bench/NOTES.md`."), "",
        "| benchmark | figure (median) | baseline (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|", *rows, "",
        "## Machine", "", "```json", json.dumps(info, indent=2), "```", "",
        "## JSON lines", "", "```", *(json.dumps(line) for line in lines), "```", "",
        NOTES.read_text() if NOTES.exists() else ""])
    RESULTS.write_text(text.rstrip() + "\n")


def _row(line: dict[str, Any]) -> str:
    met = "yes" if line["met"] else f"**no**, missed by {line.get('missed_by')}"
    name = line["bench"] + (f" ({line['pool']})" if "pool" in line else "")
    figure, baseline, ratio, target = _figures(line)
    return f"| {name} | {figure} | {baseline} | {ratio} | {target} | {met} |"


def _figures(line: dict[str, Any]) -> tuple[str, str, str, str]:
    bench = line["bench"]
    if bench == "dispatch_throughput":
        return (f"{line['pipeline_msgs_per_s']} msg/s", f"{line['baseline_msgs_per_s']} msg/s",
                f"{line['ratio']:.0%}", "≥ 70 % of baseline")
    if bench == "bulk_path":
        return (f"{line['bulk_msgs_per_s']} msg/s", (f"{line['per_message_msgs_per_s']} msg/s "
                "(per-message path)"), f"{line['ratio']}×", "≥ 5×")
    if bench == "webhook_receiver":
        return (f"{line['receiver_req_per_s']} req/s", (f"{line['bare_req_per_s']} req/s (bare "
                "Flask)"), f"{line['ratio']:.0%}", "≥ 60 % of bare")
    if bench == "fallback_timing":
        return ((f"late p50 {line['late_p50_s']} s / p99 {line['late_p99_s']} s / max "
                f"{line['late_max_s']} s, {line['missing']} missing; RSS start→warm→end: "
                f"worker {_rss(line, 'worker')}, sweeper {_rss(line, 'sweeper')}, beat "
                f"{_rss(line, 'beat')} MiB (one worker for "
                f"all queues instead: p99 {line['shared_worker_late_p99_s']} s)"),
                f"p99 {line['baseline_late_p99_s']} s with no extra pending",
                f"{line['ratio_p99']}× (p99)", "p99 ≤ 1.5 s late, RSS flat")
    if bench == "schedule_timing":
        return ((f"sent late p50 {line['sent_p50_s']} s / p99 {line['sent_p99_s']} s / max "
                 f"{line['sent_max_s']} s at {line['rate_per_s']:g}/s with {line['pending']} "
                 f"scheduled, {line['missing']} missing (released: p99 "
                 f"{line['release_p99_s']} s; at {line['sustained_rate_per_s']:g}/s: sent p99 "
                 f"{line['sustained_sent_p99_s']} s, released p99 "
                 f"{line['sustained_release_p99_s']} s; as one scheduled campaign at "
                 f"{line['rate_per_s']:g}/s: sent p99 {line['campaign_sent_p99_s']} s)"),
                f"sent p99 {line['baseline_sent_p99_s']} s with no extra scheduled",
                f"{line['ratio_p99']}× (p99)", "p99 ≤ 1 s late")
    return (f"send p50 {line['send_p50_ms']} ms / p99 {line['send_p99_ms']} ms",
            f"bare publish p50 {line['baseline_p50_ms']} ms / p99 {line['baseline_p99_ms']} ms",
            f"{line['ratio_p99']}× (p99)", "p99 ≤ 5 ms")


def _rss(line: dict[str, Any], name: str) -> str:
    return "→".join(str(line[f"{name}_rss_mb_{when}"]) for when in ("start", "warm", "end"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--only", default="", help="comma-separated: " + ",".join(BENCHES))
    parser.add_argument("--no-write", action="store_true", help="do not rewrite RESULTS.md")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    chosen = [b for b in (args.only.split(",") if args.only else BENCHES) if b]
    started, lines = time.monotonic(), []
    env = Env().start()
    try:
        info = machine(env)
        for name in chosen:
            for line in BENCHES[name](env, cfg):
                print(json.dumps(line), flush=True)
                lines.append(line)
    finally:
        env.stop()
    if not args.no_write:
        command = "python -m tests.bench.run" + (" --quick" if args.quick else "") + (
            f" --only {args.only}" if args.only else "")
        write_results(command, info, lines, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
