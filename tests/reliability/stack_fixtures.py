"""A whole Switchboard for the fault-injection tests, one per test module, with its own knobs.

Why not the integration suite's session ``stack``: these tests SIGKILL and restart the worker
and beat, wipe Redis, change the worker's concurrency and the retry and deadline settings,
and count every request the simulator accepted, so each needs a stack of its own that it may
break. The pieces are the integration suite's (``Stack``, ``wait_for``, the database reset,
serving the app in a thread): same embedded Redis or ``SWITCHBOARD_TEST_REDIS_URL``, same SQLite
file or ``SWITCHBOARD_TEST_DATABASE_URL``. Everything started here is stopped and the
environment restored when the module's tests are done.

The checks every test shares live here too: ``assert_no_loss_no_duplicate`` compares what the
database says with what the simulator accepted, per (message, channel).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import func, select

from shared import db
from shared.db import session_scope
from shared.localrun import start_embedded_redis
from shared.migrations import upgrade
from shared.models import Attempt, Callback, Event, Message
from shared.providers.sandbox.messaggio import SimulatorConfig, SimulatorServer
from tests.integration.conftest import (
    API_KEY,
    CALLBACK_TOKEN,
    CLIENT_TIMEOUT,
    DEADLINE_SECONDS,
    SIGNING_SECRET,
    Stack,
    _reset_database,
    _serve,
    reset_process_caches,
    wait_for,
)

ACTIVE_ATTEMPT = ("pending", "sending", "submitted")
FINAL_MESSAGE = frozenset({"delivered", "seen", "failed", "expired"})
REPO = Path(__file__).resolve().parents[2]


def phone(index: int, scenario: str | None = None) -> str:
    """A valid Belgian mobile number, unique per ``index``; its last four digits pick the
    simulator's scenario (``None``: the default one, delivered then seen; index < 9,000,000;
    with a scenario, index < 1,000)."""
    if scenario is None:
        return f"+3247{index // 9000:03d}{1000 + index % 9000:04d}"
    return f"+3247{index:03d}{scenario}"


@dataclass
class Options:
    """What a module changes from the integration stack's defaults."""

    concurrency: int = 2
    env: dict[str, str] = field(default_factory=dict)
    simulator: SimulatorConfig = field(default_factory=lambda: SimulatorConfig(report_delay=0.1))
    reports: bool = True  # False: the simulator records its reports but posts none


