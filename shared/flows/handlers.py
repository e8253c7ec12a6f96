"""What message flows do with what the engine saw (``shared.handlers``): a reply answers a
step or carries a keyword that starts a flow; a poke's tag starts one; the messenger's native
run posts its result; an in-app text answers or triggers; a step's message that ended
undelivered follows ``on_failed``. The rules themselves live in ``shared.flows.runtime``.
"""

from __future__ import annotations

from typing import Any

from shared import handlers
from shared.flows import runtime
from shared.messages import add_app_event
from shared.models import DEFAULT_APP, Message

DEFAULT_MESSENGER_APP = "rogerthat"  # a poke without an app id came from the default app


@handlers.on("reply")
def on_reply(work: Any, occurrence: handlers.Occurrence) -> bool:
    """A reply to one of our messages: the answer to a run's step, or a keyword trigger."""
    event, session = occurrence.event, work.session
    assert event is not None and occurrence.message_id is not None
    button_id = event.data.get("button_id")
    text = None if button_id else event.text
    if runtime.on_reply(session, occurrence.message_id, work.followups, answer_id=button_id,
                        text=text):
        return True
    message = session.get(Message, occurrence.message_id)
    assert message is not None  # a keyword starts a flow of the app whose message this answers
    flow = runtime.triggered_flow(session, keyword=text, app_id=message.app_id) if text else None
    if flow is not None:
        runtime.start_triggered(session, flow, runtime.contact_of_message(message.request),
                                "keyword", work.followups)
    return True


@handlers.on("poke")
def on_poke(work: Any, occurrence: handlers.Occurrence) -> bool:
    """A poke whose tag a flow lists starts that flow for the person who poked. A poke names
    no producer app: it is the app whose flow owns the tag (a tag is one app's, see
    ``runtime.save_definition``), and that app alone hears of it; a tag no flow lists is not
    consumed, so the default app hears of it as before."""
    assert occurrence.event is not None
    data = occurrence.event.data
    flow = runtime.triggered_flow(work.session, poke_tag=data.get("tag"))
    if flow is None:
        return False
    if data.get("email"):
        contact = {"to": {"email": data["email"],
                          "app_id": data.get("app_id") or DEFAULT_MESSENGER_APP}}
        runtime.start_triggered(work.session, flow, contact, "poke", work.followups)
    add_app_event(work.session, "poke", {"channel": occurrence.provider, **data}, flow.app_id)
    return True


@handlers.on("flow_result")
def on_native_result(work: Any, occurrence: handlers.Occurrence) -> bool:
    """A native run's result: consumed when it belongs to one of our runs."""
    assert occurrence.event is not None
    return runtime.on_native_result(work.session, dict(occurrence.event.data), work.followups)


@handlers.on("conversation_text")
def on_conversation_text(work: Any, occurrence: handlers.Occurrence) -> bool:
    """An agent's new text in an in-app conversation."""
    assert occurrence.event is not None
    ref = dict(occurrence.data)
    app_id = ref.pop("app_id", None) or DEFAULT_APP  # the conversation's app: its runs only
    runtime.on_conversation_text(work.session, ref["consumer_id"], ref,
                                 occurrence.event.text, work.followups, app_id)
    return True


@handlers.on("message_final")
def on_message_final(work: Any, occurrence: handlers.Occurrence) -> bool:
    """A step's message ended undelivered on every channel: the run follows ``on_failed``."""
    assert occurrence.message_id is not None and occurrence.status is not None
    runtime.on_message_final(work.session, occurrence.message_id, occurrence.status,
                             work.followups)
    return True
