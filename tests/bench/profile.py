"""Where the time goes: py-spy samples of the dispatch worker and the webhook receiver.

    .venv/bin/python -m tests.bench.profile [--seconds 20]

Starts the same private stack as the benchmarks, loads it the same way (a queue of
per-message sends; wrk on the callback route), records the worker / gunicorn processes and
their children with ``py-spy record --format raw`` and prints, per process kind, the frames
with the largest inclusive share of samples (what NOTES.md summarises). Needs ``py-spy``
(``pip install py-spy``) and ptrace rights (root, or kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from tests.bench import bench_dispatch, bench_webhook
from tests.bench.infra import CALLBACK_TOKEN, Env

PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


def record(pid: int, seconds: int, out: Path) -> None:
    subprocess.run([PY_SPY, "record", "--pid", str(pid), "--subprocesses", "--duration",
                    str(seconds), "--rate", "200", "--format", "raw", "--output", str(out),
                    "--nonblocking"], check=True, capture_output=True)


SKIP = ("celery/", "billiard/", "click/", "threading.py", "runpy", "concurrent/futures",
        "gunicorn/", "flask/", "process ", "<module>", "main (", "_run_code")


def top_frames(raw: Path, limit: int = 30) -> list[tuple[float, str]]:
    """Inclusive share of samples per frame (counted once per stack), framework frames left
    out, then the leaf frames (where the samples were taken)."""
    totals: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames, weight = stack.split(";"), int(count)
        samples += weight
        leaves["leaf: " + frames[-1]] += weight
        for frame in set(frames):
            if not any(marker in frame for marker in SKIP):
                totals[frame] += weight
    ranked = totals.most_common(limit) + leaves.most_common(10)
    return [(round(100 * n / max(samples, 1), 1), frame) for frame, n in ranked]


def profile_worker(env: Env, seconds: int) -> Path:
    env.truncate()
    bench_dispatch._publish_pipeline(3000)
    pid = env.worker("prefork", 2, app="tests.bench.bare_app")
    out = env.tmp / "worker.raw"
    try:
        record(pid, seconds, out)
    finally:
        env.stop_proc("worker")
    return out


def profile_receiver(env: Env, seconds: int) -> Path:
    env.truncate()
    url = env.gunicorn("webhooks.wsgi:app", "web")
    script = env.tmp / "report.lua"
    script.write_text(bench_webhook.SCRIPT)
    load = threading.Thread(target=subprocess.run, daemon=True, kwargs={
        "args": ["wrk", "-t", "2", "-c", "16", "-d", f"{seconds + 2}s", "-s", str(script),
                 f"{url}/callbacks/messaggio/{CALLBACK_TOKEN}", "--", "profile"],
        "capture_output": True})
    load.start()
    out = env.tmp / "web.raw"
    try:
        record(env.procs["web"].pid, seconds, out)
    finally:
        load.join(seconds + 30)
        env.stop_proc("web")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args(argv)
    env = Env().start()
    try:
        for name, raw in (("dispatch worker", profile_worker(env, args.seconds)),
                          ("webhook receiver", profile_receiver(env, args.seconds))):
            print(f"== {name}: inclusive % of samples ({raw})")
            for share, frame in top_frames(raw):
                print(f"{share:5.1f}  {frame}")
    finally:
        env.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
