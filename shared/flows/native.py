"""Native messenger flows: our definition as the messenger's flow XML, and its results back.

A native flow runs on the messenger itself (``messaging.start_local_flow``, providers.md
§1.7); the member walks it without a round trip to us, and the messenger reports the answers
with ``messaging.flow_member_result`` (§1.8) at each results flush and at the end.

The XML follows ``MessageFlow.1.xsd`` (§1.9). Its ids are ``xs:ID`` values, unique across the
document and starting with a letter, so ours are prefixed the way the messenger's own designer
does it: ``message_<step>`` (message and question steps), ``end_<step>``, ``flush_<step>``,
and each answer is ``button_<step>_<n>`` (n = 1, 2, ... in button order; button ids are free
text and repeat across steps). ``results_from_member_result`` maps all of them back.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from shared.flows.definition import (
    AnyStep,
    Button,
    EndStep,
    FlowDefinition,
    FlushStep,
    MessageStep,
    QuestionStep,
)
from shared.schemas import Alert

NAMESPACE = "https://rogerth.at/api/1/MessageFlow.xsd"
XSI_NAMESPACE = "http://www.w3.org/2001/XMLSchema-instance"
QUESTION_MAX_CHARS = 1000
QUESTION_SUBMIT, QUESTION_SKIP = "Submit", "Skip"
_PREFIXES = {"message": "message_", "question": "message_", "flush": "flush_", "end": "end_"}
# Characters XML 1.0 cannot carry at all, even escaped.
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def element_id(step: AnyStep) -> str:
    """The step's id in the flow XML (and in the messenger's results)."""
    return _PREFIXES[step.type] + step.id


def answer_id(step: MessageStep, index: int) -> str:
    """The XML id of the step's ``index``-th button (0-based)."""
    return f"button_{step.id}_{index + 1}"


# --- definition -> XML ---------------------------------------------------------------------------

def alert_attributes(alert: Alert | None) -> dict[str, str]:
    """``vibrate``/``alertType``/``alertIntervalType`` for a ``schemas.Alert``.

    The messenger turns these back into ``alert_flags`` (VIBRATE | type | interval), so:
    no alert -> vibrate, BEEP, NONE (alert_flags 2, the messaging.send default);
    ``silent`` -> no vibration, SILENT, NONE; ``vibrate`` None means "unless silent";
    ``ring_seconds`` n -> RING_n, else BEEP (no extra flag); ``repeat_seconds`` n ->
    INTERVAL_n, else NONE.
    """
    alert = alert or Alert()
    vibrate = not alert.silent if alert.vibrate is None else alert.vibrate
    if alert.silent:
        kind = "SILENT"
    elif alert.ring_seconds:
        kind = f"RING_{alert.ring_seconds}"
    else:
        kind = "BEEP"
    interval = f"INTERVAL_{alert.repeat_seconds}" if alert.repeat_seconds else "NONE"
    return {"vibrate": _bool(vibrate), "alertType": kind, "alertIntervalType": interval}


def to_flow_xml(definition: FlowDefinition, language: str = "en") -> str:
    """The definition as a ``messageFlowDefinition`` document (children in schema order:
    end, message, formMessage, resultsFlush). Raises ValueError for what the XML cannot say
    (``on_timeout``/``on_failed``, which native definitions refuse anyway)."""
    _check_expressible(definition)
    refs = {step.id: element_id(step) for step in definition.steps}
    root = ET.Element("messageFlowDefinition", {
        "xmlns": NAMESPACE, "xmlns:xsi": XSI_NAMESPACE, "name": _text(definition.name),
        "language": _text(language), "startReference": element_id(definition.start_step())})
    for kind in ("end", "message", "question", "flush"):
        for step in definition.steps:
            if step.type == kind:
                root.append(_BUILDERS[kind](step, refs))
    body = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="utf-8"?>\n{body}'


def _check_expressible(definition: FlowDefinition) -> None:
    for step in definition.steps:
        for name in ("on_timeout", "on_failed"):
            if getattr(step, name, None) is not None:
                raise ValueError(f"step {step.id}: the messenger's flow XML has no {name}")


def _end(step: EndStep, refs: Mapping[str, str]) -> ET.Element:
    return ET.Element("end", {"id": refs[step.id]})


def _message(step: MessageStep, refs: Mapping[str, str]) -> ET.Element:
    attrs = {"id": refs[step.id], "allowDismiss": "false"}
    if step.branding:
        attrs["brandingKey"] = _text(step.branding)
    attrs["autoLock"] = _bool(step.auto_lock)
    attrs.update(alert_attributes(step.alert))
    element = ET.Element("message", attrs)
    ET.SubElement(element, "content").text = _text(step.text)
    for index, button in enumerate(step.buttons):
        ET.SubElement(element, "answer", {
            "id": answer_id(step, index), "caption": _text(button.caption),
            "action": _action(button.action), "reference": refs[button.next]})
    return element


def _form_message(step: QuestionStep, refs: Mapping[str, str]) -> ET.Element:
    """A free-text question: a text-line form whose both buttons lead to ``next``."""
    attrs = {"id": refs[step.id], "autoLock": "true", **alert_attributes(None),
             "positiveReference": refs[step.next], "negativeReference": refs[step.next]}
    element = ET.Element("formMessage", attrs)
    ET.SubElement(element, "content").text = _text(step.text)
    form = ET.SubElement(element, "form", {"positiveButtonCaption": QUESTION_SUBMIT,
                                           "negativeButtonCaption": QUESTION_SKIP})
    ET.SubElement(form, "widget", {"xsi:type": "TextLineWidget",
                                   "maxChars": str(QUESTION_MAX_CHARS)})
    return element


