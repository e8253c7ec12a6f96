"""Fault injection: work only the broker holds comes back when its worker dies, on Redis and on
RabbitMQ (shared/broker.py).

``shared.client.send()`` publishes ``switchboard.accept`` before any row exists, so when the
worker that reserved it is SIGKILLed the database knows nothing of the message and the
recovery sweep cannot bring it back: only the broker can. RabbitMQ requeues a dead consumer's
deliveries as soon as its connection drops; Redis hands them out again once they have been
unacknowledged for the visibility timeout (shortened here to 20 s, and the backoff cap to 5 s
so the settings still fit under it; the defaults are 300 s and 480 s).

The kill is made to land on accepts that have no row yet: the database's writes are held
(an open write transaction) until the worker has received accepts it cannot insert, then it
is killed and the writes let go. After a restart every one of the 500 messages must be
delivered within a couple of minutes, none sent twice (counted at the simulator by attempt
id, the gateway's ``p_transaction_id``).

A copy of an accept that runs while the first still runs is harmless too: on Redis the copy is
the broker's own (a send slower than the timeout), on RabbitMQ a producer's retried ``send``
with the same idempotency key; one message, one request to the gateway either way.

RabbitMQ is the machine's (``SWITCHBOARD_TEST_AMQP_URL``, default the local guest account);
its cases skip, saying why, when it cannot be reached or another stack consumes its queues.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from celery import signals
from sqlalchemy import create_engine, func, select

from shared import client, tasknames
from shared.models import Attempt, Message
from shared.providers.sandbox.messaggio import SimulatorConfig
from tests.reliability.stack_fixtures import (
    Options,
    ReliabilityStack,
    assert_no_loss_no_duplicate,
    load_rows,
    phone,
    reliability_stack,
    wait_for,
    wait_settled,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MESSAGES = 500
VISIBILITY_TIMEOUT = 20
RESTORE_SCAN = 2  # shared.broker.restore_interval for the timeout above
DELIVERED = frozenset({"delivered", "seen"})
AMQP_URL = os.environ.get("SWITCHBOARD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
GATEWAY = {"report_delay": 0.1, "latency": 0.02}
ENV = {
    "SWITCHBOARD_BROKER_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
    "SWITCHBOARD_RETRY_BACKOFF_MAX_SECONDS": "5",
    "SWITCHBOARD_REQUEUE_STUCK_AFTER_SECONDS": "10",
    # Long enough that a send cut by the kill, or one slower than the visibility timeout, is
    # settled by its report before its deadline moves the route on.
    "SWITCHBOARD_TEST_DEADLINE_SECONDS": "45",
    "SWITCHBOARD_MESSAGGIO_TIMEOUT_SECONDS": "60",
}
ACCEPT_LINE = re.compile(rb"Task switchboard\.accept\[([0-9a-f-]+)\] (received|succeeded)")


@dataclass
class Published:
    """Every ``switchboard.accept`` this process published: Celery task id -> message id."""

    message_of: dict[str, str] = field(default_factory=dict)

    def record(self, sender: str | None = None, headers: dict | None = None,
               body: Any = None, **_: Any) -> None:
        if sender == tasknames.ACCEPT and headers and body:
            self.message_of[headers["id"]] = body[0][0]

    def tasks_of(self, message_id: str) -> set[str]:
        return {task for task, message in self.message_of.items() if message == message_id}


@pytest.fixture(scope="module")
def published() -> Iterator[Published]:
    recorder = Published()
    signals.after_task_publish.connect(recorder.record, weak=False)
    try:
        yield recorder
    finally:
        signals.after_task_publish.disconnect(recorder.record)


def _rabbitmq_or_skip(url: str) -> None:
    """Skip unless RabbitMQ answers and no other stack is using Switchboard's queues there."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
            busy = {name: _queue_use(conn, name) for name in tasknames.QUEUE_OF.values()}
    except Exception as exc:  # noqa: BLE001 - any failure to reach it means: not here
        pytest.skip(f"RabbitMQ is not reachable at {url} ({exc!r}); start it or set "
                    "SWITCHBOARD_TEST_AMQP_URL to run the RabbitMQ case")
    in_use = {name: use for name, use in busy.items()
              if use[1] or (use[0] and name != tasknames.SWEEP_QUEUE)}
    if in_use:
        pytest.skip(f"RabbitMQ at {url} has Switchboard queues in use (messages, consumers): "
                    f"{in_use}; another stack is running there, or purge them")


