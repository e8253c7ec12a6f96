"""Flow documents: loading YAML/JSON and every refusal, each naming the step to fix."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from shared.flows.definition import (
    EndStep,
    FlowDefinition,
    FlowDocumentError,
    FlushStep,
    MessageStep,
    QuestionStep,
    diagnose,
    load_definition,
    parse_document,
)
from shared.schemas import error_list

YAML_DOC = """
name: order-check
description: Ask whether an order arrived
triggers:
  poke_tags: [order]
  keywords: [ORDER, " status "]
steps:
  - id: ask
    type: message
    text: Did your order arrive?
    buttons:
      - {id: yes, caption: Yes, next: thanks}
      - {id: no, caption: No, next: why, action: "tel:+3212345678"}
    on_timeout: {after: 3600, next: thanks}
  - id: why
    type: question
    text: What went wrong?
    next: thanks
  - id: thanks
    type: end
"""


def flow(**overrides: Any) -> dict[str, Any]:
    """A valid three-step flow as a plain document; ``overrides`` replace top-level fields."""
    doc = {
        "name": "order-check",
        "steps": [
            {"id": "ask", "type": "message", "text": "Did your order arrive?",
             "buttons": [{"id": "yes", "caption": "Yes", "next": "thanks"},
                         {"id": "no", "caption": "No", "next": "why"}]},
            {"id": "why", "type": "question", "text": "What went wrong?", "next": "thanks"},
            {"id": "thanks", "type": "end"},
        ],
    }
    doc.update(overrides)
    return copy.deepcopy(doc)


def refusal(doc: dict[str, Any]) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as info:
        FlowDefinition.model_validate(doc)
    return error_list(info.value)


def only_field(doc: dict[str, Any]) -> str:
    errors = refusal(doc)
    assert len(errors) == 1, errors
    return errors[0]["field"]


# --- a valid flow --------------------------------------------------------------------------------

def test_valid_three_step_flow_and_helpers():
    definition = FlowDefinition.model_validate(flow())
    assert definition.route == ["rogerthat"] and definition.native is False
    assert definition.triggers.poke_tags == [] and definition.triggers.keywords == []
    ask, why, thanks = definition.steps
    assert isinstance(ask, MessageStep) and isinstance(why, QuestionStep)
    assert isinstance(thanks, EndStep)
    assert ask.auto_lock is True and ask.alert is None and ask.on_timeout is None
    assert definition.start_step() is ask
    assert definition.step("why") is why
    with pytest.raises(KeyError):
        definition.step("nope")
    assert definition.next_of(ask) == ["thanks", "why"]
    assert definition.next_of(why) == ["thanks"] and definition.next_of(thanks) == []


def test_start_and_next_of_with_timeout_failure_and_flush():
    doc = flow(start="ask")
    doc["steps"][0]["on_timeout"] = {"after": 60, "next": "flush"}
    doc["steps"][0]["on_failed"] = "thanks"
    doc["steps"].append({"id": "flush", "type": "flush", "next": "thanks"})
    definition = FlowDefinition.model_validate(doc)
    assert definition.next_of(definition.step("ask")) == ["thanks", "why", "flush"]
    assert isinstance(definition.step("flush"), FlushStep)
    assert definition.start_step().id == "ask"


def test_start_may_be_any_step():
    doc = flow(start="why")
    doc["steps"][0]["buttons"][1]["next"] = "thanks"
    doc["steps"][1]["next"] = "ask"
    assert FlowDefinition.model_validate(doc).start_step().id == "why"


def test_round_trip_through_model_dump():
    definition = FlowDefinition.model_validate(flow())
    dumped = definition.model_dump(mode="json", exclude_none=True)
    assert FlowDefinition.model_validate(dumped) == definition


def test_keyword_trigger_matching():
    definition = FlowDefinition.model_validate(flow(triggers={"keywords": ["Order", "STATUS"]}))
    assert definition.triggers.matches_keyword("  order ")
    assert definition.triggers.matches_keyword("status")
    assert not definition.triggers.matches_keyword("order please")
    assert not definition.triggers.matches_keyword(None)
    assert not definition.triggers.matches_keyword("   ")


# --- refusals, each with its field ----------------------------------------------------------------

def test_duplicate_step_id():
    doc = flow()
    doc["steps"].append({"id": "why", "type": "end"})
    assert only_field(doc) == "steps.why"


def test_button_next_missing():
    doc = flow()
    doc["steps"][0]["buttons"][1]["next"] = "nowhere"
    errors = refusal(doc)
    assert errors == [{"field": "steps.ask.buttons.no.next",
                       "message": "no step has the id 'nowhere'"}]


def test_question_next_missing():
    doc = flow()
    doc["steps"][1]["next"] = "nowhere"
    assert only_field(doc) == "steps.why.next"


def test_flush_next_missing():
    doc = flow()
    doc["steps"].insert(2, {"id": "flush", "type": "flush", "next": "nowhere"})
    doc["steps"][1]["next"] = "flush"
    assert only_field(doc) == "steps.flush.next"


def test_on_timeout_next_missing():
    doc = flow()
    doc["steps"][1]["on_timeout"] = {"after": 60, "next": "nowhere"}
    assert only_field(doc) == "steps.why.on_timeout.next"


def test_on_failed_missing():
    doc = flow()
    doc["steps"][0]["on_failed"] = "nowhere"
    assert only_field(doc) == "steps.ask.on_failed"


def test_start_missing():
    assert only_field(flow(start="nowhere")) == "start"


def test_duplicate_button_ids():
    doc = flow()
    doc["steps"][0]["buttons"][1]["id"] = "yes"
    assert only_field(doc) == "steps.ask.buttons"


@pytest.mark.parametrize("caption", ["yes", "YES", " Yes! ", "yes."])
def test_duplicate_captions_ignoring_case_and_punctuation(caption):
    doc = flow()
    doc["steps"][0]["buttons"][1]["caption"] = caption
    errors = refusal(doc)
    assert errors[0]["field"] == "steps.ask.buttons"
    assert "captions" in errors[0]["message"]


def test_unreachable_step():
    doc = flow()
    doc["steps"].append({"id": "orphan", "type": "message", "text": "Hi",
                         "buttons": [{"id": "ok", "caption": "OK", "next": "thanks"}]})
    assert only_field(doc) == "steps.orphan"


def test_unreachable_end():
    doc = flow()
    doc["steps"].append({"id": "other", "type": "end"})
    assert only_field(doc) == "steps.other"


def test_no_reachable_end():
    doc = {"name": "loop", "steps": [
        {"id": "a", "type": "message", "text": "A",
         "buttons": [{"id": "b", "caption": "B", "next": "b"}]},
        {"id": "b", "type": "question", "text": "B", "next": "a"},
    ]}
    assert refusal(doc) == [{"field": "steps",
                             "message": "no end step is reachable from the start"}]


def test_end_step_cannot_have_next():
    doc = flow()
    doc["steps"][2]["next"] = "ask"
    assert only_field(doc) == "steps.2.end.next"
    assert refusal(doc)[0]["message"] == "unknown field"


@pytest.mark.parametrize("bad_id", ["has space", "a/b", "", "x" * 101, "ü"])
def test_step_id_characters(bad_id):
    doc = flow()
    doc["steps"][1]["id"] = bad_id
    assert refusal(doc)[0]["field"] == "steps.1.question.id"


def test_unknown_step_type():
    doc = flow()
    doc["steps"][1]["type"] = "poll"
    assert refusal(doc)[0]["field"] == "steps.1"


@pytest.mark.parametrize(("field", "value"), [
    ("name", "Order Check"), ("name", "-x"), ("name", ""), ("steps", []),
    ("route", []), ("route", ["sms", "sms"]), ("route", ["fax"]),
])
def test_top_level_fields(field, value):
    assert refusal(flow(**{field: value}))[0]["field"].startswith(field)


@pytest.mark.parametrize(("button", "field"), [
    ({"id": "x", "caption": "X", "next": "thanks", "action": "ftp://x"}, "action"),
    ({"id": "", "caption": "X", "next": "thanks"}, "id"),
    ({"id": "x", "caption": "", "next": "thanks"}, "caption"),
    ({"id": "x", "caption": "X"}, "next"),
    ({"id": "x", "caption": "X", "next": "thanks", "colour": "red"}, "colour"),
])
def test_button_fields(button, field):
    doc = flow()
    doc["steps"][0]["buttons"].append(button)
    assert refusal(doc)[0]["field"] == f"steps.0.message.buttons.2.{field}"


@pytest.mark.parametrize("after", [0, 604801, "soon"])
def test_timeout_range(after):
    doc = flow()
    doc["steps"][0]["on_timeout"] = {"after": after, "next": "thanks"}
    assert refusal(doc)[0]["field"] == "steps.0.message.on_timeout.after"


def test_message_needs_buttons_and_at_most_twenty():
    doc = flow()
    doc["steps"][0]["buttons"] = []
    assert refusal(doc)[0]["field"] == "steps.0.message.buttons"
    doc["steps"][0]["buttons"] = [{"id": f"b{i}", "caption": f"B{i}", "next": "thanks"}
                                  for i in range(21)]
    assert refusal(doc)[0]["field"] == "steps.0.message.buttons"


def test_silent_alert_refused_like_a_send_request():
    doc = flow()
    doc["steps"][0]["alert"] = {"silent": True, "ring_seconds": 5}
    assert refusal(doc)[0]["field"] == "steps.0.message.alert"


# --- native flows -------------------------------------------------------------------------------

def test_native_flow_is_valid_on_the_messenger_only():
    assert FlowDefinition.model_validate(flow(native=True)).native is True
    errors = refusal(flow(native=True, route=["rogerthat", "sms"]))
    assert errors[0]["field"] == "native" and "route" in errors[0]["message"]


@pytest.mark.parametrize(("step", "name", "value"), [
    (0, "on_timeout", {"after": 60, "next": "thanks"}),
    (1, "on_timeout", {"after": 60, "next": "thanks"}),
    (0, "on_failed", "thanks"),
    (1, "on_failed", "thanks"),
])
def test_native_flow_refuses_timeout_and_failure(step, name, value):
    doc = flow(native=True)
    doc["steps"][step][name] = value
    errors = refusal(doc)
    step_id = doc["steps"][step]["id"]
    assert errors[0]["field"] == f"steps.{step_id}.{name}"
    assert "native" in errors[0]["message"]


def test_native_flow_refuses_a_trap_the_messenger_refuses():
    doc = flow(native=True)
    doc["steps"][0]["buttons"].append({"id": "loop", "caption": "Again", "next": "loop"})
    doc["steps"].append({"id": "loop", "type": "question", "text": "Again?", "next": "loop"})
    assert FlowDefinition.model_validate({**doc, "native": False})  # fine when we run it
    assert only_field(doc) == "steps.loop"


def test_native_flow_refuses_reserved_caption():
    doc = flow(native=True)
    doc["steps"][0]["buttons"][0]["caption"] = "roger that"
    assert only_field(doc) == "steps.ask.buttons.yes.caption"


# --- loading documents ------------------------------------------------------------------------------

def test_load_yaml():
    definition = load_definition(YAML_DOC)
    assert definition.name == "order-check"
    assert [s.id for s in definition.steps] == ["ask", "why", "thanks"]
    ask = definition.step("ask")
    assert isinstance(ask, MessageStep)
    # YAML 1.1 would read yes/no as booleans; flow ids and captions stay text
    assert [(b.id, b.caption) for b in ask.buttons] == [("yes", "Yes"), ("no", "No")]
    assert ask.buttons[1].action == "tel:+3212345678"
    assert ask.on_timeout is not None and ask.on_timeout.after == 3600
    assert definition.triggers.keywords == ["ORDER", "status"]


def test_load_yaml_numbers_and_booleans():
    text = YAML_DOC.replace("{id: yes, caption: Yes,", "{id: 1, caption: 2,").replace(
        "type: end", "type: end\nnative: false")
    definition = load_definition(text.replace("    on_timeout: {after: 3600, next: thanks}\n",
                                              "    auto_lock: false\n"))
    ask = definition.step("ask")
    assert isinstance(ask, MessageStep)
    assert (ask.buttons[0].id, ask.buttons[0].caption, ask.auto_lock) == ("1", "2", False)


def test_load_json_with_and_without_content_type():
    text = json.dumps(flow())
    for content_type in ("application/json", "application/json; charset=utf-8",
                         "application/vnd.flow+json", None, "application/yaml"):
        assert load_definition(text, content_type) == FlowDefinition.model_validate(flow())


@pytest.mark.parametrize(("text", "content_type", "message"), [
    ("name: [unclosed", None, "not valid YAML"),
    ("a: b\n c: d: e", "application/yaml", "not valid YAML"),
    ('{"name": "x",', "application/json", "not valid JSON"),
    ("name: x", "application/json", "not valid JSON"),
    ("", None, "must be an object"),
    ("- just\n- a list", None, "must be an object"),
    ("just text", None, "must be an object"),
    ("[1, 2]", "application/json", "must be an object"),
])
def test_unparseable_documents(text, content_type, message):
    with pytest.raises(FlowDocumentError) as info:
        load_definition(text, content_type)
    assert info.value.field == "body"
    assert message in info.value.message
    assert isinstance(info.value, ValueError)


def test_yaml_error_names_line_and_column():
    with pytest.raises(FlowDocumentError) as info:
        load_definition("name: ok\nsteps:\n  - id: [x\n")
    assert "line " in info.value.message and "column " in info.value.message


def test_yaml_refuses_python_objects():
    with pytest.raises(FlowDocumentError):
        load_definition("name: !!python/object/apply:os.system ['true']\n")


def test_invalid_content_is_a_validation_error():
    with pytest.raises(ValidationError) as info:
        load_definition(YAML_DOC.replace("next: why", "next: gone"))
    assert error_list(info.value)[0]["field"] == "steps.ask.buttons.no.next"


# --- the designer's live check: every problem, each on its step ------------------------------

def test_diagnose_lists_every_cross_step_problem_on_its_step():
    doc = flow()
    doc["steps"][0]["buttons"][1]["id"] = doc["steps"][0]["buttons"][0]["id"]  # duplicate
    doc["steps"].append({"id": "orphan", "type": "end"})
    definition, problems = diagnose(doc)
    assert definition is not None
    assert [(p["step"], p["field"]) for p in problems] == [
        ("ask", "steps.ask.buttons"), ("orphan", "steps.orphan")]
    assert problems[1]["message"] == "no path from the start reaches this step"
    # POST /v1/flows refuses the same document with the first of them.
    assert refusal(doc)[0]["field"] == "steps.ask.buttons"


def test_diagnose_keeps_going_past_a_missing_reference():
    doc = flow()
    doc["steps"][0]["buttons"][0]["next"] = "nowhere"
    doc["steps"].append({"id": "orphan", "type": "end"})
    _, problems = diagnose(doc)
    assert [(p["step"], p["field"]) for p in problems][:2] == [
        ("ask", "steps.ask.buttons.yes.next"), ("orphan", "steps.orphan")]


def test_diagnose_names_the_step_of_a_field_error():
    doc = flow()
    del doc["steps"][0]["buttons"][0]["next"]  # a button with no next
    definition, problems = diagnose(doc)
    assert definition is None
    assert problems == [{"field": "steps.0.message.buttons.0.next", "message": "Field required",
                         "step": "ask"}]


def test_diagnose_of_a_valid_flow_finds_nothing():
    definition, problems = diagnose(flow())
    assert definition is not None and problems == []


def test_layout_is_kept_and_ignored_by_the_checks():
    doc = flow(layout={"ask": {"x": 10, "y": 20.5}, "gone": {"x": 0, "y": 0}})
    definition = FlowDefinition.model_validate(doc)
    assert definition.model_dump(exclude_none=True)["layout"]["ask"] == {"x": 10, "y": 20.5}


@pytest.mark.parametrize("layout, field", [
    ({"ask": {"x": "left", "y": 0}}, "layout.ask.x"),
    ({"ask": {"x": 0}}, "layout.ask.y"),
    ({"ask": {"x": 0, "y": 1e9}}, "layout.ask.y"),
    ({"bad id!": {"x": 0, "y": 0}}, "layout.bad id!.[key]"),
])
def test_layout_refusals_name_the_field(layout, field):
    assert field in [e["field"] for e in refusal(flow(layout=layout))]


def test_parse_document_refuses_a_list():
    with pytest.raises(FlowDocumentError):
        parse_document("- a\n- b\n")
    assert parse_document("name: x\nsteps: []\n") == {"name": "x", "steps": []}
