"""What every provider callback route does: store the raw callback, dedupe, enqueue, answer.

Storing comes first and is the only work done inline, so the route answers fast and a crash
after the answer loses nothing (the recovery sweep re-publishes stored, unprocessed rows).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from flask import jsonify, request
from sqlalchemy.exc import IntegrityError, OperationalError

from shared import tasknames
from shared.client import send_task
from shared.db import session_scope
from shared.models import Callback
from shared.providers.base import CallbackError, ProviderEvent

log = logging.getLogger(__name__)


def request_params() -> dict[str, str]:
    """Query and form fields together (the gateway may use GET or POST); first value wins.

    The raw body is read (and cached) first: once Werkzeug parses a form it drops the bytes,
    and the audit copy of the callback must keep them.
    """
    request.get_data(cache=True)
    params = {k: v for k, v in request.args.items()}
    params.update({k: v for k, v in request.form.items()})
    return params


def store_and_enqueue(provider: str, params: Mapping[str, str],
                      parse: Callable[[Mapping[str, str]], ProviderEvent]):  # type: ignore[no-untyped-def]
    """Validate, persist and enqueue one callback; returns the Flask response."""
    body = request.get_data(as_text=True)[:100_000]
    common = {"provider": provider, "method": request.method,
              "remote_addr": request.remote_addr, "params": dict(params), "body": body}
    try:
        event = parse(params)
    except CallbackError as exc:
        _store(Callback(status="invalid", error=str(exc), **common))
        return jsonify(error="invalid_callback", field=exc.field, message=exc.message), 400
    try:
        callback_id = _store(Callback(status="received", dedupe_key=event.dedupe_key, **common))
    except IntegrityError:
        return jsonify(status="duplicate"), 200
    except OperationalError:
        log.exception("could not store a %s callback", provider)
        return jsonify(error="unavailable", message="try again later"), 503
    try:
        send_task(tasknames.HANDLE_CALLBACK, callback_id)
    except Exception:
        log.exception("could not publish callback %s", callback_id)
    return jsonify(status="accepted"), 200


def _store(callback: Callback) -> int:
    with session_scope() as session:
        session.add(callback)
        session.flush()
        return callback.id
