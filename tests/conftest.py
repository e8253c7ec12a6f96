"""Test-suite wide hooks."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run integration tests last: their session-wide stack sets SWITCHBOARD_* variables for
    the rest of the run, and unit tests must see a clean environment."""
    items.sort(key=lambda item: "/integration/" in str(item.path))
