"""A flow step naming a template (shared/flows/render.py templated_step, runtime): the step's
text and captions are rendered when it is sent, the message records the version, a typed
reply matches the rendered caption, and a step that cannot render fails the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared import templates
from shared.db import session_scope
from shared.flows import runtime
from shared.flows.definition import FlowDefinition
from shared.models import FlowRun, Message
from shared.uow import FollowUps

TEMPLATE = {"name": "ask", "default_locale": "en", "locales": {
    "en": {"text": "Hi {{ contact.to.phone }}, ok for {{ slot }}?",
           "buttons": {"y": "Yes please", "n": "No thanks"}},
    "nl": {"text": "Dag, past {{ slot }}?", "buttons": {"y": "Ja graag", "n": "Nee"}}}}
THANKS = {"name": "thanks", "locales": {"en": {"text": "You said {{ answers.q1 }}"}}}


def _flow(**template: Any) -> FlowDefinition:
    return FlowDefinition.model_validate({"name": "booking", "route": ["sms"], "steps": [
        {"id": "q1", "type": "message", "text": "label only",
         "template": {"name": "ask", **template},
         "buttons": [{"id": "y", "caption": "Yes", "next": "q2"},
                     {"id": "n", "caption": "No", "next": "done"}]},
        {"id": "q2", "type": "question", "text": "label", "template": {"name": "thanks"},
         "next": "done"},
        {"id": "done", "type": "end"}]})


def _start(definition: FlowDefinition) -> str:
    work = FollowUps()
    with session_scope() as session:
        flow = runtime.save_definition(session, "default", definition)
        run = runtime.create_run(session, flow, {"to": {"phone": "+32470123456"}},
                                 "default", "api")
        session.commit()
        runtime.begin(session, run.id, work)
        session.commit()
        return run.id


def _current(run_id: str) -> tuple[FlowRun, Message | None]:
    with session_scope() as session:
        run = session.get_one(FlowRun, run_id)
        message = (session.get(Message, run.current_message_id)
                   if run.current_message_id else None)
        session.expunge_all()
        return run, message


@pytest.fixture()
def saved(temp_db: Path) -> None:
    with session_scope() as session:
        templates.save_template(session, "default", templates.parse_document(TEMPLATE))
        templates.save_template(session, "default", templates.parse_document(THANKS))


def test_a_templated_step_sends_the_rendered_text_and_options(saved: None) -> None:
    run_id = _start(_flow(locale="nl-BE", data={"slot": "10:00"}))
    run, message = _current(run_id)
    assert message is not None
    assert message.request["text"].startswith("Dag, past 10:00?\n\n1) Ja graag\n2) Nee")
    assert (message.template_name, message.template_version,
            message.template_locale) == ("ask", 1, "nl")
    assert run.steps[0]["text"] == "Dag, past 10:00?"
    assert run.steps[0]["captions"] == {"y": "Ja graag", "n": "Nee"}


def test_a_typed_reply_matches_the_rendered_caption_and_answers_feed_the_next_step(
        saved: None) -> None:
    run_id = _start(_flow(locale="nl", data={"slot": "10:00"}))
    _, message = _current(run_id)
    assert message is not None
    with session_scope() as session:
        assert runtime.on_reply(session, message.id, FollowUps(), text="ja graag")
        session.commit()
    run, second = _current(run_id)
    assert run.steps[0]["answer"] == {"button_id": "y", "caption": "Ja graag"}
    assert second is not None and second.request["text"] == "You said Ja graag"


def test_a_step_whose_template_cannot_render_fails_the_run(saved: None) -> None:
    run_id = _start(_flow())  # no "slot" in data
    run, message = _current(run_id)
    assert run.status == "failed" and message is None
    assert run.steps[0]["outcome"] == "failed"
    assert run.steps[0]["error"][0]["field"] == "template.data.slot"


def test_a_native_flow_cannot_name_a_template() -> None:
    with pytest.raises(ValidationError, match="cannot have template"):
        FlowDefinition.model_validate({"name": "n", "native": True, "steps": [
            {"id": "q", "type": "question", "text": "t", "template": {"name": "x"},
             "next": "e"}, {"id": "e", "type": "end"}]})
