"""Countdowns decided in worker/timing.py (backoff, ``RetryLater``, a provider's Retry-After on
a Celery ``self.retry``) never reach the broker's visibility timeout: Redis would hand out a
retry still waiting for its countdown, again and again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared import broker
from shared.providers.base import RetryableError
from shared.settings import Settings, get_settings
from worker.timing import RetryLater, backoff, retry_countdown

# The defaults, and what the reliability suite's broker test runs with (a short timeout).
SETTINGS = [{}, {"BROKER_VISIBILITY_TIMEOUT": "20", "RETRY_BACKOFF_MAX_SECONDS": "5"}]


@pytest.fixture(params=SETTINGS, ids=["defaults", "short-timeout"])
def settings(request: pytest.FixtureRequest,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    for name in ("BROKER_VISIBILITY_TIMEOUT", "RETRY_BACKOFF_MAX_SECONDS"):
        monkeypatch.delenv(f"SWITCHBOARD_{name}", raising=False)
    for name, value in request.param.items():
        monkeypatch.setenv(f"SWITCHBOARD_{name}", value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_every_backoff_fits_under_the_visibility_timeout(settings: Settings) -> None:
    ceiling = broker.countdown_ceiling(settings)
    longest = max(backoff(retries) for retries in range(40) for _ in range(20))
    assert longest <= settings.retry_backoff_max_seconds <= ceiling
    assert ceiling + broker.HANDOFF_SECONDS <= broker.visibility_timeout(settings)


def test_a_long_retry_later_is_clamped_to_the_ceiling(settings: Settings) -> None:
    later = RetryLater(7200, "Retry-After: 7200")
    assert later.countdown == broker.countdown_ceiling(settings)
    assert RetryLater(1.5, "conversation busy").countdown == 1.5


def test_a_providers_retry_after_is_honoured_up_to_the_ceiling(settings: Settings) -> None:
    ceiling = broker.countdown_ceiling(settings)
    assert retry_countdown(7200.0, 0) == ceiling
    assert retry_countdown(2.5, 0) == 2.5
    assert retry_countdown(None, 30) <= settings.retry_backoff_max_seconds


@pytest.mark.parametrize("task_name, args", [
    ("seal", ("m1", "rpc-1")), ("invite", ("ann@example.com", "rogerthat", "rpc-2")),
    ("break_up", ("ann@example.com", "rogerthat", "rpc-3"))])
def test_the_messenger_tasks_retry_within_the_ceiling(
        settings: Settings, monkeypatch: pytest.MonkeyPatch, task_name: str,
        args: tuple[str, ...]) -> None:
    """Celery's ``self.retry`` bypasses our publisher, so the tasks bound it themselves."""
    from worker import messenger
    from worker.tasks import messenger as tasks

    def busy(*_: Any, **__: Any) -> str:
        raise RetryableError("rate_limited", "429", retry_after=7200)
    asked: list[float] = []

    def retry(countdown: float, **_: Any) -> Exception:
        asked.append(countdown)
        return RuntimeError("retry")
    task: Callable[..., Any] = getattr(tasks, task_name)
    monkeypatch.setattr(messenger, task_name, busy)
    monkeypatch.setattr(task, "retry", retry)
    with pytest.raises(RuntimeError, match="retry"):
        task(*args)
    assert asked == [broker.countdown_ceiling(settings)]
