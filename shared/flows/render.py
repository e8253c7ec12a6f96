"""A step as text, and a typed reply as one of its buttons.

Viber, SMS and the in-app channel have no answer buttons, so a message step's buttons are
shown as numbered options and the reply is matched back: by its number ("2", "2.", "#2"),
its caption or its button id, ignoring case and surrounding punctuation. The messenger
reports the pressed button's id instead (``match_answer_id``).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.orm import Session

from shared.flows.definition import Button, MessageStep, QuestionStep, normalize_answer

INSTRUCTION = "Reply with a number or the answer."
REASK_PREFIX = "Sorry, I did not understand. "
_NUMBER = re.compile(r"#?\s*(\d{1,3})\s*[.)]?")


def render_text(step: MessageStep | QuestionStep, numbered: bool) -> str:
    """The text as sent. ``numbered`` (channels without buttons) appends a message step's
    buttons as "1) Caption" lines and a one-line instruction; questions stay as written."""
    if not numbered or not isinstance(step, MessageStep):
        return step.text
    options = "\n".join(f"{n}) {b.caption}" for n, b in enumerate(step.buttons, start=1))
    return f"{step.text}\n\n{options}\n{INSTRUCTION}"


def render_reask(step: MessageStep) -> str:
    """Sent once after a reply that matched no option: the apology and the numbered text."""
    return REASK_PREFIX + render_text(step, numbered=True)


def match_reply(step: MessageStep, text: str | None) -> Button | None:
    """The button a typed reply means: its option number, else its caption, else its id
    (all case-insensitive, surrounding spaces and punctuation ignored); None if none."""
    if text is None or not text.strip():
        return None
    number = _NUMBER.fullmatch(text.strip())
    if number is not None and 1 <= int(number.group(1)) <= len(step.buttons):
        return step.buttons[int(number.group(1)) - 1]
    wanted = normalize_answer(text)
    if not wanted:
        return None
    for button in step.buttons:
        if normalize_answer(button.caption) == wanted:
            return button
    for button in step.buttons:
        if normalize_answer(button.id) == wanted:
            return button
    return None


def match_answer_id(step: MessageStep, answer_id: str | None) -> Button | None:
    """The button the messenger says was pressed (its exact id); None for a dismissal or an
    id this step does not have."""
    if not answer_id:
        return None
    return next((b for b in step.buttons if b.id == answer_id), None)


def templated_step(session: Session, app_id: str, step: MessageStep | QuestionStep,
                   data: dict[str, Any]) -> tuple[MessageStep | QuestionStep, Any]:
    """The step as it is sent when it names a template: its text and button captions
    rendered (``shared.templates``) with the step template's data over ``data`` (the run's
    contact and answers); (step, None) when it names none. Raises ``TemplateError``."""
    if step.template is None:
        return step, None
    from shared import templates

    ref = step.template
    row = templates.require_template(session, app_id, ref.name, ref.version)
    rendered = templates.render(templates.document_of(row), ref.locale,
                                {**data, **ref.data})
    update: dict[str, Any] = {"text": rendered.get("text") or step.text}
    if isinstance(step, MessageStep):
        update["buttons"] = with_captions(step, rendered.buttons).buttons
    use = templates.TemplateUse(row.name, row.version, rendered.locale)
    return step.model_copy(update=update), use


def with_captions(step: MessageStep, captions: dict[str, str]) -> MessageStep:
    """The step with these captions on its buttons (by id), e.g. the ones a template gave
    when the step was sent, so a typed reply is matched against what the contact saw."""
    if not captions:
        return step
    return step.model_copy(update={"buttons": [
        b.model_copy(update={"caption": captions.get(b.id, b.caption)}) for b in step.buttons]})
