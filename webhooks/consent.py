"""The producer API for the consent registry (``shared.consent``).

``GET``/``PUT /v1/consent/<channel>/<address>`` read and change one address's record,
``GET /v1/consent?status=opted_out`` pages through the records the app may list, and
``POST /v1/consent/import`` takes a CSV suppression list. The registry is the provider
account's, shared by every app: any app reads an address's status (it decides whether that
app's messages go) and may opt it out, but sees only its own changes in the history, lists
only the records it changed, and cannot opt in an address another app's message or request
opted out (that is the person's, or the operator's, to undo).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request
from sqlalchemy import select

from shared import consent
from shared.db import session_scope
from shared.models import DEFAULT_APP, Consent
from shared.schemas import ConsentUpdate
from webhooks.api import BadArgument, BadRequest, _int_arg, _parse
from webhooks.auth import require_api_key

consent_api = Blueprint("consent", __name__, url_prefix="/v1")
MAX_PAGE = 1000


@consent_api.errorhandler(BadRequest)
def _bad_request(exc: BadRequest):  # type: ignore[no-untyped-def]
    return jsonify(exc.body), exc.status


def _refused(field: str, message: str, status: int = 422):  # type: ignore[no-untyped-def]
    error = "validation_error" if status == 422 else "conflict"
    return jsonify(error=error, message=f"{field}: {message}",
                   errors=[{"field": field, "message": message}]), status


def _where(channel: str, address: str) -> tuple[str, str, str]:
    """(channel, account, address) as the registry keys them; ``?account=`` picks the
    provider account (default: the channel's default one). Raises ``ConsentError``."""
    normalized = consent.address_for(channel, address)
    scope = request.args.get("account", consent.default_scope(channel))
    if len(scope) > 100:
        raise consent.ConsentError("account", "at most 100 characters")
    return channel, scope, normalized


@consent_api.get("/consent/<channel>/<address>")
@require_api_key
def show(channel: str, address: str):  # type: ignore[no-untyped-def]
    try:
        key = _where(channel, address)
    except consent.ConsentError as exc:
        return _refused(exc.field, exc.message)
    with session_scope() as session:
        record = consent.find(session, *key)
        body: dict[str, Any] = consent.view(record, *key)
        body["history"] = consent.history(session, record, g.app_id) if record else []
    return jsonify(body)


@consent_api.put("/consent/<channel>/<address>")
@require_api_key
def update(channel: str, address: str):  # type: ignore[no-untyped-def]
    try:
        key = _where(channel, address)
    except consent.ConsentError as exc:
        return _refused(exc.field, exc.message)
    asked = _parse(ConsentUpdate)
    with session_scope() as session:
        record = consent.find(session, *key)
        if _not_ours_to_opt_in(record, asked):
            return _refused("status", "opted out through another app: only the person (a "
                                      "keyword) or the operator can opt in again", 409)
        try:
            record, changed = consent.change(session, *key, consent.Change(
                asked.status, tuple(asked.categories), source=consent.API, app_id=g.app_id))
        except consent.ConsentError as exc:
            return _refused(exc.field, exc.message, 409)
        body = {**consent.view(record, *key), "changed": changed}
    return jsonify(body)


def _not_ours_to_opt_in(record: Consent | None, asked: ConsentUpdate) -> bool:
    return (asked.status == consent.OPTED_IN and record is not None
            and record.status == consent.OPTED_OUT and g.app_id != DEFAULT_APP
            and record.app_id not in (None, g.app_id))


@consent_api.get("/consent")
@require_api_key
def listing():  # type: ignore[no-untyped-def]
    """Records by id, ``?status=`` (opted_out, opted_in), after a cursor (``next``)."""
    status = request.args.get("status", consent.OPTED_OUT)
    if status not in consent.STATUSES:
        return _refused("status", "opted_out or opted_in")
    try:
        after = _int_arg("after", 0)
        limit = min(max(_int_arg("limit", 100), 1), MAX_PAGE)
    except BadArgument as exc:
        return _refused(exc.field, str(exc))
    with session_scope() as session:
        rows = session.scalars(select(Consent).where(
            Consent.status == status, Consent.id > after, consent.visible(g.app_id))
            .order_by(Consent.id).limit(limit)).all()
        items = [consent.view(r, r.channel, r.scope, r.address) for r in rows]
    return jsonify(consents=items, next=rows[-1].id if rows else None)


@consent_api.post("/consent/import")
@require_api_key
def import_list():  # type: ignore[no-untyped-def]
    """A CSV suppression list (``Content-Type: text/csv``), every row checked first."""
    if request.mimetype != "text/csv":
        return _refused("body", "send the list as text/csv", 400)
    try:
        rows = consent.parse_csv(request.get_data(as_text=True))
    except consent.ConsentError as exc:
        return _refused(exc.field, exc.message)
    with session_scope() as session:
        counts = consent.apply_import(session, rows, g.app_id)
    return jsonify(counts), 200