def _results_flush(step: FlushStep, refs: Mapping[str, str]) -> ET.Element:
    return ET.Element("resultsFlush", {"id": refs[step.id], "reference": refs[step.next]})


_BUILDERS: dict[str, Callable[[Any, Mapping[str, str]], ET.Element]] = {
    "end": _end, "message": _message, "question": _form_message, "flush": _results_flush}


def _text(value: str) -> str:
    """Text the XML can carry: characters XML 1.0 forbids are dropped (ElementTree escapes
    the rest, but would write those as they are and break the document)."""
    return _XML_ILLEGAL.sub("", value)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _action(action: str | None) -> str:
    """The messenger's flow validator wants ``scheme://...`` (``tel://+32...``) while direct
    messages take ``tel:+32...``, so add the slashes. Empty means no action."""
    if not action:
        return ""
    scheme, _, rest = action.partition(":")
    return action if rest.startswith("//") else f"{scheme}://{rest}"


# --- messaging.flow_member_result -> results ---------------------------------------------------

def results_from_member_result(definition: FlowDefinition, params: Mapping[str, Any]) -> dict:
    """A ``messaging.flow_member_result`` params object (§1.8) as our run results, with our
    step and button ids. Ids the definition does not know are passed on as received."""
    if not isinstance(params, Mapping):
        raise TypeError("flow_member_result params must be an object")
    ids = _IdMap(definition)
    steps = params.get("steps")
    return {
        "provider_run_id": params.get("message_flow_run_id"),
        "member": params.get("member"),
        "end_id": ids.step_id(params.get("end_id")),
        "flush_id": ids.step_id(params.get("flush_id")),
        "steps": [ids.step_result(item) for item in (steps if isinstance(steps, list) else [])
                  if isinstance(item, Mapping)],
    }


class _IdMap:
    """XML ids (ours, or the designer's ``base64:`` ones) -> the definition's ids."""

    def __init__(self, definition: FlowDefinition) -> None:
        self.definition = definition
        self.steps = {element_id(s): s.id for s in definition.steps}
        self.buttons: dict[str, Button] = {}
        for step in definition.steps:
            if isinstance(step, MessageStep):
                self.buttons.update({answer_id(step, i): b for i, b in enumerate(step.buttons)})

    def step_id(self, raw: Any) -> str | None:
        """Our step id for an XML element id; unknown ids come back decoded but unchanged."""
        if not isinstance(raw, str) or not raw:
            return None
        value = decode_designer_id(raw)
        if value in self.steps:
            return self.steps[value]
        known = {s.id for s in self.definition.steps}
        for prefix in ("message_", "end_", "flush_", ""):
            if value.startswith(prefix) and value[len(prefix):] in known:
                return value[len(prefix):]
        return value

    def step_result(self, item: Mapping[str, Any]) -> dict[str, Any]:
        step_id = self.step_id(item.get("step_id"))
        return {"step_id": step_id, "text": item.get("message"),
                "answer": self._answer(step_id, item),
                "answered_at": _iso(item.get("acknowledged_timestamp")),
                "sent_at": _iso(item.get("received_timestamp"))}

    def _answer(self, step_id: str | None, item: Mapping[str, Any]) -> dict[str, str] | None:
        raw = item.get("answer_id")
        if item.get("step_type") == "form_step":
            return _form_answer(item) if raw == "positive" else None
        if not isinstance(raw, str) or not raw:
            return None  # dismissed
        button = self._button(step_id, decode_designer_id(raw))
        if button is None:
            return {"button_id": raw, "caption": item.get("button")}
        return {"button_id": button.id, "caption": button.caption}

    def _button(self, step_id: str | None, value: str) -> Button | None:
        if value in self.buttons:
            return self.buttons[value]
        try:
            step = self.definition.step(step_id or "")
        except KeyError:
            return None
        if not isinstance(step, MessageStep):
            return None
        plain = value.removeprefix("button_")  # the designer's answer ids
        return next((b for b in step.buttons if b.id in (value, plain)), None)


def _form_answer(item: Mapping[str, Any]) -> dict[str, str] | None:
    """The text of a submitted text-line form: ``form_result.result.value``, else the
    ``display_value`` the messenger showed."""
    result = item.get("form_result")
    inner = result.get("result") if isinstance(result, Mapping) else None
    value = inner.get("value") if isinstance(inner, Mapping) else None
    if not isinstance(value, str):
        value = item.get("display_value")
    return {"text": value} if isinstance(value, str) else None


def decode_designer_id(raw: str) -> str:
    """``base64:`` + base64(JSON {"lang", "mfd", "id"}) -> the ``id`` (§1.8); others as is."""
    if not raw.startswith("base64:"):
        return raw
    try:
        decoded = json.loads(base64.b64decode(raw[len("base64:"):], validate=True))
    except (binascii.Error, ValueError):
        return raw
    inner = decoded.get("id") if isinstance(decoded, dict) else None
    return inner if isinstance(inner, str) and inner else raw


def _iso(timestamp: Any) -> str | None:
    """Epoch seconds -> "2024-05-01T12:00:00Z" (naive UTC + Z, as the rest of our API);
    None for 0 or anything that is not a number."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) or timestamp <= 0:
        return None
    try:
        moment = datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.replace(tzinfo=None).isoformat() + "Z"
