"""Fixtures shared by the unit tests."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import db, egress, uow
from shared.localrun import start_embedded_redis
from shared.migrations import upgrade
from shared.providers import get_provider
from shared.settings import get_settings


# The documentation host names the tests use (RFC 2606/6761) resolve to a public address
# here, as they would for a producer's real host: the unit tests need no network, and the
# egress policy refuses a name that does not resolve.
PUBLIC_TEST_ADDRESS = ipaddress.ip_address("93.184.215.14")


@pytest.fixture(autouse=True)
def _documentation_hosts_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    real = egress.resolve

    def resolve(host: str, port: int, timeout: float = egress.RESOLVE_TIMEOUT) -> list:
        if host.endswith((".example", "example.com", "example.org")):
            return [PUBLIC_TEST_ADDRESS]
        return real(host, port, timeout)

    monkeypatch.setattr(egress, "resolve", resolve)


def clear_caches() -> None:
    """Settings, engines and adapters are cached per process; tests that change the
    environment must drop them."""
    get_settings.cache_clear()
    get_provider.cache_clear()
    db.reset()


@pytest.fixture()
def temp_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh, migrated SQLite database in ``tmp_path`` (the embedded default)."""
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SWITCHBOARD_DATABASE_URL", raising=False)
    clear_caches()
    upgrade()
    yield tmp_path
    clear_caches()


@pytest.fixture()
def published(temp_db: Path) -> Iterator[list[uow.FollowUps]]:
    """A fresh database, and the engine's follow-ups as the publisher received them (a list
    instead of Celery and Redis), so engine decisions are tested without a broker."""
    seen: list[uow.FollowUps] = []
    previous = uow.set_publisher(seen.append)
    yield seen
    uow.set_publisher(previous)


def tasks(published: list[uow.FollowUps]) -> list[tuple[str, tuple]]:
    """(name, args) of every task the publisher received, in order."""
    return [(task.name, task.args) for followups in published for task in followups.tasks]


@pytest.fixture(autouse=True)
def _keep_the_publisher() -> Iterator[None]:
    """The publisher is the process's: an app factory or CLI command that installs the
    producer's in one test must not leave it to the next (which would then reach a broker)."""
    previous = uow.set_publisher(None)
    uow.set_publisher(previous)
    yield
    uow.set_publisher(previous)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``SWITCHBOARD_TEST_REDIS_URL`` if set, else an embedded redis-server on a private socket
    for this test module (real Redis, no machine service needed)."""
    url = os.environ.get("SWITCHBOARD_TEST_REDIS_URL")
    if url:
        yield url
        return
    tmp = tmp_path_factory.mktemp("redis")
    proc = start_embedded_redis(tmp, tmp / "redis.sock")
    try:
        yield f"unix://{tmp / 'redis.sock'}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def queued_message(**fields: Any) -> tuple[str, str]:
    """(message id, first attempt id): a send request stored as the API stores it and its
    first hop's attempt created, ``pending``, by the engine's dispatch."""
    from shared.messages import create_message, new_message_id
    from shared.schemas import SendRequest
    from worker import engine

    request = SendRequest.model_validate(fields)
    message_id = new_message_id(None)
    with uow.unit_of_work() as work:
        create_message(work.session, message_id, request)
    attempt_id = engine.dispatch(message_id)
    assert attempt_id is not None
    return message_id, attempt_id
