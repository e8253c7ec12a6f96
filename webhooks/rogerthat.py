"""Callbacks from the messenger: ``POST /callbacks/rogerthat`` (JSON-RPC, providers.md §1.8).

Authenticated by the service key the messenger presents (``X-Nuntiuz-Service-Key``,
constant-time; a wrong or missing one is a 401, as the official receiver answers); answered in
JSON-RPC form with the same id. The messenger retries with the same id, so callbacks dedupe on
it and a retry gets exactly the answer the first one got.

The messenger retries any answer that is not an HTTP 200 (and after a few failures mails the
service's admins that it "will soon be disabled"), while a 200 carrying a JSON-RPC ``error``
ends the retries. So every authenticated callback that has a JSON-RPC id is answered 200: with
a ``result``, or with an ``error`` when we cannot use it (a method we do not handle, a field we
cannot read), stored once for the audit trail. Only a body with no id to answer (not JSON, not
an object) is a 400, and a database that cannot store it a 503: then a retry is what we want.

Two callbacks need an answer inline: ``test.test`` (echo the value) and ``friend.invited``
(accept or decline, from the configured policy); everything else is stored and answered null.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from shared import contacts
from shared.db import session_scope
from shared.providers import get_provider
from shared.providers.base import ProviderEvent
from shared.providers.rogerthat import callback_refusal
from webhooks.inbound import record_callback

rogerthat = Blueprint("rogerthat", __name__)


def _rpc(envelope_id: Any, result: Any = None, error: dict | None = None, status: int = 200):  # type: ignore[no-untyped-def]
    response = jsonify(id=envelope_id, result=result, error=error)
    response.status_code = status
    response.headers["Content-Type"] = "application/json-rpc; charset=utf-8"
    return response


def _decide(event: ProviderEvent) -> Any:
    if event.kind == "test":
        return event.data.get("value")
    if event.kind == "contact" and event.data.get("change") == "invited":
        invitation = {k: event.data.get(k) for k in ("email", "app_id", "name", "message",
                                                     "origin", "language")}
        with session_scope() as session:
            return contacts.decide_invitation(session, str(invitation["email"] or ""),
                                              str(invitation["app_id"] or ""), invitation)
    return None


@rogerthat.post("/callbacks/rogerthat")
def callback():  # type: ignore[no-untyped-def]
    """One callback: 401 unauthenticated, else a JSON-RPC answer (module docstring)."""
    provider = get_provider("rogerthat")
    if not provider.verify_service_key(request.headers.get("X-Nuntiuz-Service-Key")):  # type: ignore[attr-defined]
        return jsonify(error="unauthorized", message="missing or unknown service key"), 401
    try:
        envelope = request.get_json(silent=True, force=True)
    except RecursionError:  # nested too deep for the JSON decoder: unreadable like any other
        envelope = None
    if not isinstance(envelope, dict):
        envelope = {"_unparseable": request.get_data(as_text=True)[:1000]}
    is_test = envelope.get("method") == "test.test"
    outcome = record_callback("rogerthat", envelope, provider.parse_callback, _decide,
                              enqueue=not is_test)
    envelope_id = envelope.get("id")
    if outcome.kind == "invalid":
        assert outcome.error is not None
        refusal = callback_refusal(envelope, outcome.error)
        answerable = isinstance(envelope_id, str) and bool(envelope_id)
        return _rpc(envelope_id, error=refusal["error"], status=200 if answerable else 400)
    if outcome.kind == "unavailable":  # not stored: a non-200 makes the messenger retry it
        return jsonify(error="unavailable", message="try again later"), 503
    return _rpc(envelope_id, result=outcome.answer)
