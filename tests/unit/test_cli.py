"""The switchboard command: clear messages for bad input, readable status output, plain help
that ends with an example, and ``switchboard logs``."""

from __future__ import annotations

import argparse
import io
import re
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from shared import db
from shared.cli import _parser, main


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


# --- help: plain text, and an example at the end of every verb's --------------------------

def _verbs(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of the command, top level first, with the words that reach it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _verbs(child, (*path, name))


VERBS = list(_verbs(_parser()))


def test_every_verb_is_covered() -> None:
    names = {" ".join(path) for path, _ in VERBS}
    assert {"", "up", "logs", "send", "status", "apps create", "flows start"} <= names


@pytest.mark.parametrize("path", [" ".join(p) or "(top level)" for p, _ in VERBS])
def test_each_verbs_help_ends_with_an_example(path: str) -> None:
    words = [] if path == "(top level)" else path.split()
    lines = _help(words).rstrip().splitlines()
    label = next(i for i in range(len(lines) - 1, -1, -1) if lines[i] in ("example:",
                                                                          "examples:"))
    examples = [line.strip() for line in lines[label + 1:]]
    assert examples and all(e.startswith(("switchboard ", "SWITCHBOARD_", "FLOWER_"))
                            for e in examples), lines[label:]
    if words:  # the example runs the verb it documents
        assert all(" ".join(["switchboard", *words]) in e for e in examples), examples


@pytest.mark.parametrize("path", [" ".join(p) or "(top level)" for p, _ in VERBS])
def test_help_is_plain_text(path: str) -> None:
    text = _help([] if path == "(top level)" else path.split())
    assert "`" not in text and not re.search(r"::\s*$", text, re.M), text
    assert not re.search(r":(func|class|mod|meth):`", text), text


def test_each_verb_says_what_it_does() -> None:
    for path, parser in VERBS:
        assert parser.description, f"switchboard {' '.join(path)} has no description"


def _help(words: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info, redirect_stdout(io.StringIO()) as out:
        main([*words, "--help"])
    assert exit_info.value.code == 0
    return out.getvalue()


# --- switchboard logs ----------------------------------------------------------------------

@pytest.fixture()
def logs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from shared.settings import get_settings

    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    directory = tmp_path / "log"
    directory.mkdir()
    (directory / "worker.log").write_text("".join(f"worker line {i}\n" for i in range(30)))
    (directory / "web.log").write_text("web line 0\nweb line 1\n")
    yield directory
    get_settings.cache_clear()


def test_logs_of_one_process_prints_its_whole_log(logs_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "worker"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"worker line {i}" for i in range(30)]


def test_logs_without_a_process_prints_the_end_of_each(logs_dir: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "-n", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == ["web    | web line 1",
                                                    "worker | worker line 29"]


def test_logs_of_an_unknown_process_names_the_known_ones(
        logs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "beet"]) == 2
    err = capsys.readouterr().err
    assert "no log for 'beet'" in err and "web, worker" in err and "Traceback" not in err


def test_logs_before_any_up_says_where_they_would_be(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from shared.settings import get_settings

    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    assert main(["logs"]) == 2
    assert f"no logs in {tmp_path / 'log'}" in capsys.readouterr().err
    get_settings.cache_clear()


# --- time-aware delivery (issue 17) -------------------------------------------------------------

def test_send_timing_flags_become_request_fields() -> None:
    from shared.cli import _send_fields

    args = _parser().parse_args([
        "send", "--to", "+32470120000", "--text", "hi", "--send-at", "2026-12-24T09:00:00+01:00",
        "--valid-until", "2026-12-24T18:00:00+01:00", "--quiet-hours",
        "21:00-08:00@Europe/Brussels", "--critical"])
    fields = _send_fields(args)
    assert fields["send_at"] == "2026-12-24T09:00:00+01:00"
    assert fields["valid_until"] == "2026-12-24T18:00:00+01:00"
    assert fields["quiet_hours"] == {"start": "21:00", "end": "08:00",
                                     "timezone": "Europe/Brussels"}
    assert fields["priority"] == "critical"
    ttl = _send_fields(_parser().parse_args(["send", "--to", "+32470120000", "--text", "hi",
                                             "--ttl", "600", "--quiet-hours", "22:00-07:00"]))
    assert ttl["ttl_seconds"] == 600 and ttl["quiet_hours"]["timezone"] == "auto"


@pytest.mark.parametrize("spec", ["21:00", "9pm-8am", "21:00-08:00@Nowhere/Town"])
def test_bad_quiet_hours_are_a_clear_error(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "--to", "+32470120000", "--text", "hi", "--quiet-hours", spec]) == 2
    err = capsys.readouterr().err
    assert "--quiet-hours" in err and "Traceback" not in err


def test_cancel_a_scheduled_message_and_refuse_an_unknown_one(
        database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import UTC, datetime, timedelta

    from shared.db import session_scope
    from shared.messages import create_message
    from shared.models import Message
    from shared.schemas import SendRequest

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with session_scope() as session:
        create_message(session, "m-later", SendRequest.model_validate(
            {"to": {"phone": "+32470120000"}, "route": ["sms"], "text": "x", "send_at": later}))
    assert main(["cancel", "m-later"]) == 0
    assert "cancelled" in capsys.readouterr().out
    with session_scope() as session:
        assert session.get_one(Message, "m-later").status == "cancelled"
    assert main(["cancel", "nope"]) == 2
    assert "no message nope" in capsys.readouterr().err


def test_apps_update_sets_and_clears_quiet_hours(database: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from shared import apps
    from shared.db import session_scope

    with session_scope() as session:
        apps.create(session, "shop")
        session.commit()
    assert main(["apps", "update", "shop", "--quiet-hours", "21:00-08:00"]) == 0
    assert "21:00-08:00 (auto)" in capsys.readouterr().out
    with session_scope() as session:
        shop = apps.find(session, "shop").id
        assert apps.default_quiet_hours(session, shop) == {"start": "21:00", "end": "08:00",
                                                           "timezone": "auto"}
    assert main(["apps", "update", "shop", "--quiet-hours", "none"]) == 0
    assert main(["apps", "update", "default", "--quiet-hours", "22:00-07:00"]) == 0
    with session_scope() as session:
        assert apps.default_quiet_hours(session, shop) is None
        assert apps.default_quiet_hours(session, "default")["start"] == "22:00"
    assert main(["apps", "update", "nobody", "--quiet-hours", "none"]) == 2
