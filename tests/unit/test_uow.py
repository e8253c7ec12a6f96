"""The unit of work publishes follow-ups after commit, whichever way its block is left, and
publishes nothing on a rollback (shared/uow.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from shared import uow
from shared.models import Callback
from shared.uow import FollowUps, Task, unit_of_work


def _add_callback(work: uow.UnitOfWork) -> None:
    work.session.add(Callback(provider="messaggio", method="POST", params={}))
    work.task("switchboard.handle_callback", "1")


def _callbacks() -> int:
    with unit_of_work() as work:
        return work.session.scalar(select(func.count()).select_from(Callback)) or 0


def test_publishes_after_commit(published: list[FollowUps]) -> None:
    with unit_of_work() as work:
        _add_callback(work)
        assert published == []  # nothing leaves before the commit
    assert published[0].tasks == [Task("switchboard.handle_callback", ("1",))]
    assert _callbacks() == 1


def test_a_return_inside_the_block_still_publishes(published: list[FollowUps]) -> None:
    def early_return() -> str:
        with unit_of_work() as work:
            _add_callback(work)
            return "left early"
    assert early_return() == "left early"
    assert [f.tasks for f in published] == [[Task("switchboard.handle_callback", ("1",))]]
    assert _callbacks() == 1


def test_a_rollback_publishes_nothing(published: list[FollowUps]) -> None:
    with pytest.raises(ValueError), unit_of_work() as work:
        _add_callback(work)
        raise ValueError("boom")
    assert published == []
    assert _callbacks() == 0


def test_follow_ups_without_a_publisher_are_refused(temp_db: Path) -> None:
    previous = uow.set_publisher(None)
    try:
        with pytest.raises(RuntimeError, match="no publisher"):
            uow.publish(FollowUps(tasks=[Task("x", ("1",))]))
        uow.publish(FollowUps())  # nothing to publish needs no publisher
    finally:
        uow.set_publisher(previous)


def test_a_countdown_past_the_broker_ceiling_is_clamped(published: list[FollowUps]) -> None:
    """Whatever decided it (a provider's Retry-After, a circuit's wait), no task leaves with a
    countdown the Redis visibility timeout would cut short (shared/broker.py)."""
    from shared import broker
    from shared.settings import get_settings

    ceiling = broker.countdown_ceiling(get_settings())
    uow.publish(FollowUps(tasks=[Task("switchboard.send_attempt", ("a1",), ceiling * 10),
                                 Task("switchboard.send_attempt", ("a2",), 2.5),
                                 Task("switchboard.handle_callback", ("7",))]))
    assert [t.countdown for t in published[0].tasks] == [ceiling, 2.5, None]
