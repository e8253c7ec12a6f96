"""The producer wire contract from another language: ``examples/node`` (celery-node) publishes
``switchboard.accept`` on the stack's broker (Redis, or RabbitMQ in CI's third run), and the
real worker sends it.

The example is installed as a user would (``npm ci`` from its lock file, into a temporary
copy, so no ``node_modules`` lands in the work tree). Where ``node`` or ``npm`` is absent, or
the npm registry cannot be reached, the tests skip and say so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shared.messages import new_message_id
from tests.integration.conftest import Stack, wait_for

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"


@pytest.fixture(scope="module")
def node_producer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example with its dependencies installed by ``npm ci``."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed: the Node.js producer example is not run "
                    "(apt-get install nodejs npm to run it)")
    work = tmp_path_factory.mktemp("node-producer")
    for name in ("package.json", "package-lock.json", "producer.js"):
        shutil.copy(EXAMPLE / name, work / name)
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel", "error"],
                          cwd=work, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        pytest.skip(f"npm ci could not install the example's packages (no registry here?): "
                    f"{done.stderr.strip()[-400:]}")
    return work


def publish(stack: Stack, work: Path, *args: str) -> dict[str, Any]:
    """Run the Node producer against the stack's broker; its one line of JSON."""
    done = subprocess.run(["node", "producer.js", *args], cwd=work, capture_output=True,
                          text=True, timeout=60, check=False,
                          env={"PATH": stack.env["PATH"],
                               "SWITCHBOARD_BROKER_URL": stack.env["SWITCHBOARD_BROKER_URL"]})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_node_producer_message_is_sent_and_reaches_a_final_status(
        stack: Stack, node_producer: Path) -> None:
    sent = publish(stack, node_producer, "--to", "+32470125003", "--text", "Hi from Node",
                   "--idempotency-key", "node-order-1")
    # The id rule of the contract: the same id shared.client.send() derives from the key.
    assert sent["message_id"] == new_message_id("node-order-1", "default")
    view = stack.wait_status(sent["message_id"], {"seen"})
    assert view["to"] == {"phone": "+32470125003"} and view["idempotency_key"] == "node-order-1"
    [sent_once] = stack.sim_messages(view["attempts"][0]["id"])  # one request at the gateway
    assert sent_once["channel"] == "viber" and sent_once["txt"] == "Hi from Node"


def test_a_retried_node_publish_is_the_same_message_sent_once(
        stack: Stack, node_producer: Path) -> None:
    args = ("--to", "+32470125004", "--text", "Retried from Node",
            "--idempotency-key", "node-order-2")
    first, second = publish(stack, node_producer, *args), publish(stack, node_producer, *args)
    assert first["message_id"] == second["message_id"] and first["task_id"] != second["task_id"]
    view = stack.wait_status(first["message_id"], {"seen"})
    assert len(view["attempts"]) == 1
    assert len(stack.sim_messages(view["attempts"][0]["id"])) == 1


def test_a_request_the_worker_refuses_is_in_its_log_and_stored_nowhere(
        stack: Stack, node_producer: Path) -> None:
    request = {"to": {"phone": "0470"}, "route": ["viber"], "text": "bad number"}
    sent = publish(stack, node_producer, "--request", json.dumps(request))
    log = stack.tmp / f"worker-{stack._worker_runs}.log"
    line = wait_for(lambda: next((t for t in log.read_text(errors="replace").splitlines()
                                  if sent["task_id"] in t and "raised" in t), None),
                    20, 0.1, "the worker to log the refused accept")
    assert "validation error for SendRequest" in line
    text = log.read_text(errors="replace")
    assert "to.phone" in text[text.index(line):]  # pydantic names the field
    assert stack.get_message(sent["message_id"]) is None  # GET /v1/messages/<id> is a 404
