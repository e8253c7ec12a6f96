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
        return view(*args, **kwargs)

    return wrapper


def _unauthorized(message: str):  # type: ignore[no-untyped-def]
    response = jsonify(error="unauthorized", message=message)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="switchboard"'
    return response
