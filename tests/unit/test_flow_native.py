"""Native messenger flows: the MessageFlow XML we generate and the results we read back."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from shared.flows.definition import FlowDefinition
from shared.flows.native import (
    NAMESPACE,
    alert_attributes,
    decode_designer_id,
    results_from_member_result,
    to_flow_xml,
)
from shared.schemas import Alert

NS = "{" + NAMESPACE + "}"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
# The child sequence of MessageFlowDefinition in MessageFlow.1.xsd (guide providers.md §1.9).
SCHEMA_ORDER = ["end", "message", "formMessage", "resultsFlush", "resultsEmail", "flowCode"]
# Every attribute the schema marks required, per element.
REQUIRED = {
    "messageFlowDefinition": {"name", "language"},
    "end": {"id"},
    "message": {"id", "allowDismiss", "autoLock", "vibrate", "alertType", "alertIntervalType"},
    "answer": {"id", "caption", "action", "reference"},
    "formMessage": {"id", "autoLock", "vibrate", "alertType", "alertIntervalType",
                    "positiveReference", "negativeReference"},
    "form": {"positiveButtonCaption", "negativeButtonCaption"},
    "widget": {"maxChars", XSI_TYPE},
    "resultsFlush": {"id", "reference"},
}
ID_REFS = {"startReference", "reference", "positiveReference", "negativeReference",
           "dismissReference"}


def definition(**overrides: Any) -> FlowDefinition:
    doc: dict[str, Any] = {
        "name": "order-check", "native": True, "start": "ask",
        "steps": [
            {"id": "done", "type": "end"},
            {"id": "ask", "type": "message", "text": 'Order <42> & "co" arrived?\nReply below',
             "branding": "b4c0ffee", "auto_lock": False,
             "alert": {"ring_seconds": 30, "repeat_seconds": 900},
             "buttons": [{"id": "yes", "caption": "Yes & thanks", "next": "flush"},
                         {"id": "no", "caption": "No <not yet>", "next": "why",
                          "action": "tel:+3212345678"},
                         {"id": "web", "caption": "Track", "next": "again",
                          "action": "https://example.com/t?a=1&b=2"}]},
            {"id": "again", "type": "message", "text": "Once more?",
             "buttons": [{"id": "yes", "caption": "Yes", "next": "ask"},
                         {"id": "stop", "caption": "Stop", "next": "cancelled"}]},
            {"id": "why", "type": "question", "text": "What went wrong?", "next": "flush"},
            {"id": "flush", "type": "flush", "next": "done"},
            {"id": "cancelled", "type": "end"},
        ],
    }
    doc.update(overrides)
    return FlowDefinition.model_validate(doc)


def parse(xml: str) -> ET.Element:
    assert xml.startswith('<?xml version="1.0" encoding="utf-8"?>\n')
    return ET.fromstring(xml)


def local(element: ET.Element) -> str:
    assert element.tag.startswith(NS), element.tag  # every element in the flow namespace
    return element.tag[len(NS):]


# --- definition -> XML ---------------------------------------------------------------------------

def test_xml_is_well_formed_with_root_attributes():
    root = parse(to_flow_xml(definition(), language="nl"))
    assert local(root) == "messageFlowDefinition"
    assert root.get("name") == "order-check" and root.get("language") == "nl"
    assert root.get("startReference") == "message_ask"


def test_children_in_schema_sequence_order():
    root = parse(to_flow_xml(definition()))
    tags = [local(child) for child in root]
    assert tags == sorted(tags, key=SCHEMA_ORDER.index)
    assert tags == ["end", "end", "message", "message", "formMessage", "resultsFlush"]
    assert [local(c) for c in root.find(NS + "message")] == ["content", "answer", "answer",
                                                             "answer"]
    assert [local(c) for c in root.find(NS + "formMessage")] == ["content", "form"]


def test_required_attributes_and_values():
    root = parse(to_flow_xml(definition()))
    for element in root.iter():
        missing = REQUIRED.get(local(element), set()) - set(element.attrib)
        assert not missing, (local(element), missing)
    for element in root.iter():
        for name in ("allowDismiss", "autoLock", "vibrate"):
            assert element.get(name) in (None, "true", "false")


def test_ids_unique_and_every_reference_resolves():
    root = parse(to_flow_xml(definition()))
    ids = [e.get("id") for e in root.iter() if e.get("id") is not None]
    assert len(ids) == len(set(ids))
    assert all(i[0].isalpha() for i in ids)  # xs:ID values are NCNames
    refs = [(e, name, value) for e in root.iter() for name, value in e.attrib.items()
            if name in ID_REFS]
    assert len(refs) == 1 + 5 + 2 + 1  # start, answers, form references, flush
    element_ids = {e.get("id") for e in root if local(e) != "answer"}
    for element, name, value in refs:
        assert value in element_ids, (local(element), name, value)


def test_message_content_answers_and_settings():
    root = parse(to_flow_xml(definition()))
    ask = root.find(f"{NS}message[@id='message_ask']")
    assert ask.attrib == {"id": "message_ask", "allowDismiss": "false",
                          "brandingKey": "b4c0ffee", "autoLock": "false", "vibrate": "true",
                          "alertType": "RING_30", "alertIntervalType": "INTERVAL_900"}
    assert ask.find(NS + "content").text == 'Order <42> & "co" arrived?\nReply below'
    answers = [a.attrib for a in ask.findall(NS + "answer")]
    assert answers == [
        {"id": "button_ask_1", "caption": "Yes & thanks", "action": "",
         "reference": "flush_flush"},
        {"id": "button_ask_2", "caption": "No <not yet>", "action": "tel://+3212345678",
         "reference": "message_why"},
        {"id": "button_ask_3", "caption": "Track", "action": "https://example.com/t?a=1&b=2",
         "reference": "message_again"},
    ]
    again = root.find(f"{NS}message[@id='message_again']")
    assert (again.get("autoLock"), again.get("alertType"), again.get("brandingKey")) == (
        "true", "BEEP", None)


def test_question_is_a_text_line_form():
    root = parse(to_flow_xml(definition()))
    form_message = root.find(NS + "formMessage")
    assert form_message.get("id") == "message_why"
    assert form_message.get("positiveReference") == form_message.get("negativeReference") == (
        "flush_flush")
    widget = form_message.find(f"{NS}form/{NS}widget")
    assert widget.get(XSI_TYPE) == "TextLineWidget" and int(widget.get("maxChars")) > 0


def test_flush_and_end():
    root = parse(to_flow_xml(definition()))
    assert root.find(NS + "resultsFlush").attrib == {"id": "flush_flush",
                                                     "reference": "end_done"}
    assert [e.attrib for e in root.findall(NS + "end")] == [{"id": "end_done"},
                                                           {"id": "end_cancelled"}]


def test_escaping_survives_a_round_trip():
    nasty = 'a & b < c > d "e" \'f\' ]]> <!-- x --> \u00e9\u20ac\U0001f600\ttab\r\nline'
    flow = definition()
    flow.step("ask").text = nasty
    flow.step("again").buttons[0].caption = nasty
    xml = to_flow_xml(flow)
    assert "<!-- x -->" not in xml
    root = parse(xml)
    assert root.find(f"{NS}message[@id='message_ask']/{NS}content").text == nasty.replace(
        "\r\n", "\n")  # XML parsers normalise line ends in text
    assert root.find(f"{NS}message[@id='message_again']/{NS}answer").get("caption") == nasty


def test_characters_xml_cannot_carry_are_dropped():
    flow = definition()
    flow.step("ask").text = "bell\x07 null\x00 ok"
    root = parse(to_flow_xml(flow))
    assert root.find(f"{NS}message[@id='message_ask']/{NS}content").text == "bell null ok"


def test_start_defaults_to_first_step():
    steps = [s.model_dump(exclude_none=True) for s in definition().steps]
    flow = definition(start=None, steps=[steps[1], steps[0], *steps[2:]])
    assert flow.start is None
    assert parse(to_flow_xml(flow)).get("startReference") == "message_ask"


def test_timeouts_cannot_be_expressed():
    flow = FlowDefinition.model_validate({
        "name": "t", "steps": [
            {"id": "ask", "type": "message", "text": "?", "on_timeout": {"after": 5,
                                                                      "next": "end"},
             "buttons": [{"id": "ok", "caption": "OK", "next": "end"}]},
            {"id": "end", "type": "end"}]})
    with pytest.raises(ValueError, match="on_timeout"):
        to_flow_xml(flow)


@pytest.mark.parametrize(("alert", "expected"), [
    (None, ("true", "BEEP", "NONE")),
    (Alert(), ("true", "BEEP", "NONE")),
    (Alert(silent=True), ("false", "SILENT", "NONE")),
    (Alert(vibrate=False), ("false", "BEEP", "NONE")),
    (Alert(ring_seconds=5), ("true", "RING_5", "NONE")),
    (Alert(ring_seconds=60, vibrate=False), ("false", "RING_60", "NONE")),
    (Alert(repeat_seconds=5), ("true", "BEEP", "INTERVAL_5")),
    (Alert(ring_seconds=15, repeat_seconds=3600), ("true", "RING_15", "INTERVAL_3600")),
])
def test_alert_mapping(alert, expected):
    attrs = alert_attributes(alert)
    assert (attrs["vibrate"], attrs["alertType"], attrs["alertIntervalType"]) == expected


# --- messaging.flow_member_result -> results -------------------------------------------------------

def designer_id(inner: str) -> str:
    payload = json.dumps({"lang": "en", "mfd": "agxzfm1vYmljYWdl", "id": inner})
    return "base64:" + base64.b64encode(payload.encode()).decode()


def member_result(**overrides: Any) -> dict[str, Any]:
    params = {
        "message_flow_run_id": "6b8d3c1e-run", "member": "john@example.com",
        "steps": [
            {"step_type": "message_step", "step_id": "message_ask", "message_flow_id": None,
             "received_timestamp": 1700000000, "acknowledged_timestamp": 1700000060,
             "answer_id": "button_ask_3", "message": "Order arrived?", "button": "Track"},
            {"step_type": "message_step", "step_id": "message_again",
             "received_timestamp": 1700000100, "acknowledged_timestamp": 1700000200,
             "answer_id": "button_again_1", "message": "Once more?", "button": "Yes"},
            {"step_type": "message_step", "step_id": "message_ask",
             "received_timestamp": 1700000300, "acknowledged_timestamp": 1700000400,
             "answer_id": "button_ask_2", "message": "Order arrived?", "button": "No"},
            {"step_type": "form_step", "step_id": "message_why",
             "received_timestamp": 1700000500, "acknowledged_timestamp": 1700000600,
             "answer_id": "positive", "message": "What went wrong?", "button": "Submit",
             "form_result": {"type": "unicode_result", "result": {"value": "Box was wet"}},
             "display_value": "Box was wet"},
        ],
        "end_id": "end_done", "end_message_flow_id": None, "flush_id": None,
        "flush_message_flow_id": None, "parent_message_key": "pk", "tag": "t-1",
        "result_key": "rk", "service_identity": "+default+", "user_details": [],
    }
    params.update(overrides)
    return params


def test_results_conversion():
    results = results_from_member_result(definition(), member_result())
    assert results == {
        "provider_run_id": "6b8d3c1e-run", "member": "john@example.com",
        "end_id": "done", "flush_id": None,
        "steps": [
            {"step_id": "ask", "text": "Order arrived?",
             "answer": {"button_id": "web", "caption": "Track"},
             "answered_at": "2023-11-14T22:14:20Z", "sent_at": "2023-11-14T22:13:20Z"},
            {"step_id": "again", "text": "Once more?",
             "answer": {"button_id": "yes", "caption": "Yes"},
             "answered_at": "2023-11-14T22:16:40Z", "sent_at": "2023-11-14T22:15:00Z"},
            {"step_id": "ask", "text": "Order arrived?",
             "answer": {"button_id": "no", "caption": "No <not yet>"},
             "answered_at": "2023-11-14T22:20:00Z", "sent_at": "2023-11-14T22:18:20Z"},
            {"step_id": "why", "text": "What went wrong?", "answer": {"text": "Box was wet"},
             "answered_at": "2023-11-14T22:23:20Z", "sent_at": "2023-11-14T22:21:40Z"},
        ],
    }


def test_results_of_a_flush():
    results = results_from_member_result(definition(), member_result(
        end_id=None, flush_id="flush_flush", steps=member_result()["steps"][:1]))
    assert (results["end_id"], results["flush_id"]) == (None, "flush")
    assert len(results["steps"]) == 1


def test_designer_base64_ids_are_decoded():
    params = member_result(end_id=designer_id("end_cancelled"),
                           flush_id=designer_id("flush_flush"))
    params["steps"][0]["step_id"] = designer_id("message_ask")
    params["steps"][1]["step_id"] = designer_id("again")  # without the designer's prefix
    params["steps"][1]["answer_id"] = "button_stop"  # the designer's "button_<id>"
    results = results_from_member_result(definition(), params)
    assert (results["end_id"], results["flush_id"]) == ("cancelled", "flush")
    assert results["steps"][0]["step_id"] == "ask"
    assert results["steps"][1]["step_id"] == "again"
    assert results["steps"][1]["answer"] == {"button_id": "stop", "caption": "Stop"}


def test_decode_designer_id():
    assert decode_designer_id(designer_id("message_x")) == "message_x"
    assert decode_designer_id("message_x") == "message_x"
    assert decode_designer_id("base64:!!notbase64") == "base64:!!notbase64"
    not_json = "base64:" + base64.b64encode(b"[1, 2]").decode()
    assert decode_designer_id(not_json) == not_json


def test_dismissed_negative_and_unknown_answers():
    params = member_result()
    params["steps"][0]["answer_id"] = None  # dismissed
    params["steps"][1]["answer_id"] = "button_elsewhere_9"  # not in this definition
    params["steps"][3]["answer_id"] = "negative"
    results = results_from_member_result(definition(), params)
    answers = [s["answer"] for s in results["steps"]]
    assert answers[0] is None
    assert answers[1] == {"button_id": "button_elsewhere_9", "caption": "Yes"}
    assert answers[3] is None


def test_form_answer_falls_back_to_display_value():
    params = member_result()
    params["steps"][3]["form_result"] = None
    assert results_from_member_result(definition(), params)["steps"][3]["answer"] == {
        "text": "Box was wet"}
    params["steps"][3]["display_value"] = None
    assert results_from_member_result(definition(), params)["steps"][3]["answer"] is None


def test_unknown_ids_odd_timestamps_and_missing_fields():
    params = {"message_flow_run_id": "r", "end_id": "end_elsewhere", "steps": [
        {"step_type": "message_step", "step_id": "message_gone", "received_timestamp": 0,
         "acknowledged_timestamp": "soon", "answer_id": "x", "button": "X"},
        "not an object",
        {"step_type": "message_step", "acknowledged_timestamp": 10 ** 20},
    ]}
    results = results_from_member_result(definition(), params)
    assert results["member"] is None and results["end_id"] == "end_elsewhere"
    first, second = results["steps"]
    assert first == {"step_id": "message_gone", "text": None,
                     "answer": {"button_id": "x", "caption": "X"},
                     "answered_at": None, "sent_at": None}
    assert second["step_id"] is None and second["answered_at"] is None
    assert results_from_member_result(definition(), {})["steps"] == []
    with pytest.raises(TypeError):
        results_from_member_result(definition(), ["not", "a", "mapping"])  # type: ignore[arg-type]
