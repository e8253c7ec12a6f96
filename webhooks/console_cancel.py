"""The console's cancel button: ``POST /console/messages/<id>/cancel`` (JSON, this origin).

The same rule as ``DELETE /v1/messages/<id>`` (``shared.cancellation``): a message not yet
sent on any hop is cancelled, one sent on a hop is refused naming it. Like every console
write it takes only ``application/json`` from this origin (``webhooks.designer``): a browser
would send its stored basic login with a cross-site form post too, and a form cannot send
JSON. An app's key cancels only its own messages; a bootstrap key, any.
"""

from __future__ import annotations

from flask import Blueprint, Response, g

from webhooks.api import cancel_answer
from webhooks.console import require_operator
from webhooks.designer import _refused_write

console_cancel = Blueprint("console_cancel", __name__, url_prefix="/console")


@console_cancel.post("/messages/<message_id>/cancel")
@require_operator
def cancel(message_id: str) -> tuple[Response, int]:
    refused = _refused_write()
    if refused is not None:
        return refused
    return cancel_answer(message_id, g.console_scope)  # type: ignore[no-any-return]
