"""How long the broker holds a task (shared/broker.py): the Redis visibility timeout is sized
to the longest backoff plus the longest run, set in one place both Celery apps read, can be
overridden, and a timeout the backoff does not fit under is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared import broker
from shared.settings import Settings, get_settings

REPO = Path(__file__).resolve().parents[2]
KNOBS = ("SWITCHBOARD_BROKER_VISIBILITY_TIMEOUT", "SWITCHBOARD_RETRY_BACKOFF_MAX_SECONDS")


@pytest.fixture()
def settings_with(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Settings]]:
    """Settings read from these environment values (the two knobs unset otherwise); the
    process-wide cached settings follow them, and are dropped again after the test."""
    def make(**env: str) -> Settings:
        for name in KNOBS:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(f"SWITCHBOARD_{name.upper()}", value)
        get_settings.cache_clear()
        return get_settings()
    yield make
    get_settings.cache_clear()


def test_the_default_timeout_holds_the_longest_backoff_and_run(
        settings_with: Callable[..., Settings]) -> None:
    settings = settings_with()
    timeout = broker.visibility_timeout(settings)
    assert timeout == 300 + broker.TASK_TIME_LIMIT_SECONDS + broker.RUN_HEADROOM_SECONDS == 480
    assert settings.retry_backoff_max_seconds <= broker.countdown_ceiling(settings) < timeout
    assert broker.redelivery_bound(settings) == 490  # not Celery's hour


def test_a_longer_backoff_cap_lengthens_the_default_timeout(
        settings_with: Callable[..., Settings]) -> None:
    settings = settings_with(retry_backoff_max_seconds="1200")
    assert broker.visibility_timeout(settings) == 1200 + 180
    assert broker.countdown_ceiling(settings) >= 1200


def test_the_override_sets_the_timeout_and_scans_for_it_often(
        settings_with: Callable[..., Settings]) -> None:
    settings = settings_with(broker_visibility_timeout="45", retry_backoff_max_seconds="5")
    assert broker.transport_options(settings) == {
        "visibility_timeout": 45, "unacked_restore_interval": 4,
        "unacked_restore_throttle": 1, "unacked_mutex_expire": 12}
    assert broker.countdown_ceiling(settings) == 35
    assert broker.redelivery_bound(settings) == 49


def test_a_timeout_the_backoff_cap_does_not_fit_under_is_refused(
        settings_with: Callable[..., Settings]) -> None:
    assert broker.visibility_timeout(settings_with(broker_visibility_timeout="310")) == 310
    with pytest.raises(ValidationError) as refused:
        settings_with(broker_visibility_timeout="309")
    message = str(refused.value)
    assert "SWITCHBOARD_RETRY_BACKOFF_MAX_SECONDS (300)" in message
    assert "SWITCHBOARD_BROKER_VISIBILITY_TIMEOUT (309)" in message
    with pytest.raises(ValidationError):
        settings_with(broker_visibility_timeout="60", retry_backoff_max_seconds="51")
    assert broker.countdown_ceiling(
        settings_with(broker_visibility_timeout="60", retry_backoff_max_seconds="50")) == 50


def test_the_refusal_quotes_no_other_setting(monkeypatch: pytest.MonkeyPatch,
                                             settings_with: Callable[..., Settings]) -> None:
    monkeypatch.setenv("SWITCHBOARD_API_KEYS", "unit-secret-apikey-77")
    with pytest.raises(ValidationError) as refused:
        settings_with(broker_visibility_timeout="20")
    assert "unit-secret-apikey-77" not in str(refused.value)


def test_bounded_clamps_only_what_is_past_the_ceiling(
        settings_with: Callable[..., Settings]) -> None:
    settings = settings_with(broker_visibility_timeout="20", retry_backoff_max_seconds="5")
    assert broker.bounded(7200.0) == broker.countdown_ceiling(settings) == 10
    assert broker.bounded(3.5) == 3.5


def test_the_worker_and_the_producers_take_the_options_from_one_place() -> None:
    """Both Celery apps as a fresh process builds them (importing worker.app reads the
    settings once), with the timeout overridden."""
    probe = ("import json, worker.app, shared.client\n"
             "print(json.dumps([worker.app.app.conf.broker_transport_options,\n"
             "    shared.client.producer_app().conf.broker_transport_options,\n"
             "    worker.app.app.conf.task_time_limit]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(SWITCHBOARD_BROKER_VISIBILITY_TIMEOUT="123", PYTHONPATH=str(REPO),
               SWITCHBOARD_RETRY_BACKOFF_MAX_SECONDS="60",
               SWITCHBOARD_REDIS_URL="redis://127.0.0.1:9/0")  # nothing is contacted
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    worker_options, producer_options, time_limit = json.loads(out.strip().splitlines()[-1])
    expected = {"visibility_timeout": 123, "unacked_restore_interval": 10,
                "unacked_restore_throttle": 1, "unacked_mutex_expire": 30}
    assert worker_options == producer_options == expected
    assert time_limit == broker.TASK_TIME_LIMIT_SECONDS


def test_tasks_only_the_broker_holds_come_back_when_their_pool_process_dies() -> None:
    """A pool process killed mid-task (OOM, the hard time limit) acks its task as failed
    unless the task rejects instead; the producer-side tasks have no row the recovery sweep
    could re-publish, so they must be handed back to the broker."""
    from shared import tasknames
    from worker.app import app

    for name in (tasknames.ACCEPT, tasknames.ACCEPT_CAMPAIGN, tasknames.SEAL,
                 tasknames.FRIEND_INVITE, tasknames.FRIEND_BREAK_UP):
        assert app.tasks[name].reject_on_worker_lost is True, name
        assert app.tasks[name].acks_late is True, name
    assert not app.tasks[tasknames.SEND_ATTEMPT].reject_on_worker_lost  # the sweep covers it
