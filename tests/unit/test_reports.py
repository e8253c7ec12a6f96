"""Stored callbacks turned into follow-ups (worker/reports.py), without
Redis, a worker or HTTP: the publisher is a list."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from shared import tasknames
from shared.flows.definition import load_definition
from shared.flows.runtime import save_definition
from shared.models import Callback, FlowRun
from shared.uow import FollowUps, Task, unit_of_work
from worker import reports

POKE_FLOW = """
name: menu
triggers: {poke_tags: [menu]}
route: [rogerthat]
steps:
  - {id: hello, type: message, text: Hello, buttons: [{id: ok, caption: OK, next: done}]}
  - {id: done, type: end}
"""


def _store(provider: str, params: dict[str, Any]) -> int:
    with unit_of_work() as work:
        callback = Callback(provider=provider, method="POST", params=params)
        work.session.add(callback)
        work.session.flush()
        return callback.id


def _callback(callback_id: int) -> Callback:
    with unit_of_work() as work:
        callback = work.session.get(Callback, callback_id)
        assert callback is not None
        return callback


def test_a_poke_that_starts_a_flow_publishes_the_run(published: list[FollowUps]) -> None:
    """It used to return inside the transaction and skip the publish: the run sat in
    ``starting`` until the recovery sweep, two minutes later."""
    with unit_of_work() as work:
        save_definition(work.session, "default", load_definition(POKE_FLOW))
    callback_id = _store("rogerthat", {"id": "cb-1", "method": "messaging.poke", "params": {
        "email": "john@example.com", "tag": "menu", "context": "c", "result_key": "rk",
        "service_identity": "+default+", "timestamp": 1301396903}})
    reports.handle_callback(callback_id)
    with unit_of_work() as work:
        run_id = work.session.scalars(select(FlowRun.id)).one()
    assert [t for f in published for t in f.tasks] == [Task(tasknames.START_FLOW_RUN, (run_id,))]
    assert _callback(callback_id).status == "processed"


def test_an_unmatched_report_counts_its_tries_durably_and_ends_orphan(
        published: list[FollowUps]) -> None:
    """The increment used to roll back with the retry it raised: retried every 2 s forever."""
    callback_id = _store("messaggio", {"msg_id": "unknown-1", "status": "2"})
    for tries in range(1, reports.UNMATCHED_TRIES):
        with pytest.raises(reports.RetryLater):
            reports.handle_callback(callback_id)
        assert _callback(callback_id).tries == tries
    reports.handle_callback(callback_id)  # the last try: no retry asked for
    callback = _callback(callback_id)
    assert (callback.status, callback.tries) == ("orphan", reports.UNMATCHED_TRIES)
    reports.handle_callback(callback_id)  # a re-published orphan costs nothing more
    assert _callback(callback_id).tries == reports.UNMATCHED_TRIES


def test_a_reply_in_the_gateways_viber_shape_stays_with_an_sms_only_message(
        published: list[FollowUps]) -> None:
    """The gateway's typed reports name Viber; on a message whose route has no Viber hop the
    report is about the SMS it matched (a reply to a flow step over SMS), not another hop."""
    from shared.models import Attempt, Event
    from tests.unit.conftest import queued_message

    message_id, attempt_id = queued_message(to={"phone": "+32470123456"}, route=["sms"],
                                            text="Pick 1 or 2")
    with unit_of_work() as work:
        attempt = work.session.get(Attempt, attempt_id)
        attempt.status, attempt.provider_message_id = "submitted", "m-sms-1"
    callback_id = _store("messaggio", {"msg_id": "m-sms-1", "type": "reply", "text": "2"})
    reports.handle_callback(callback_id)
    assert _callback(callback_id).status == "processed"
    with unit_of_work() as work:
        replied = work.session.scalars(select(Event.payload).where(
            Event.message_id == message_id, Event.type == "replied")).all()
        assert work.session.get(Attempt, attempt_id).status == "seen"
    assert [r["text"] for r in replied] == ["2"]