class ReliabilityStack(Stack):
    """The integration ``Stack`` plus a chosen concurrency, beat control and direct access to
    the database, Redis and the simulator's records."""

    def __init__(self, tmp: Path, options: Options) -> None:
        super().__init__(tmp)
        self.options = options
        self.redis_url = ""
        self.callback_url = ""
        self.sweeper: subprocess.Popen[bytes] | None = None
        self._sweeper_runs = 0

    # --- processes (the Procfile's topology: sending worker, one-process sweeper, beat) ----
    def start_worker(self) -> None:
        """Sends and reports (and webhooks) with the module's concurrency; waits until ready."""
        self._worker_runs += 1
        self.worker = self._start(f"worker-{self._worker_runs}", "critical,send,events,notify",
                                  self.options.concurrency)

    def start_sweeper(self) -> None:
        """Deadlines and recovery on their own process, as in production."""
        self._sweeper_runs += 1
        self.sweeper = self._start(f"sweeper-{self._sweeper_runs}", "sweep", 1)

    def _start(self, name: str, queues: str, concurrency: int) -> subprocess.Popen[bytes]:
        proc = self._spawn(name, ["worker", "-E", "-Q", queues, "-P", "prefork",
                                  "-c", str(concurrency), "--loglevel", "INFO",
                                  "--hostname", f"{name}@reliability"])
        log_path = self.tmp / f"{name}.log"
        wait_for(lambda: b" ready." in log_path.read_bytes(), 60, 0.1, f"{name} to be ready")
        return proc

    def kill_sweeper(self) -> None:
        _kill(self.sweeper)

    def worker_log(self) -> bytes:
        """What the current sending worker logged so far (tasks received, succeeded, ...)."""
        return (self.tmp / f"worker-{self._worker_runs}.log").read_bytes()

    def kill_beat(self) -> None:
        """SIGKILL beat (a crash: it re-indexes deadlines when started again)."""
        _kill(self.beat)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    # --- producing -----------------------------------------------------------------------
    def post_all(self, bodies: list[dict[str, Any]], threads: int = 8) -> list[str]:
        """POST every body to /v1/messages (a few at a time); returns the ids in order."""
        def post(body: dict[str, Any]) -> str:
            response = self.post_message(**body)
            assert response.status_code == 202, response.text
            return response.json()["id"]
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(post, bodies))

    # --- looking -------------------------------------------------------------------------
    def sim_sends(self) -> Counter[tuple[str, str, str]]:
        """Requests the simulator accepted, per (p_transaction_id, phone without +, channel)."""
        assert self.simulator is not None
        return Counter((m["p_transaction_id"], m["phone"], m["channel"])
                       for m in self.simulator.state.messages())

    def count(self, query: Any) -> int:
        with session_scope() as session:
            return session.scalar(query) or 0


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a celery process and its pool at once: no warm shutdown, no acks."""
    assert proc is not None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@dataclass(frozen=True)
class Row:
    """One message and its attempts as the database has them."""

    id: str
    status: str
    hop: int
    recipient: str
    attempts: tuple[dict[str, Any], ...]


def load_rows(message_ids: Iterable[str] | None = None) -> dict[str, Row]:
    """Messages (all, or these) with their attempts ordered by hop."""
    wanted = set(message_ids) if message_ids is not None else None
    with session_scope() as session:
        messages = session.execute(select(Message.id, Message.status, Message.hop,
                                          Message.recipient)).all()
        attempts = session.execute(select(
            Attempt.id, Attempt.message_id, Attempt.hop, Attempt.channel, Attempt.status,
            Attempt.error_reason, Attempt.retries).order_by(Attempt.hop)).all()
    by_message: dict[str, list[dict[str, Any]]] = {}
    for attempt in attempts:
        by_message.setdefault(attempt.message_id, []).append(dict(attempt._mapping))
    return {m.id: Row(m.id, m.status, m.hop, m.recipient, tuple(by_message.get(m.id, ())))
            for m in messages if wanted is None or m.id in wanted}


def events_of(types: Iterable[str]) -> list[dict[str, Any]]:
    """Events of these types, in (message, seq) order."""
    with session_scope() as session:
        rows = session.execute(select(Event.message_id, Event.attempt_id, Event.seq, Event.type,
                                      Event.payload).where(Event.type.in_(list(types)))
                               .order_by(Event.message_id, Event.seq)).all()
    return [dict(r._mapping) for r in rows]


def unsettled(stack: ReliabilityStack, transient: Iterable[tuple[str, str]] = ()) -> int:
    """How much work is still open: messages not final, attempts still active, attempts in a
    ``(channel, status)`` the scenario always moves on from, stored callbacks not handled, and
    reports the simulator has yet to post. Zero means settled."""
    open_work = stack.count(select(func.count()).select_from(Message)
                            .where(Message.status.not_in(sorted(FINAL_MESSAGE))))
    open_work += stack.count(select(func.count()).select_from(Attempt)
                             .where(Attempt.status.in_(ACTIVE_ATTEMPT)))
    for channel, status in transient:
        open_work += stack.count(select(func.count()).select_from(Attempt).where(
            Attempt.channel == channel, Attempt.status == status))
    open_work += stack.count(select(func.count()).select_from(Callback)
                             .where(Callback.status == "received"))
    assert stack.simulator is not None
    return open_work + stack.simulator.state.dispatcher.pending()


def wait_settled(stack: ReliabilityStack, timeout: float,
                 transient: Iterable[tuple[str, str]] = (("viber", "delivered"),)) -> None:
    """Wait until ``unsettled`` is zero; the failure message says how much was left."""
    transient = tuple(transient)
    left: list[int] = []

    def settled() -> bool:
        left.append(unsettled(stack, transient))
        return left[-1] == 0
    try:
        wait_for(settled, timeout, 0.25, "every message to settle")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {left[-1]} open items left") from None


def post_paced(stack: ReliabilityStack, bodies: list[dict[str, Any]], open_limit: int,
               after_chunk: Callable[[list[str]], None] | None = None,
               chunk: int = 25) -> list[str]:
    """POST the bodies a chunk at a time, waiting while ``unsettled`` work is ``open_limit``
    or more; ``after_chunk(ids so far)`` runs after each chunk (e.g. to inject a fault).

    Why paced: posted all at once, hundreds of messages would wait in the queues longer than
    the recovery sweep's "stuck" age, and their re-published copies would be a test of
    queue depth, not of the fault. Paced, only what the fault left behind looks stuck.
    """
    ids: list[str] = []
    for start in range(0, len(bodies), chunk):
        wait_for(lambda: unsettled(stack) < open_limit, 120, 0.1, "open work to drain")
        ids += stack.post_all(bodies[start:start + chunk])
        if after_chunk is not None:
            after_chunk(ids)
    return ids


def assert_no_loss_no_duplicate(stack: ReliabilityStack, message_ids: list[str]) -> dict[str, Row]:
    """The counts the suite is about, for these messages:

    * every message exists and is final, with exactly one attempt per hop up to its hop;
    * the simulator accepted at most one request per (message, channel), and every request it
      accepted belongs to an attempt of ours, with the message's phone and the attempt's
      channel (a send we do not know of would be a duplicate in disguise);
    * every attempt a report moved to ``delivered``/``seen`` was accepted exactly once.
    """
    rows = load_rows(message_ids)
    assert len(rows) == len(set(message_ids)), "messages missing from the database"
    not_final = Counter(r.status for r in rows.values() if r.status not in FINAL_MESSAGE)
    assert not not_final, f"messages not final: {dict(not_final)}"
    for row in rows.values():
        assert [a["hop"] for a in row.attempts] == list(range(row.hop + 1)), row
    attempts = {a["id"]: (row, a) for row in rows.values() for a in row.attempts}
    per_channel: Counter[tuple[str, str]] = Counter()
    for (ptid, sent_phone, channel), times in stack.sim_sends().items():
        assert ptid in attempts, f"the simulator accepted a send of no attempt of ours: {ptid}"
        row, attempt = attempts[ptid]
        assert (sent_phone, channel) == (row.recipient.lstrip("+"), attempt["channel"])
        per_channel[(row.id, channel)] += times
    doubled = {k: n for k, n in per_channel.items() if n > 1}
    assert not doubled, f"{len(doubled)} (message, channel) sent more than once: {doubled}"
    for attempt_id, (row, attempt) in attempts.items():
        if attempt["status"] in ("delivered", "seen"):
            assert per_channel[(row.id, attempt["channel"])] == 1, (attempt_id, attempt)
    return rows


def base_env(tmp: Path, redis_url: str, broker_url: str, database_url: str,
             simulator: SimulatorServer) -> dict[str, str]:
    """The integration stack's settings (short deadline, fast recovery, high rate limit)."""
    return {
        **os.environ,
        "SWITCHBOARD_DATA_DIR": str(tmp),
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_BROKER_URL": broker_url,
        "SWITCHBOARD_API_KEYS": API_KEY,
        "SWITCHBOARD_MESSAGGIO_URL": simulator.url,
        "SWITCHBOARD_MESSAGGIO_MEDIA_URL": simulator.media_url,
        "SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN": CALLBACK_TOKEN,
        "SWITCHBOARD_MESSAGGIO_RATE_PER_SECOND": "500",
        "SWITCHBOARD_MESSAGGIO_TIMEOUT_SECONDS": str(CLIENT_TIMEOUT),
        "SWITCHBOARD_TEST_DEADLINE_SECONDS": str(DEADLINE_SECONDS),
        "SWITCHBOARD_CALLBACK_SIGNING_SECRET": SIGNING_SECRET,
        # Producer receivers and image servers of these tests listen on this host.
        "SWITCHBOARD_EGRESS_ALLOW": "127.0.0.1/32,::1/128",
        "SWITCHBOARD_NOTIFY_RETRY_SCALE": "0.01",
        "SWITCHBOARD_REQUEUE_STUCK_AFTER_SECONDS": "3",
        "SWITCHBOARD_RECOVER_INTERVAL_SECONDS": "1",
        "PYTHONPATH": str(REPO),
    }


