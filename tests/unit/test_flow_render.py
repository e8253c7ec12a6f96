"""Steps as text for channels without buttons, and typed replies matched back to buttons."""

from __future__ import annotations

import pytest

from shared.flows.definition import MessageStep, QuestionStep
from shared.flows.render import (
    INSTRUCTION,
    match_answer_id,
    match_reply,
    render_reask,
    render_text,
)

STEP = MessageStep.model_validate({
    "type": "message", "id": "ask", "text": "Did your order arrive?",
    "buttons": [{"id": "yes", "caption": "Yes", "next": "end"},
                {"id": "no", "caption": "No, not yet", "next": "end"},
                {"id": "later", "caption": "Ask me tomorrow", "next": "end"}]})
QUESTION = QuestionStep.model_validate({"type": "question", "id": "why",
                                        "text": "What went wrong?", "next": "end"})


def test_render_plain_for_the_messenger():
    assert render_text(STEP, numbered=False) == "Did your order arrive?"
    assert render_text(QUESTION, numbered=False) == "What went wrong?"


def test_render_numbered_options():
    assert render_text(STEP, numbered=True) == (
        "Did your order arrive?\n\n"
        "1) Yes\n"
        "2) No, not yet\n"
        "3) Ask me tomorrow\n"
        "Reply with a number or the answer.")
    assert INSTRUCTION == "Reply with a number or the answer."


def test_question_has_no_options():
    assert render_text(QUESTION, numbered=True) == "What went wrong?"


def test_reask():
    assert render_reask(STEP) == ("Sorry, I did not understand. "
                                  + render_text(STEP, numbered=True))


@pytest.mark.parametrize(("reply", "button_id"), [
    ("1", "yes"), ("2", "no"), ("3", "later"),
    (" 2 ", "no"), ("2.", "no"), ("2)", "no"), ("#2", "no"), ("# 2", "no"), ("\t3\n", "later"),
    ("yes", "yes"), ("YES", "yes"), ("Yes!", "yes"), ("  yes.  ", "yes"), ("¡Yes!", "yes"),
    ("no, not yet", "no"), ("NO, NOT YET!", "no"), ("no,  not   yet", "no"),
    ("ask me tomorrow", "later"), ("Ask Me Tomorrow...", "later"),
    ("later", "later"), ("LATER", "later"), ("No", "no"),
])
def test_accepted_replies(reply, button_id):
    button = match_reply(STEP, reply)
    assert button is not None and button.id == button_id


@pytest.mark.parametrize("reply", [
    None, "", "   ", "0", "4", "12", "-1", "2 please", "yes please", "y", "n", "nope",
    "1 2", "1)2", "two", "#", "?!",
])
def test_unmatched_replies(reply):
    assert match_reply(STEP, reply) is None


def test_number_wins_over_a_numeric_caption_out_of_range_falls_back():
    step = MessageStep.model_validate({
        "type": "message", "id": "rate", "text": "Rate us",
        "buttons": [{"id": "low", "caption": "10", "next": "end"},
                    {"id": "high", "caption": "1", "next": "end"}]})
    assert match_reply(step, "1").id == "low"  # option 1, as the numbered list says
    assert match_reply(step, "10").id == "low"  # no option 10: the caption


def test_caption_wins_over_another_buttons_id():
    step = MessageStep.model_validate({
        "type": "message", "id": "s", "text": "?",
        "buttons": [{"id": "maybe", "caption": "Sure", "next": "end"},
                    {"id": "other", "caption": "Maybe", "next": "end"}]})
    assert match_reply(step, "maybe").id == "other"
    assert match_reply(step, "sure").id == "maybe"


def test_match_answer_id():
    assert match_answer_id(STEP, "no").id == "no"
    assert match_answer_id(STEP, "NO") is None
    assert match_answer_id(STEP, "unknown") is None
    assert match_answer_id(STEP, None) is None
    assert match_answer_id(STEP, "") is None
