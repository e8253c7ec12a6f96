"""A hop's window (shared/windows.py): the Viber gateway keeps ``dlr_timeout`` in whole
minutes, rounded down, so our deadline is too and both fall back together; other channels
are not rounded, and the test-only override still replaces every window as given."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from shared.schemas import SendRequest
from shared.settings import get_settings
from shared.windows import deadline_window, provider_window


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("SWITCHBOARD_TEST_DEADLINE_SECONDS", "SWITCHBOARD_DEFAULT_DLR_TIMEOUT",
                 "SWITCHBOARD_SMS_REPORT_WINDOW_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _request(**fields: Any) -> SendRequest:
    values: dict[str, Any] = {"to": {"phone": "+32470123456", "email": "ann@example.com"},
                              "route": ["viber", "rogerthat", "sms"], "text": "Hi",
                              "allow_dismiss": True}
    values.update(fields)
    return SendRequest.model_validate(values)


@pytest.mark.parametrize(("asked", "kept"), [(60, 60), (90, 60), (119, 60), (120, 120),
                                             (3599, 3540), (86400, 86400)])
def test_a_viber_window_is_whole_minutes_rounded_down(asked: int, kept: int) -> None:
    assert deadline_window("viber", _request(dlr_timeout=asked)) == kept
    assert deadline_window("viber", _request(deadlines={"viber": asked})) == kept
    assert provider_window("viber", _request(dlr_timeout=asked), 86400) == kept


def test_the_default_viber_window_is_rounded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_DEFAULT_DLR_TIMEOUT", "150")
    get_settings.cache_clear()
    assert deadline_window("viber", _request()) == 120


def test_other_channels_keep_their_seconds() -> None:
    assert deadline_window("rogerthat", _request(deadlines={"rogerthat": 90})) == 90
    assert deadline_window("sms", _request(deadlines={"sms": 90})) == 90
    assert deadline_window("sms", _request(dlr_timeout=90)) == 86400  # the report window


def test_the_test_override_replaces_every_window_unrounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The integration stack's 8 s deadline would round to nothing."""
    monkeypatch.setenv("SWITCHBOARD_TEST_DEADLINE_SECONDS", "8")
    get_settings.cache_clear()
    for channel in ("viber", "rogerthat", "sms"):
        assert deadline_window(channel, _request(dlr_timeout=90)) == 8.0
