"""What the designer needs around a flow document (shared.flows.design): generated layouts,
YAML that loads back unchanged, the results CSV, the brandings list."""

from __future__ import annotations

import csv
import io

from shared.flows.definition import FlowDefinition, load_definition
from shared.flows.design import (
    COLUMN,
    MARGIN,
    ROW,
    generate_layout,
    parse_brandings,
    results_csv,
    to_yaml,
    with_layout,
)

FLOW = {"name": "booking", "route": ["rogerthat", "sms"], "steps": [
    {"id": "day", "type": "message", "text": "Which day?", "buttons": [
        {"id": "yes", "caption": "Monday", "next": "time"},
        {"id": "no", "caption": "Tuesday", "next": "done", "action": "confirm:Sure?"}]},
    {"id": "time", "type": "question", "text": "What time?", "next": "done",
     "on_timeout": {"after": 60, "next": "late"}},
    {"id": "done", "type": "end"}, {"id": "late", "type": "end"},
    {"id": "orphan", "type": "end"}]}


def test_generated_layout_puts_steps_in_columns_by_distance_from_the_start():
    layout = generate_layout(FLOW)
    assert layout["day"] == {"x": MARGIN, "y": MARGIN}
    assert layout["time"] == {"x": MARGIN + COLUMN, "y": MARGIN}
    assert layout["done"] == {"x": MARGIN + COLUMN, "y": MARGIN + ROW}
    assert layout["late"] == {"x": MARGIN + 2 * COLUMN, "y": MARGIN}
    assert layout["orphan"] == {"x": MARGIN + 3 * COLUMN, "y": MARGIN}  # unreached: last


def test_positions_the_document_has_are_kept():
    layout = generate_layout({**FLOW, "layout": {"time": {"x": 5, "y": 7.5},
                                                "day": {"x": "left", "y": 0}}})
    assert layout["time"] == {"x": 5, "y": 7.5}
    assert layout["day"] == {"x": MARGIN, "y": MARGIN}  # not a number: generated


def test_layout_of_a_broken_document_still_places_every_step():
    broken = {"name": "x", "start": "nowhere", "steps": [
        {"id": "a", "type": "message", "buttons": [{"caption": "no next"}, "junk"]},
        {"type": "end"}, "junk", {"id": "b", "type": "end"}]}
    assert set(generate_layout(broken)) == {"a", "b"}
    assert generate_layout({}) == {}


def test_a_flow_with_a_generated_layout_is_still_valid_and_runs_the_same():
    laid_out = with_layout(FLOW)
    definition = FlowDefinition.model_validate({**laid_out, "steps": FLOW["steps"][:4]})
    assert definition.next_of(definition.step("day")) == ["time", "done"]


def test_yaml_round_trips_with_keys_in_writing_order():
    text = to_yaml(with_layout(FLOW))
    assert text.index("name:") < text.index("route:") < text.index("steps:") < text.index(
        "layout:")
    assert "id: 'yes'" in text or 'id: "yes"' in text  # quoted: YAML 1.1 reads yes as true
    loaded = load_definition(to_yaml({**FLOW, "steps": FLOW["steps"][:4]}))
    assert loaded.model_dump(exclude_none=True)["steps"][0]["buttons"][0]["id"] == "yes"
    assert loaded.step("day").buttons[1].action == "confirm:Sure?"


def test_results_csv_one_row_per_run_and_no_formulas():
    runs = [{"run_id": "r1", "flow": {"name": "booking", "version": 2},
             "contact": {"to": {"email": "ann@example.com"}}, "trigger": "api",
             "status": "finished", "end_id": "done", "timed_out": False,
             "started_at": "2025-01-01T10:00:00Z", "finished_at": "2025-01-01T10:05:00Z",
             "steps": [{"step_id": "day", "answer": {"button_id": "yes", "caption": "Monday"},
                        "outcome": "answered"},
                       {"step_id": "time", "answer": {"text": "=HYPERLINK(\"x\")"},
                        "outcome": "answered"}]},
            {"run_id": "r2", "flow": {"name": "booking", "version": 1},
             "contact": {"to": {"phone": "+32470000001"}}, "trigger": "console",
             "status": "timed_out", "end_id": None, "timed_out": True,
             "started_at": "2025-01-01T11:00:00Z", "finished_at": None,
             "steps": [{"step_id": "day", "answer": None, "outcome": "timeout"}]}]
    rows = list(csv.reader(io.StringIO(results_csv(["day", "time"], runs))))
    assert rows[0][-2:] == ["day", "time"]
    assert rows[1][:3] == ["r1", "2", "ann@example.com"]
    assert rows[1][-2:] == ["Monday (yes)", "'=HYPERLINK(\"x\")"]
    assert rows[2][2] == "'+32470000001" and rows[2][-2:] == ["timeout", ""]


def test_parse_brandings():
    assert parse_brandings("") == []
    assert parse_brandings(" aaa=Blue , bbb,aaa=Again,, ccc = ") == [
        {"id": "aaa", "label": "Blue"}, {"id": "bbb", "label": "bbb"},
        {"id": "ccc", "label": "ccc"}]
