"""``switchboard consent show|set|import|export|keywords`` (shared/consentcli.py) on a real
database: what it prints, what it records, and one-line refusals naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared import apps, consent
from shared.cli import main
from shared.db import session_scope


def test_set_show_and_export(temp_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["consent", "set", "sms", "+32470123456", "opted_out",
                 "--category", "marketing"]) == 0
    assert "sms 32470123456: opted_out of marketing" in capsys.readouterr().out
    assert main(["consent", "show", "sms", "32470123456"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["status"], shown["categories"], shown["history"][0]["source"]) == (
        "opted_out", ["marketing"], "cli")
    assert main(["consent", "export"]) == 0
    assert capsys.readouterr().out == (
        "channel,address,status,categories,account\nsms,32470123456,opted_out,marketing,\n")


def test_import_reads_a_file_and_counts(temp_db: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text("channel,address\nsms,+32470123456\nviber,+32470123456\n")
    assert main(["consent", "import", str(listing)]) == 0
    assert "2 rows: 2 changed, 0 skipped" in capsys.readouterr().out
    with session_scope() as session:
        assert not consent.may_message(session, "viber", "", "32470123456")


@pytest.mark.parametrize(("argv", "message"), [
    (["consent", "set", "sms", "nope", "opted_out"], "address:"),
    (["consent", "show", "pigeon", "1"], "channel:"),
    (["consent", "set", "sms", "+32470123456", "opted_out", "--app", "ghost"], "app:"),
    (["consent", "import", "/nonexistent.csv"], "cannot read"),
])
def test_refusals_are_one_line(temp_db: Path, capsys: pytest.CaptureFixture[str],
                               argv: list[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_an_apps_keywords_and_confirmation(temp_db: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with session_scope() as session:
        apps.create(session, "shop")
    assert main(["consent", "keywords", "--app", "shop", "--opt-out", "STOP, Arret",
                 "--opt-out-confirmation", "No more messages"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["opt_out_keywords"] == ["ARRET", "STOP"]
    assert shown["opt_out_confirmation"] == "No more messages"
    assert shown["opt_in_keywords"] == ["START", "UNSTOP"]  # the global ones still
    assert main(["consent", "keywords", "--app", "shop", "--opt-out", ""]) == 0
    assert "STOPALL" in json.loads(capsys.readouterr().out)["opt_out_keywords"]
    assert main(["consent", "keywords"]) == 2  # the default app's are the settings
