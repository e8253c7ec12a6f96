"""Callbacks from the messenger: ``POST /callbacks/rogerthat`` (JSON-RPC, providers.md §1.8).

Authenticated by the service key the messenger presents (``X-Nuntiuz-Service-Key``,
constant-time); answered in JSON-RPC form with the same id. The messenger retries with the
same id, so callbacks dedupe on it and a retry gets exactly the answer the first one got.
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
        return _rpc(envelope_id, error={"code": 1001 if outcome.error.field != "method"
                                        else 1006, "message": outcome.error.message,
                                        "name": outcome.error.field}, status=400)
    if outcome.kind == "unavailable":  # not JSON-RPC: the messenger keeps it and retries
        return jsonify(error="unavailable", message="try again later"), 503
    return _rpc(envelope_id, result=outcome.answer)
