"""A step as text, and a typed reply as one of its buttons.

Viber, SMS and the in-app channel have no answer buttons, so a message step's buttons are
shown as numbered options and the reply is matched back: by its number ("2", "2.", "#2"),
its caption or its button id, ignoring case and surrounding punctuation. The messenger
reports the pressed button's id instead (``match_answer_id``).
"""

from __future__ import annotations

import re

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
