"""``switchboard templates ...`` and ``switchboard send --template`` against a temporary
database: versions, refusals naming locale/field/line, the preview's SMS cost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared import cli

TEMPLATE = """
name: order_shipped
default_locale: en
locales:
  en:
    text: "Order {{ order.id }} has shipped."
  nl-BE:
    text: "Bestelling {{ order.id }} is onderweg."
    sms_text: "Bestelling {{ order.id }}: {{ order.total | currency('EUR') }}"
"""


def _write(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def test_load_list_show_and_preview(temp_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(temp_db, "t.yaml", TEMPLATE)
    assert cli.main(["templates", "load", path]) == 0
    assert cli.main(["templates", "load", path]) == 0
    assert "saved order_shipped version 2" in capsys.readouterr().out
    assert cli.main(["templates", "list"]) == 0
    assert "order_shipped" in (listed := capsys.readouterr().out) and "v2" in listed
    assert cli.main(["templates", "show", "order_shipped", "--version", "1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 1 and [v["version"] for v in shown["versions"]] == [1, 2]
    data = json.dumps({"order": {"id": "A-17", "total": 5}})
    assert cli.main(["templates", "preview", "order_shipped", "--locale", "nl-BE",
                     "--data", data, "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["sms"]["text"] == "Bestelling A-17: € 5,00"
    assert (body["sms"]["encoding"], body["sms"]["segments"]) == ("GSM-7", 1)
    assert cli.main(["templates", "preview", "order_shipped", "--data", data]) == 0
    assert "SMS: GSM-7" in capsys.readouterr().out


def test_a_template_that_does_not_compile_names_locale_field_and_line(
        temp_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(temp_db, "bad.yaml", TEMPLATE.replace("has shipped.", "{% if %}"))
    assert cli.main(["templates", "load", path]) == 2
    err = capsys.readouterr().err
    assert "invalid locales.en.text: line 1:" in err and "Traceback" not in err


@pytest.mark.parametrize(("argv", "message"), [
    (["templates", "show", "nope"], "invalid template.name: no template nope"),
    (["templates", "preview", "order_shipped", "--data", "[1]"], "must be a JSON object"),
    (["templates", "preview", "order_shipped", "--data", "{"], "--data is not JSON"),
    (["templates", "preview", "order_shipped"], "template.data.order.id"),
    (["templates", "list", "--app", "ghost"], "no app ghost"),
])
def test_refusals_are_one_line_each(temp_db: Path, capsys: pytest.CaptureFixture[str],
                                    argv: list[str], message: str) -> None:
    assert cli.main(["templates", "load", _write(temp_db, "t.yaml", TEMPLATE)]) == 0
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_send_with_a_missing_placeholder_is_refused_before_the_broker(
        temp_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["templates", "load", _write(temp_db, "t.yaml", TEMPLATE)]) == 0
    assert cli.main(["send", "--to", "+32470123456", "--route", "sms", "--template",
                     "order_shipped", "--locale", "nl-BE", "--data", "{}"]) == 2
    assert "template.data.order.id" in capsys.readouterr().err


def test_send_fields_carry_the_template() -> None:
    args = cli._parser().parse_args([
        "send", "--to", "+32470123456", "--template", "order_shipped", "--template-version",
        "3", "--locale", "nl-BE", "--data", '{"order": {"id": 1}}'])
    assert cli._send_fields(args)["template"] == {
        "name": "order_shipped", "version": 3, "locale": "nl-BE",
        "data": {"order": {"id": 1}}}
