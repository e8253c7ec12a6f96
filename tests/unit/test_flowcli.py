"""``switchboard flows ...`` against a real (temporary) database; run starts are registered on
the unit of work that creates the runs and published after its commit, recorded here (the
``published`` fixture) instead of a broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared import cli
from shared.uow import FollowUps
from tests.unit.conftest import tasks

FLOW = """
name: survey
route: [sms]
steps:
  - id: q1
    type: message
    text: Did you like it?
    buttons:
      - {id: y, caption: Yes, next: done}
      - {id: n, caption: No, next: done}
  - {id: done, type: end}
"""


def _write(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def test_load_list_show_start_and_stats(temp_db: Path, published: list[FollowUps],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(temp_db, "survey.yaml", FLOW)
    assert cli.main(["flows", "load", path]) == 0
    assert cli.main(["flows", "load", path]) == 0
    assert "saved survey version 2" in capsys.readouterr().out
    assert cli.main(["flows", "list"]) == 0
    assert "survey" in capsys.readouterr().out
    assert cli.main(["flows", "show", "survey", "--version", "1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 1 and shown["definition"]["steps"][0]["id"] == "q1"
    assert cli.main(["flows", "start", "survey", "--to", "+32470123456"]) == 0
    run_id = capsys.readouterr().out.strip()
    assert tasks(published) == [("switchboard.start_flow_run", (run_id,))]
    assert cli.main(["flows", "stats", "survey"]) == 0
    out = capsys.readouterr().out
    assert "survey v2: started 0" in out and "Yes: 0, No: 0" in out


def test_invalid_definition_names_the_step(temp_db: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(temp_db, "bad.yaml", FLOW.replace("caption: Yes, next: done",
                                                    "caption: Yes, next: nowhere"))
    assert cli.main(["flows", "load", path]) == 2
    err = capsys.readouterr().err
    assert "steps.q1.buttons.y.next" in err and "Traceback" not in err


def test_unreadable_document_and_unreachable_contact(temp_db: Path, published: list[FollowUps],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["flows", "load", _write(temp_db, "x.json", "{not json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    cli.main(["flows", "load", _write(temp_db, "survey.yaml", FLOW)])
    assert cli.main(["flows", "start", "survey", "--email", "a@example.com"]) == 2
    assert "to.phone" in capsys.readouterr().err
    assert published == []
    assert cli.main(["flows", "start", "nope", "--to", "+32470123456"]) == 2
    assert "no flow nope" in capsys.readouterr().err
