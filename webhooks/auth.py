"""Bearer-key authentication for the producer API; keys are compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import jsonify, request

from shared.settings import get_settings


def key_is_valid(presented: str) -> bool:
    """Compare against every configured key without an early exit (no timing leak)."""
    matched = False
    for key in get_settings().api_key_list:
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    return matched


def require_api_key(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return _unauthorized("send 'Authorization: Bearer <key>'")
        if not key_is_valid(presented.strip()):
            return _unauthorized("unknown API key")
        return view(*args, **kwargs)

    return wrapper


def _unauthorized(message: str):  # type: ignore[no-untyped-def]
    response = jsonify(error="unauthorized", message=message)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="switchboard"'
    return response