def _clear_caches() -> None:
    """Settings, engines, adapters and Redis clients are cached per process."""
    if db.get_engine.cache_info().currsize:
        db.get_engine().dispose()
    reset_process_caches()


@contextmanager
def _redis(tmp: Path) -> Iterator[tuple[str, str]]:
    """(redis URL, broker URL): the machine's (its database flushed before and after) or an
    embedded one of our own."""
    url = os.environ.get("SWITCHBOARD_TEST_REDIS_URL")
    if url:
        client = redis.Redis.from_url(url)
        client.flushdb()
        try:
            yield url, url
        finally:
            client.flushdb()
        return
    socket_path = tmp / "redis.sock"
    proc = start_embedded_redis(tmp, socket_path)
    try:
        yield f"unix://{socket_path}", f"redis+socket://{socket_path}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _database(tmp: Path) -> str:
    url = os.environ.get("SWITCHBOARD_TEST_DATABASE_URL")
    if url:
        _reset_database(url)
        return url
    return f"sqlite:///{tmp}/sb.db"


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """Set the stack's variables in this process (the web app reads them), restore after."""
    saved = dict(os.environ)
    os.environ.update(env)
    _clear_caches()
    try:
        yield
    finally:
        _clear_caches()
        os.environ.clear()
        os.environ.update(saved)
        reset_process_caches()


@contextmanager
def reliability_stack(tmp: Path, options: Options) -> Iterator[ReliabilityStack]:
    """Redis, database, simulator, web app, beat and worker, all stopped on the way out."""
    stack = ReliabilityStack(tmp, options)
    with _redis(tmp) as (redis_url, broker_url), SimulatorServer(options.simulator) as sim:
        stack.simulator, stack.redis_url = sim, redis_url
        stack.env = {**base_env(tmp, redis_url, broker_url, _database(tmp), sim),
                     **options.env}
        with _environment(stack.env):
            upgrade()
            from webhooks.app import create_app

            stack.api_url, stop_api = _serve(create_app())
            stack.callback_url = f"{stack.api_url}/callbacks/messaggio/{CALLBACK_TOKEN}"
            if options.reports:
                sim.state.update_config({"dlr_url": stack.callback_url})
            try:
                stack.start_beat()
                stack.start_sweeper()
                stack.start_worker()
                yield stack
            finally:
                _stop(stack)
                stop_api()


def _stop(stack: ReliabilityStack) -> None:
    """SIGTERM worker, sweeper and beat, SIGKILL what does not go; leaves no process behind."""
    for proc in (stack.worker, stack.sweeper, stack.beat):
        if proc is None or proc.poll() is not None:
            continue
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
