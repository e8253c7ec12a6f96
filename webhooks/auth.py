"""API-key authentication for the producer API: the key names the producer app.

Bootstrap keys (``SWITCHBOARD_API_KEYS``) are compared in constant time and act as the
``default`` app; app keys are looked up by their SHA-256 hash.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import g, jsonify, request

from shared.apps import app_for_key
from shared.db import session_scope


def require_api_key(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return _unauthorized("send 'Authorization: Bearer <key>'")
        with session_scope() as session:
            app_id = app_for_key(session, presented.strip())
        if app_id is None:
            return _unauthorized("unknown API key")
        g.app_id = app_id
        return _refuse_nul(kwargs) or view(*args, **kwargs)

    return wrapper


def _refuse_nul(path_args: dict[str, Any]):  # type: ignore[no-untyped-def]
    """Every API view is wrapped here, so this is where a NUL character in a path id (404: it
    names nothing) or a query parameter (422 naming it) is refused for all of them at once:
    PostgreSQL cannot compare text with a NUL, and the lookup would be a 500."""
    if any("\x00" in str(value) for value in path_args.values()):
        return jsonify(error="not_found", message="no such resource"), 404
    for name, value in request.args.items(multi=True):
        if "\x00" in name or "\x00" in value:
            field, problem = name.replace("\x00", "?"), "must not contain NUL characters"
            return jsonify(error="validation_error", message=f"{field}: {problem}",
                           errors=[{"field": field, "message": problem}]), 422
    return None


def _unauthorized(message: str):  # type: ignore[no-untyped-def]
    response = jsonify(error="unauthorized", message=message)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="switchboard"'
    return response
