"""``GET /v1/stats/overview``: the dashboard's numbers, for the console and for producers.

Producers call it with their API key (``Authorization: Bearer``) and see their own app; the
console's dashboard fetches the same URL with the browser's login (basic auth whose password
is an API key), so the pictures and the API can never disagree. A bootstrap key (the
``default`` app) sees every app, as it does in the console.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, g, jsonify, request

from shared import stats
from shared.apps import app_for_key
from shared.db import session_scope
from shared.models import DEFAULT_APP
from webhooks.auth import require_api_key

stats_api = Blueprint("stats", __name__)


def require_key_or_login(view: Callable[..., Any]) -> Callable[..., Any]:
    """Bearer keys go through the API's own check; a basic login (the console's) is an API
    key as its password. Either way ``g.app_id`` is the key's app."""
    checked = require_api_key(view)

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        auth = request.authorization
        if auth is None or auth.type != "basic":
            return checked(*args, **kwargs)
        with session_scope() as session:
            app_id = app_for_key(session, auth.password or "") if auth.password else None
        if app_id is None:
            response = jsonify(error="unauthorized", message="unknown API key")
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Bearer realm="switchboard"'
            return response
        g.app_id = app_id
        return view(*args, **kwargs)

    return wrapper


@stats_api.get("/v1/stats/overview")
@require_key_or_login
def overview():  # type: ignore[no-untyped-def]
    """Messages by status and channel, fallback rate by route, delivery-report latency per
    provider and failing webhook deliveries, over the last ``hours`` (default 24)."""
    try:
        hours = stats.parse_hours(request.args.get("hours"))
    except stats.HoursError as exc:
        return jsonify(error="validation_error", message=f"hours: {exc}",
                       errors=[{"field": "hours", "message": str(exc)}]), 422
    scope = None if g.app_id == DEFAULT_APP else g.app_id
    with session_scope() as session:
        body = stats.overview(session, scope, hours)
    return jsonify(body)
