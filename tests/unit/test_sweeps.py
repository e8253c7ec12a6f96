"""The deadline sweep (worker/sweeps.py): one failing entry does not block the ones behind
it, and a sweep never releases a lock it no longer owns. Real (embedded) Redis and a fresh
database (the sweep also releases scheduled messages); the firing of one member is replaced,
so no worker is needed."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis

from shared.models import utcnow
from worker import deadlines, sweeps


@pytest.fixture()
def client(redis_url: str, temp_db: object, published: object,
           monkeypatch: pytest.MonkeyPatch) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    client.delete(deadlines.KEY, sweeps._SWEEP_LOCK)
    monkeypatch.setattr(sweeps, "get_redis", lambda: client)
    return client


def test_a_failing_entry_is_set_aside_and_the_rest_still_fire(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    past = utcnow() - timedelta(seconds=5)
    deadlines.index(client, [("bad", past - timedelta(seconds=1)), ("a", past), ("b", past)])
    fired: list[str] = []

    def expire(member: str) -> bool:
        if member == "bad":
            raise RuntimeError("cannot load this row")
        fired.append(member)
        deadlines.remove(client, [member])
        return True
    monkeypatch.setattr(sweeps, "_expire", expire)
    assert sweeps.sweep_deadlines(budget_seconds=2) == 2
    assert fired == ["a", "b"]
    later = client.zscore(deadlines.KEY, "bad")
    assert later is not None and later > deadlines._score(utcnow()) + sweeps.SET_ASIDE_SECONDS - 5
    assert client.get(sweeps._SWEEP_LOCK) is None  # released: the next tick may sweep


def test_a_sweep_that_outlived_its_lock_leaves_the_next_sweeps_lock(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    deadlines.index(client, [("slow", utcnow() - timedelta(seconds=1))])

    def expire(member: str) -> bool:
        # The lock ran out while this sweep worked, and another sweep took it.
        client.delete(sweeps._SWEEP_LOCK)
        client.set(sweeps._SWEEP_LOCK, "the-next-sweep")
        deadlines.remove(client, [member])
        return True
    monkeypatch.setattr(sweeps, "_expire", expire)
    assert sweeps.sweep_deadlines(budget_seconds=2) == 1
    assert client.get(sweeps._SWEEP_LOCK) == b"the-next-sweep"


def test_a_held_lock_means_no_second_sweep(client: redis.Redis) -> None:
    client.set(sweeps._SWEEP_LOCK, "another-sweep")
    deadlines.index(client, [("x", utcnow() - timedelta(seconds=1))])
    assert sweeps.sweep_deadlines(budget_seconds=1) == 0
    assert client.zscore(deadlines.KEY, "x") is not None
