"""The console's cancel button: ``POST /console/messages/<id>/cancel`` (JSON, this origin).

The same rule as ``DELETE /v1/messages/<id>`` (``shared.cancellation``): a message not yet
sent on any hop is cancelled, one sent on a hop is refused naming it. Like every console
write it takes only ``application/json`` from this origin (``webhooks.designer``): a browser
would send its stored basic login with a cross-site form post too, and a form cannot send
JSON. An app's key cancels only its own messages; a bootstrap key, any.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify

from shared import cancellation
from shared.db import session_scope
from shared.lifecycle import MessageStatus
from shared.models import Message
from webhooks.console import require_operator
from webhooks.designer import _refused_write

console_cancel = Blueprint("console_cancel", __name__, url_prefix="/console")


@console_cancel.post("/messages/<message_id>/cancel")
@require_operator
def cancel(message_id: str) -> tuple[Response, int]:
    refused = _refused_write()
    if refused is not None:
        return refused
    with session_scope() as session:
        message = session.get(Message, message_id[:36])
        if message is None or g.console_scope not in (None, message.app_id):
            return jsonify(error="not_found", message=f"no message {message_id}"), 404
        try:
            cancellation.cancel_message(session, message)
        except cancellation.AlreadySent as exc:
            return jsonify(exc.body()), 409
        session.commit()
    return jsonify(id=message_id, status=MessageStatus.CANCELLED), 200
