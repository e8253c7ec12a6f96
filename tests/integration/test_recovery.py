"""Safety nets: work a lost broker message or a lost Redis index left behind still completes."""

from __future__ import annotations

import pytest
import redis

from shared.db import session_scope
from shared.messages import create_message, new_message_id
from shared.schemas import SendRequest
from tests.integration.conftest import Stack, wait_for
from worker import deadlines

pytestmark = pytest.mark.integration


def test_message_whose_dispatch_was_never_published_is_recovered(stack: Stack) -> None:
    """The row is committed but its task is lost (broker down at the time): recovery sends it."""
    request = SendRequest.model_validate(
        {"to": {"phone": "+32470120000"}, "route": ["viber"], "text": "recovered"})
    message_id = new_message_id(None)
    with session_scope() as session:
        create_message(session, message_id, request)  # no publish on purpose
    view = stack.wait_status(message_id, {"seen"}, timeout=40)
    assert len(stack.sim_messages(view["attempts"][0]["id"])) == 1


def test_deadline_fires_after_the_redis_index_is_lost(stack: Stack) -> None:
    """Flush the deadline index while a Viber message waits: the database still drives it."""
    response = stack.post_message(to={"phone": "+32470120002"}, route=["viber", "sms"],
                                  text="no report")
    message_id = response.json()["id"]
    wait_for(lambda: (v := stack.get_message(message_id)) and v["attempts"]
             and v["attempts"][0]["status"] == "submitted", 20, message="the Viber attempt")
    redis.Redis.from_url(stack.env["SWITCHBOARD_REDIS_URL"]).delete(deadlines.KEY)
    view = stack.wait_status(message_id, {"delivered"}, timeout=40)
    assert [(a["channel"], a["status"]) for a in view["attempts"]] == [
        ("viber", "expired"), ("sms", "delivered")]
    assert len(stack.sim_messages(view["attempts"][1]["id"])) == 1
