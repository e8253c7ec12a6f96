"""Flower as `switchboard flower` runs it: never without a login, task events on, and our
tasks readable by name with ids (not secrets) as arguments."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests

from tests.integration.conftest import Stack, wait_for

pytestmark = pytest.mark.integration
LOGIN = ("ops", "flower-test-password")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def flower(stack: Stack) -> Iterator[str]:
    port = _free_port()
    env = {**stack.env, "FLOWER_BASIC_AUTH": ":".join(LOGIN)}
    log = open(stack.tmp / "flower.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "flower", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=stack.tmp,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(url, timeout=2).status_code in (200, 401)
        except requests.ConnectionError:
            return False
    try:
        wait_for(up, 60, 0.2, "Flower to listen")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
        log.close()


def test_flower_refuses_to_start_without_a_login(stack: Stack) -> None:
    env = {k: v for k, v in stack.env.items() if k != "FLOWER_BASIC_AUTH"}
    done = subprocess.run([sys.executable, "-m", "shared.cli", "flower", "--port", "1"],
                          check=False, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "FLOWER_BASIC_AUTH" in done.stderr and "Traceback" not in done.stderr


def test_flower_needs_credentials_and_shows_our_tasks(stack: Stack, flower: str) -> None:
    assert requests.get(flower, timeout=5).status_code == 401
    assert requests.get(f"{flower}/api/tasks", timeout=5,
                        auth=("ops", "wrong")).status_code == 401
    # Flower subscribes to task events shortly after it answers HTTP; a task that ran before
    # that is never shown. So keep sending (one message every 2 s) until one of ours appears.
    sent: list[tuple[float, str]] = []

    def dispatch_task() -> dict | None:
        if not sent or time.monotonic() - sent[-1][0] > 2:
            sent.append((time.monotonic(), stack.post_message(
                to={"phone": "+32470130001"}, route=["viber", "sms"],
                text="seen by Flower").json()["id"]))
        tasks = requests.get(f"{flower}/api/tasks", auth=LOGIN, timeout=5).json()
        ids = {message_id for _, message_id in sent}
        return next((t for t in tasks.values() if t.get("name") == "switchboard.dispatch"
                     and any(i in str(t.get("args")) for i in ids)), None)
    task = wait_for(dispatch_task, 60, 0.5, "Flower to see the dispatch task (task events)")
    assert task["state"] in ("RECEIVED", "STARTED", "SUCCESS")
    assert "secret" not in str(task).lower()
