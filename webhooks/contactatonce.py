"""Callbacks from the in-app provider: ``POST /callbacks/contactatonce/messages`` (an agent's
ReceiveMessage) and ``POST /callbacks/contactatonce/status`` (MessageStatus receipts).

The provider presents ``Authorization: Basic <key>``: its documented samples carry our API key,
so the key is ``SWITCHBOARD_CONTACTATONCE_INBOUND_KEY`` when set, else
``SWITCHBOARD_CONTACTATONCE_API_KEY``; it is checked in constant time before anything is read
(raw, or base64 of ``key:``, ``:key`` or ``user:key``; see ``verify_basic_key``). Answers
use the provider's own shape, ``{"Status": 0, "FailureDescription": null}``; a refusal is
``Status: 1`` with a 4xx and the field named. Refused calls store nothing; accepted ones are
stored, deduped by the provider's MessageId (a retry is answered like the first), and handled
by a worker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint, jsonify, request

from shared.providers import get_provider
from shared.providers.base import ProviderEvent
from webhooks.inbound import record_callback

contactatonce = Blueprint("contactatonce", __name__, url_prefix="/callbacks/contactatonce")


def _answer(status: int, failure: str | None = None, http: int = 200, **extra: Any):  # type: ignore[no-untyped-def]
    response = jsonify(Status=status, FailureDescription=failure, **extra)
    response.status_code = http
    return response


def _receive(parse: Callable[[Mapping[str, Any]], ProviderEvent]):  # type: ignore[no-untyped-def]
    provider = get_provider("contactatonce")
    if not provider.verify_inbound_key(request.headers.get("Authorization")):  # type: ignore[attr-defined]
        response = _answer(1, "missing or wrong Basic credentials", 401)
        response.headers["WWW-Authenticate"] = 'Basic realm="switchboard"'
        return response
    try:
        body = request.get_json(silent=True, force=True)
    except RecursionError:  # nested too deep for the JSON decoder: not a readable object
        body = None
    if not isinstance(body, dict):
        return _answer(1, "body: expected a JSON object", 400, field="body")
    outcome = record_callback("contactatonce", body, parse, keep_invalid=False)
    if outcome.kind == "invalid":
        assert outcome.error is not None
        return _answer(1, f"{outcome.error.field}: {outcome.error.message}", 400,
                       field=outcome.error.field)
    if outcome.kind == "unavailable":
        return _answer(1, "temporarily unavailable, try again later", 503)
    return _answer(0)


@contactatonce.post("/messages")
def messages():  # type: ignore[no-untyped-def]
    return _receive(get_provider("contactatonce").parse_message)  # type: ignore[attr-defined]


@contactatonce.post("/status")
def status():  # type: ignore[no-untyped-def]
    return _receive(get_provider("contactatonce").parse_status)  # type: ignore[attr-defined]
