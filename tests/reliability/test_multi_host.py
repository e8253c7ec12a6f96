"""A multi-host rehearsal: two worker "hosts" and one beat against the same broker, database
and Redis; one host is SIGKILLed mid-stream and the other finishes the work.

Each host is a Celery worker of its own, as it would be on its own machine: its own node name
(``-n host-a@…``), its own metrics port (``SWITCHBOARD_WORKER_METRICS_PORT``) and its own
Prometheus directory (a host's counts are its own), consuming every queue. Beat runs once. The
messages are posted over HTTP while both hosts work; once a third of them are final and host A
holds work, host A and its pool are SIGKILLed (a machine gone). Host B alone must then bring
every message to a final status, with each (message, channel) accepted by the gateway
simulator at most once: nothing lost, nothing sent twice (``assert_no_loss_no_duplicate``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from shared import tasknames
from shared.models import Message
from shared.providers.sandbox.messaggio import SimulatorConfig
from tests.reliability.stack_fixtures import (
    FINAL_MESSAGE,
    Options,
    ReliabilityStack,
    assert_no_loss_no_duplicate,
    phone,
    post_paced,
    reliability_stack,
    unsettled,
    wait_for,
    wait_settled,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MESSAGES = 240
OPEN_LIMIT = 80
QUEUES = ",".join(sorted(tasknames.ALL_QUEUES))  # a host consumes every queue
OPTIONS = Options(concurrency=2, simulator=SimulatorConfig(report_delay=0.3, latency=0.02),
                  env={"SWITCHBOARD_REQUEUE_STUCK_AFTER_SECONDS": "6",
                       "SWITCHBOARD_TEST_DEADLINE_SECONDS": "20"})


@dataclass
class Host:
    """One worker host: its process (the group's leader) and where its metrics are."""

    name: str
    proc: subprocess.Popen[bytes]
    metrics_port: int

    def sends(self) -> float:
        """Sends this host recorded as accepted by the gateway (its own Prometheus files)."""
        body = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return sum(s.value for family in text_string_to_metric_families(body)
                   for s in family.samples
                   if s.name == "switchboard_sends_total" and s.labels["outcome"] == "accepted")

    def alive(self) -> bool:
        return self.proc.poll() is None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_host(stack: ReliabilityStack, name: str) -> Host:
    """A worker on every queue with its own node name, metrics port and metrics directory
    (``wait_ready`` waits for it)."""
    port = _free_port()
    home = stack.tmp / name
    home.mkdir()
    env = {**stack.env, "SWITCHBOARD_WORKER_METRICS_PORT": str(port),
           "PROMETHEUS_MULTIPROC_DIR": str(home / "metrics")}
    log_path = stack.tmp / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-E", "-Q", QUEUES,
             "-P", "prefork", "-c", str(OPTIONS.concurrency), "--loglevel", "INFO",
             "-n", f"{name}@reliability"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=home)
    return Host(name, proc, port)


def wait_ready(stack: ReliabilityStack, host: Host) -> None:
    """Until Celery says the host is ready and its metrics answer."""
    log_path = stack.tmp / f"{host.name}.log"
    wait_for(lambda: b" ready." in log_path.read_bytes(), 60, 0.1, f"{host.name} to be ready")
    wait_for(lambda: _answers(host), 20, 0.1, f"{host.name}'s metrics on its port")


def _answers(host: Host) -> bool:
    try:
        host.sends()
        return True
    except requests.RequestException:
        return False


def _stop(*procs: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM them all, then wait (SIGKILL what does not go)."""
    running = [p for p in procs if p is not None and p.poll() is None]
    for proc in running:
        os.killpg(proc.pid, signal.SIGTERM)
    for proc in running:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ReliabilityStack,
                                                                      Host, Host]]:
    """The reliability stack with its one worker and sweeper replaced by two hosts (beat
    stays the only one)."""
    with reliability_stack(tmp_path_factory.mktemp("multi-host"), OPTIONS) as stack:
        _stop(stack.worker, stack.sweeper)
        started: list[Host] = []
        try:
            started += [start_host(stack, "host-a"), start_host(stack, "host-b")]
            for host in started:
                wait_ready(stack, host)
            yield stack, started[0], started[1]
        finally:
            _stop(*(host.proc for host in started))


def _final(stack: ReliabilityStack) -> int:
    return stack.count(select(func.count()).select_from(Message)
                       .where(Message.status.in_(sorted(FINAL_MESSAGE))))


def _body(index: int) -> dict[str, Any]:
    return {"to": {"phone": phone(index)}, "route": ["viber", "sms"], "text": f"hosts {index}"}


def test_one_host_dies_mid_stream_and_the_other_finishes_the_work(
        hosts: tuple[ReliabilityStack, Host, Host]) -> None:
    stack, host_a, host_b = hosts
    at_kill: dict[str, float] = {}

    def kill_a_once_a_third_is_final(ids: list[str]) -> None:
        if at_kill or _final(stack) < MESSAGES // 3 or unsettled(stack) == 0:
            return
        at_kill["a_sends"], at_kill["b_sends"] = host_a.sends(), host_b.sends()
        at_kill["open"], at_kill["posted"] = unsettled(stack), len(ids)
        os.killpg(host_a.proc.pid, signal.SIGKILL)  # the host and its pool, no warm shutdown
        host_a.proc.wait(timeout=10)

    ids = post_paced(stack, [_body(i) for i in range(MESSAGES)], OPEN_LIMIT,
                     kill_a_once_a_third_is_final, chunk=20)
    assert at_kill, "host A was never killed"
    assert at_kill["posted"] < MESSAGES and at_kill["open"] > 0, f"not mid-stream: {at_kill}"
    assert at_kill["a_sends"] > 0 and at_kill["b_sends"] > 0, f"both hosts worked: {at_kill}"
    wait_settled(stack, timeout=120)
    assert not host_a.alive() and host_b.alive()
    rows = assert_no_loss_no_duplicate(stack, ids)
    assert host_b.sends() > at_kill["b_sends"], "host B did not take over the work"
    statuses = {row.status for row in rows.values()}
    assert statuses <= {"seen", "delivered"}, statuses
    print(f"\nhost A killed with {at_kill['posted']} posted, {at_kill['open']:.0f} open; "
          f"sends A {at_kill['a_sends']:.0f} before, B {host_b.sends():.0f} in all")
