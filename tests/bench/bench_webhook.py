"""3. Webhook receiver: delivery reports per second through ``POST /callbacks/messaggio/<token>``.

The real receiver (``webhooks.wsgi:app``: token check, parse, dedupe lookup, durable INSERT,
publish ``switchboard.handle_callback``) vs a bare Flask handler answering 200, both under the
same gunicorn settings (2 workers × 4 threads, the deploy defaults for 2 cores), loaded by
``wrk`` (Debian's package) on loopback for a fixed time. Every request carries a fresh
``msg_id``, so each one is stored (no dedupe short cut); the stored row count is checked
against wrk's request count.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from typing import Any

from tests.bench.infra import CALLBACK_TOKEN, Env

TARGET = 0.60
SCRIPT = """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  run = args[1]
  counter = 0
end
function request()
  counter = counter + 1
  local body = string.format("msg_id=%s-%d-%d&type=delivery&status=delivered",
                             run, tid, counter)
  return wrk.format("POST", nil,
                    {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end
"""


def run(env: Env, seconds: int, connections: int, threads: int = 2) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: apt-get install -y wrk")
    env.truncate()
    script = env.tmp / "report.lua"
    script.write_text(SCRIPT)
    path = f"/callbacks/messaggio/{CALLBACK_TOKEN}"
    full = _load(env, "webhooks.wsgi:app", "web", path, script, seconds, connections, threads)
    full["stored"] = env.scalar("SELECT count(*) FROM callbacks") or 0
    bare = _load(env, "tests.bench.bare_app:wsgi", "bare", path, script, seconds, connections,
                 threads)
    return {"receiver_req_per_s": full["rps"], "bare_req_per_s": bare["rps"],
            "ratio": round(full["rps"] / bare["rps"], 3),
            "receiver_p50_ms": full["p50_ms"], "receiver_p99_ms": full["p99_ms"],
            "bare_p50_ms": bare["p50_ms"], "bare_p99_ms": bare["p99_ms"],
            "receiver_requests": full["requests"], "receiver_non_2xx": full["non_2xx"],
            "stored": full["stored"], "bare_non_2xx": bare["non_2xx"]}


def _load(env: Env, app: str, name: str, path: str, script: Any, seconds: int,
          connections: int, threads: int) -> dict[str, Any]:
    url = env.gunicorn(app, name)
    try:
        out = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
             "--latency", "--timeout", "5s", "-s", str(script), f"{url}{path}", "--",
             uuid.uuid4().hex[:12]],
            capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    finally:
        env.stop_proc(name)
    return parse_wrk(out)


def parse_wrk(out: str) -> dict[str, Any]:
    """Requests/s, total requests, non-2xx count and latency percentiles from wrk's text."""
    def number(pattern: str, default: float = 0.0) -> float:
        match = re.search(pattern, out)
        return float(match.group(1)) if match else default

    return {"rps": number(r"Requests/sec:\s+([\d.]+)"),
            "requests": int(number(r"(\d+) requests in")),
            "non_2xx": int(number(r"Non-2xx or 3xx responses:\s+(\d+)")),
            "p50_ms": _latency(out, "50%"), "p99_ms": _latency(out, "99%")}


def _latency(out: str, label: str) -> float:
    match = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return round(value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 3)
