"""The console's consent page: one address's record and its whole history of changes.

``/console/consent/<channel>/<address>`` (``?account=`` for another provider account) shows
the record the engine asks before each send and every change of it (when, status,
categories, source, app, carrying message). The registry is the provider account's, so any
logged-in app sees the status; who made another app's changes is shown only to the
operator's bootstrap keys, as in ``GET /v1/consent`` (``shared.consent.change_view``).
"""

from __future__ import annotations

from flask import Blueprint, g, render_template, request

from shared import consent
from shared.db import session_scope
from webhooks.console import _harden, require_operator

console_consent = Blueprint("console_consent", __name__, url_prefix="/console",
                            template_folder="templates")
console_consent.after_request(_harden)


@console_consent.get("/consent/<channel>/<address>")
@require_operator
def history(channel: str, address: str) -> tuple[str, int] | str:
    try:
        normalized = consent.address_for(channel, address)
    except consent.ConsentError as exc:
        return render_template("console/error.html", title="Not an address",
                               message=str(exc)), 400
    scope = request.args.get("account", consent.default_scope(channel))[:100]
    with session_scope() as session:
        record = consent.find(session, channel, scope, normalized)
        changes = consent.history(session, record, g.app_id) if record is not None else []
        view = consent.view(record, channel, scope, normalized)
    return render_template("console/consent.html", record=view, changes=changes)
