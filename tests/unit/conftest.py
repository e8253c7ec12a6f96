"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import db, uow
from shared.migrations import upgrade
from shared.providers import get_provider
from shared.settings import get_settings


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
