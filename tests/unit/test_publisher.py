"""The two publishers behind ``shared.uow``: the worker's (Celery and the deadline index) and
the producer side's (tasks only). Each sends a task by name on its queue, with its countdown."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from shared import client, tasknames, uow
from worker import publisher


class _App:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, **options: Any) -> None:
        self.sent.append({"name": name, **options})


def test_the_worker_publisher_sends_tasks_on_their_queues_with_countdowns(
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = _App()
    indexed: list[Any] = []
    monkeypatch.setattr(publisher, "get_redis", lambda: None)
    monkeypatch.setattr(publisher.deadlines, "index", lambda _c, items: indexed.extend(items))
    monkeypatch.setattr(publisher.deadlines, "remove", lambda _c, ids: indexed.extend(ids))
    previous = uow.set_publisher(None)
    try:
        publisher.install(app)  # type: ignore[arg-type]
        uow.publish_task(tasknames.HANDLE_CALLBACK, 7, countdown=2.5)
        uow.publish(uow.FollowUps(index=[("a1", datetime(2030, 1, 1))]))
    finally:
        uow.set_publisher(previous)
    assert app.sent == [{"name": tasknames.HANDLE_CALLBACK, "args": [7], "countdown": 2.5,
                         "queue": tasknames.EVENTS_QUEUE}]
    assert indexed == [("a1", datetime(2030, 1, 1))]


def test_the_producer_publisher_sends_tasks_and_refuses_index_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = _App()
    monkeypatch.setattr(client, "producer_app", lambda: app)
    client.publish_followups(uow.FollowUps(tasks=[uow.Task(tasknames.SEAL, ("m1", "r1"))]))
    assert app.sent == [{"name": tasknames.SEAL, "args": ("m1", "r1"), "countdown": None,
                         "queue": tasknames.SEND_QUEUE}]
    with pytest.raises(RuntimeError, match="deadline index"):
        client.publish_followups(uow.FollowUps(unindex=["a1"]))