def _queue_use(conn: Any, name: str) -> tuple[int, int]:
    """(messages, consumers) of an existing queue, (0, 0) if there is none."""
    channel = conn.channel()
    try:
        _, messages, consumers = channel.queue_declare(name, passive=True)
        return messages, consumers
    except conn.channel_errors:
        return 0, 0
    finally:
        try:
            channel.close()
        except Exception:  # noqa: BLE001 - a 404 already closed it
            pass


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def stack(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReliabilityStack]:
    env = dict(ENV)
    if request.param == "rabbitmq":
        _rabbitmq_or_skip(AMQP_URL)
        env["SWITCHBOARD_BROKER_URL"] = AMQP_URL
    options = Options(concurrency=4, simulator=SimulatorConfig(**GATEWAY), env=env)
    with reliability_stack(tmp_path_factory.mktemp(f"broker-{request.param}"),
                           options) as running:
        yield running


def _broker(stack: ReliabilityStack) -> str:
    return "rabbitmq" if stack.env["SWITCHBOARD_BROKER_URL"].startswith("amqp") else "redis"


# --- looking ---------------------------------------------------------------------------------

def _accept_log(stack: ReliabilityStack) -> list[tuple[str, str]]:
    """(task id, "received" | "succeeded") of every accept in the current worker's log."""
    return [(m[1].decode(), m[2].decode()) for m in ACCEPT_LINE.finditer(stack.worker_log())]


def _with_rows(message_ids: set[str]) -> set[str]:
    from shared.db import session_scope

    with session_scope() as session:
        return set(session.scalars(select(Message.id).where(Message.id.in_(message_ids))))


def _held_without_row(stack: ReliabilityStack, published: Published) -> set[str]:
    """Messages whose accept the worker has received while their row does not exist."""
    received = {published.message_of[task] for task, kind in _accept_log(stack)
                if kind == "received" and task in published.message_of}
    return received - _with_rows(received)


def _in_redis_unacked(stack: ReliabilityStack, published: Published) -> set[str]:
    """Messages whose accept sits in kombu's unacknowledged set on the Redis broker."""
    held = set()
    for raw in stack.redis().hvals("unacked"):
        task = json.loads(raw)[0]["headers"]["id"]
        if task in published.message_of:
            held.add(published.message_of[task])
    return held


def _delivered(message_ids: list[str]) -> int:
    from shared.db import session_scope

    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Message).where(
            Message.id.in_(message_ids), Message.status.in_(sorted(DELIVERED)))) or 0


@contextmanager
def _writes_held(database_url: str) -> Iterator[None]:
    """Every other writer waits while this is open (reads go on): SQLite, one write
    transaction (the others wait in their busy timeout); PostgreSQL, the messages table
    locked against writes."""
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("LOCK TABLE messages IN EXCLUSIVE MODE")
            yield
    finally:
        engine.dispose()


# --- the kill --------------------------------------------------------------------------------

@dataclass
class Kill:
    """What the dead worker left behind."""

    rows: int = 0  # messages in the database when it died
    held: set[str] = field(default_factory=set)  # accepts it had received, with no row
    at: float = 0.0  # time.monotonic() of the kill


def _kill_on_accepts_without_rows(stack: ReliabilityStack, published: Published,
                                  ids: list[str]) -> Kill:
    """Hold the database's writes until the worker has received accepts it cannot insert,
    then SIGKILL it; if it received none while held (its processes were all mid-send), let
    the writes go, wait for progress, and try again."""
    url = stack.env["SWITCHBOARD_DATABASE_URL"]
    for _ in range(10):
        with _writes_held(url):
            try:
                held = wait_for(lambda: _held_without_row(stack, published), 5, 0.05,
                                "accepts received that cannot insert their row")
            except AssertionError:
                held = set()
            if held:
                stack.kill_worker()
                return Kill(rows=len(_with_rows(set(ids))), held=held, at=time.monotonic())
        before = len(_with_rows(set(ids)))
        wait_for(lambda: len(_with_rows(set(ids))) > before, 30, 0.1, "the worker to go on")
    raise AssertionError("the worker never received an accept while the writes were held")


