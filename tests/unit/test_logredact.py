"""The log filter: a configured secret in a message or a traceback never reaches the output."""

from __future__ import annotations

import io
import logging

import pytest

from shared import logredact
from tests.unit.conftest import clear_caches

SECRET = "s3cr3t-api-key-value-123"


@pytest.fixture()
def captured(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SWITCHBOARD_ROGERTHAT_API_KEY", SECRET)
    clear_caches()
    stream = io.StringIO()
    logger = logging.getLogger("test.logredact")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    logredact.install(logger)
    logredact.install(logger)  # idempotent
    yield logger, stream, handler
    logger.removeHandler(handler)
    clear_caches()


def test_secret_in_message_args_and_traceback_is_redacted(captured) -> None:  # type: ignore[no-untyped-def]
    logger, stream, handler = captured
    assert sum(isinstance(f, logredact.RedactSecrets) for f in handler.filters) == 1
    logger.error("calling with key %s", SECRET)
    try:
        raise RuntimeError(f"header X-Nuntiuz-API-Key: {SECRET}")
    except RuntimeError:
        logger.exception("unexpected")
    output = stream.getvalue()
    assert SECRET not in output
    assert output.count("[redacted]") >= 2 and "RuntimeError" in output


def test_other_messages_pass_unchanged(captured) -> None:  # type: ignore[no-untyped-def]
    logger, stream, _ = captured
    logger.warning("sent %d messages", 3)
    assert stream.getvalue() == "sent 3 messages\n"
