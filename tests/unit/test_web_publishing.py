"""The web publishes through the unit of work: a request's task leaves only after its
transaction commits, exactly once, and never when the block fails or the commit does. A
broker that fails after the commit leaves the row to the recovery sweep."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from shared import client, tasknames, uow
from shared.db import session_scope
from shared.models import Callback, Message
from shared.uow import FollowUps, Task
from tests.unit.conftest import clear_caches
from webhooks.app import create_app
from webhooks.publishing import recoverable_unit_of_work

AUTH = {"Authorization": "Bearer k1"}
MESSAGE = {"to": {"phone": "+32470123456"}, "route": ["sms"], "text": "Hi"}
CALLBACK = "/callbacks/messaggio/tok"
REPORT = {"msg_id": "aaaaaaaa-0000-0000-0000-000000000001",
          "p_transaction_id": "11111111-2222-3333-4444-555555555555",
          "type": "delivery", "status": "delivered"}


@pytest.fixture()
def api(published: list[FollowUps], monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    monkeypatch.setenv("SWITCHBOARD_API_KEYS", "k1")
    monkeypatch.setenv("SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN", "tok")
    monkeypatch.delenv("SWITCHBOARD_MESSAGGIO_CALLBACK_IPS", raising=False)
    clear_caches()
    app = create_app()
    app.config["TESTING"] = True
    return app.test_client()


@contextmanager
def commits_fail() -> Iterator[None]:
    """Every commit fails (the disk is full) inside the block."""
    def refuse(_session: Session) -> None:
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    event.listen(Session, "before_commit", refuse)
    try:
        yield
    finally:
        event.remove(Session, "before_commit", refuse)


def count(model: type) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_a_message_publishes_exactly_its_dispatch_after_the_commit(
        api: FlaskClient, published: list[FollowUps]) -> None:
    resp = api.post("/v1/messages", json=MESSAGE, headers=AUTH)
    assert resp.status_code == 202
    assert published == [FollowUps(tasks=[Task(tasknames.DISPATCH, (resp.get_json()["id"],))])]
    assert count(Message) == 1


def test_a_failing_commit_publishes_nothing(api: FlaskClient,
                                            published: list[FollowUps]) -> None:
    with commits_fail():
        assert api.post("/v1/messages", json=MESSAGE, headers=AUTH).status_code == 500
        assert api.post(CALLBACK, data=REPORT).status_code == 503  # the gateway retries
    assert published == [] and count(Message) == 0 and count(Callback) == 0


def test_an_error_after_the_task_is_registered_publishes_nothing(
        api: FlaskClient, published: list[FollowUps], monkeypatch: pytest.MonkeyPatch) -> None:
    register = uow.UnitOfWork.task

    def register_then_crash(self: uow.UnitOfWork, name: str, *args: Any, **kw: Any) -> None:
        register(self, name, *args, **kw)
        raise RuntimeError("crashed inside the transaction")

    monkeypatch.setattr(uow.UnitOfWork, "task", register_then_crash)
    assert api.post("/v1/messages", json=MESSAGE, headers=AUTH).status_code == 500
    assert api.post(CALLBACK, data=REPORT).status_code == 500
    monkeypatch.undo()
    assert published == [] and count(Message) == 0 and count(Callback) == 0


def test_a_callback_publishes_exactly_its_handling(api: FlaskClient,
                                                   published: list[FollowUps]) -> None:
    assert api.post(CALLBACK, data=REPORT).status_code == 200
    assert api.post(CALLBACK, data=REPORT).get_json() == {"status": "duplicate"}
    with session_scope() as session:
        callback_id = session.scalars(select(Callback.id)).one()
    assert published == [FollowUps(tasks=[Task(tasknames.HANDLE_CALLBACK, (callback_id,))])]


def test_a_publish_failing_after_the_commit_keeps_the_row(
        api: FlaskClient, published: list[FollowUps], caplog: pytest.LogCaptureFixture) -> None:
    def broker_down(_followups: FollowUps) -> None:
        raise ConnectionError("broker down")

    uow.set_publisher(broker_down)  # the published fixture puts the previous one back
    resp = api.post("/v1/messages", json=MESSAGE, headers=AUTH)
    assert resp.status_code == 202 and count(Message) == 1
    assert f"{tasknames.DISPATCH}('{resp.get_json()['id']}')" in caplog.text


def test_the_unit_propagates_what_fails_before_the_commit(published: list[FollowUps]) -> None:
    with pytest.raises(ValueError), recoverable_unit_of_work() as work:
        work.task(tasknames.DISPATCH, "m1")
        raise ValueError("refused inside the block")
    assert published == []
    with recoverable_unit_of_work() as work:
        work.task(tasknames.DISPATCH, "m2")
    assert published == [FollowUps(tasks=[Task(tasknames.DISPATCH, ("m2",))])]


def test_the_app_installs_the_producer_publisher_only_where_none_is(temp_db: Any) -> None:
    previous = uow.set_publisher(None)
    try:
        create_app()
        assert uow.set_publisher(None) is client.publish_followups
        mine = lambda _followups: None  # noqa: E731
        uow.set_publisher(mine)
        create_app()
        assert uow.set_publisher(None) is mine
    finally:
        uow.set_publisher(previous)