def test_sigkill_with_500_sends_in_flight_loses_none_and_sends_none_twice(
        stack: ReliabilityStack, published: Published) -> None:
    ids = [client.send(to={"phone": phone(i)}, route=["viber", "sms"], text=f"broker {i}")
           for i in range(MESSAGES)]
    wait_for(lambda: len(_with_rows(set(ids))) >= MESSAGES // 5, 120, 0.1,
             "a fifth of the messages to be accepted")
    kill = _kill_on_accepts_without_rows(stack, published, ids)
    assert kill.held and kill.rows < MESSAGES, f"nothing left for the broker alone: {kill}"
    if _broker(stack) == "redis":
        assert kill.held <= _in_redis_unacked(stack, published), "not held by the broker"
    stack.start_worker()
    held = sorted(kill.held)
    wait_for(lambda: _delivered(held) == len(held), 120, 0.2,
             "the accepts only the broker held to be delivered after the restart")
    came_back = time.monotonic() - kill.at
    wait_for(lambda: _delivered(ids) == MESSAGES, 120, 0.5,
             f"all {MESSAGES} messages to be delivered after the restart")
    all_done = time.monotonic() - kill.at
    wait_settled(stack, timeout=60)
    rows = assert_no_loss_no_duplicate(stack, ids)
    assert {rows[m].status for m in ids} <= DELIVERED
    print(f"\n{_broker(stack)}: killed holding {len(kill.held)} accepts with no row, "
          f"{MESSAGES - kill.rows} messages without a row; those delivered {came_back:.1f}s "
          f"after the kill, all {MESSAGES} after {all_done:.1f}s: "
          f"{dict(Counter(r.status for r in rows.values()))}")


# --- two copies at once ----------------------------------------------------------------------

def _received_twice_before_done(stack: ReliabilityStack, tasks: set[str]) -> bool:
    """Both copies received before either finished (so they ran at the same time)."""
    kinds = [kind for task, kind in _accept_log(stack) if task in tasks]
    return kinds[:2] == ["received", "received"]


def _second_copy(stack: ReliabilityStack, published: Published, message_id: str,
                 key: str) -> set[str]:
    """Make a second copy of the accept run while the first waits on the gateway; returns
    the Celery task ids of the copies. Redis: the broker hands the slow task out again after
    the visibility timeout. RabbitMQ never does while the consumer lives, so the producer
    retries ``send`` with the same idempotency key (a new task, the same message id)."""
    wait_for(lambda: stack.count(select(func.count()).select_from(Attempt).where(
        Attempt.message_id == message_id, Attempt.status == "sending")), 30, 0.1,
        "the first copy to be waiting on the gateway")
    if _broker(stack) == "rabbitmq":
        assert client.send(to={"phone": phone(MESSAGES + 1)}, route=["viber", "sms"],
                           text="twice", idempotency_key=key) == message_id
    tasks = published.tasks_of(message_id)
    wait_for(lambda: _received_twice_before_done(stack, tasks),
             VISIBILITY_TIMEOUT + RESTORE_SCAN + 10, 0.1, "a second copy while the first runs")
    return tasks


def test_a_second_copy_of_a_running_accept_sends_nothing(
        stack: ReliabilityStack, published: Published) -> None:
    assert stack.simulator is not None
    slow = VISIBILITY_TIMEOUT + RESTORE_SCAN + 5 if _broker(stack) == "redis" else 5
    stack.simulator.state.update_config({"latency": slow})
    key = f"twice-{_broker(stack)}"
    try:
        message_id = client.send(to={"phone": phone(MESSAGES + 1)}, route=["viber", "sms"],
                                 text="twice", idempotency_key=key)
        tasks = _second_copy(stack, published, message_id, key)
    finally:
        stack.simulator.state.update_config({"latency": GATEWAY["latency"]})
    wait_for(lambda: [k for t, k in _accept_log(stack) if t in tasks].count("succeeded") == 2,
             60, 0.1, "both copies to finish")
    stack.wait_status(message_id, set(DELIVERED), timeout=60)
    attempts = load_rows([message_id])[message_id].attempts
    assert [(a["channel"], a["status"]) for a in attempts] == [("viber", "seen")], attempts
    assert len(stack.sim_messages(attempts[0]["id"])) == 1
    assert len([m for m in stack.sim_messages()
                if m["phone"] == phone(MESSAGES + 1).lstrip("+")]) == 1
