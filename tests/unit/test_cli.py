"""The switchboard command: clear messages for bad input, readable status output."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import db
from shared.cli import main


@pytest.fixture()
def database(temp_db: Path) -> Path:
    return temp_db


def test_send_with_a_bad_phone_names_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "--to", "0470", "--text", "hi"]) == 2
    err = capsys.readouterr().err
    assert "invalid to.phone" in err and "Traceback" not in err


def test_send_with_bad_metadata_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "--to", "+32470120000", "--text", "hi", "--metadata", "{"]) == 2
    assert "--metadata is not JSON" in capsys.readouterr().err


def test_status_of_an_unknown_message(database: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "nope"]) == 2
    assert "no message nope" in capsys.readouterr().err


def test_status_shows_attempts_and_sequenced_events(database: None,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from shared.messages import add_event, create_message
    from shared.models import Attempt
    from shared.schemas import SendRequest

    request = SendRequest.model_validate(
        {"to": {"phone": "+32470120000"}, "route": ["viber", "sms"], "text": "hi"})
    with db.session_scope() as session:
        create_message(session, "m-1", request)
        session.add(Attempt(id="a-1", message_id="m-1", hop=0, channel="viber",
                            provider="messaggio", status="undelivered",
                            provider_message_id="pm-1", error_reason="viber_user_not_found",
                            response_code="0", response_text="OK"))
        session.flush()
        add_event(session, "m-1", "fallback", "a-1", from_channel="viber", to_channel="sms")
    assert main(["status", "m-1"]) == 0
    out = capsys.readouterr().out
    assert "#0 viber  undelivered" in out and "error: viber_user_not_found" in out
    assert "provider answered 0 OK" in out
    assert "  1 " in out and "queued" in out
    assert "  2 " in out and "fallback" in out and "to_channel=sms" in out


def test_db_upgrade_reports_the_database(database: None, capsys: pytest.CaptureFixture[str],
                                         ) -> None:
    assert main(["db", "upgrade"]) == 0
    assert "latest revision" in capsys.readouterr().out
