"""What every provider callback route does: store the raw callback, dedupe, enqueue, answer.

Storing comes first and is the only work done inline, so the route answers fast and a crash
after the answer loses nothing (the recovery sweep re-publishes stored, unprocessed rows).
The handling task is registered on the unit of work that stores the row, so it leaves only
once the row is committed.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError

from shared import metrics, tasknames
from shared.db import session_scope
from shared.lifecycle import CallbackStatus
from shared.models import Callback
from shared.providers.base import CallbackError, ProviderEvent
from webhooks.publishing import recoverable_unit_of_work

log = logging.getLogger(__name__)
DEDUPE_KEY_LENGTH = Callback.dedupe_key.type.length  # type: ignore[attr-defined]


def request_params() -> dict[str, str]:
    """Query and form fields together (the gateway may use GET or POST); first value wins.

    The raw body is read (and cached) first: once Werkzeug parses a form it drops the bytes,
    and the audit copy of the callback must keep them.
    """
    request.get_data(cache=True)
    params = {k: v for k, v in request.args.items()}
    params.update({k: v for k, v in request.form.items()})
    return params


@dataclass(frozen=True)
class Outcome:
    """What happened to one callback: ``accepted``, ``duplicate``, ``invalid`` or
    ``unavailable``; with the stored row id, the error, and the inline answer (replayed to a
    duplicate exactly as first given)."""

    kind: str
    callback_id: int | None = None
    error: CallbackError | None = None
    answer: Any = None
    event: ProviderEvent | None = None


@metrics.counts_callbacks  # switchboard_callbacks_received_total{provider, result=kind}
def record_callback(provider: str, params: Mapping[str, Any],
                    parse: Callable[[Mapping[str, Any]], ProviderEvent],
                    decide: Callable[[ProviderEvent], Any] | None = None,
                    enqueue: bool = True, keep_invalid: bool = True) -> Outcome:
    """Validate, persist (deduplicated) and enqueue one callback. ``decide`` computes the
    answer a provider needs inline (e.g. accepting a friendship) before the row is stored.
    ``keep_invalid`` stores refused callbacks too (status ``invalid``) for the audit trail."""
    unstorable = _unstorable(params)  # refused, and stored without params (body is kept)
    common = _as_received(provider, {} if unstorable else dict(params))
    try:
        if unstorable is not None:
            raise unstorable
        event = parse(params)
    except CallbackError as exc:
        if keep_invalid:
            _store_invalid(exc, common)
        return Outcome("invalid", error=exc)
    return _store_once(provider, event, common, decide, enqueue)


def _store_invalid(exc: CallbackError, common: dict[str, Any]) -> None:
    """Keep a refused callback for the audit trail: once per dedupe key when the error
    carries one (a provider retrying the same callback id is not stored again)."""
    dedupe_key = _fitting(exc.dedupe_key) if exc.dedupe_key else None
    try:
        _store(Callback(status=CallbackStatus.INVALID, error=str(exc), dedupe_key=dedupe_key,
                        **common))
    except IntegrityError:
        if dedupe_key is None:
            raise


def _as_received(provider: str, params: dict[str, Any]) -> dict[str, Any]:
    """The row fields every outcome shares: the request as it came, for the audit trail
    (the body cut to 100 kB, its NULs replaced: PostgreSQL text cannot hold them)."""
    body = request.get_data(as_text=True)[:100_000].replace("\x00", "\ufffd")
    return {"provider": provider, "method": request.method,
            "remote_addr": request.remote_addr, "params": params, "body": body}


def _store_once(provider: str, event: ProviderEvent, common: dict[str, Any],
                decide: Callable[[ProviderEvent], Any] | None, enqueue: bool) -> Outcome:
    """Store a parsed callback unless its dedupe key is taken (then it is a ``duplicate``,
    answered as it was the first time), and register its handling when ``enqueue``; a
    database that cannot take the row makes it ``unavailable`` (the provider retries)."""
    try:
        dedupe_key = _fitting(event.dedupe_key)
        # Only a callback answered inline looks first (its answer must not be decided twice);
        # the rest insert at once and learn they are a duplicate from the unique key: one
        # transaction, not two, on the hot path of delivery reports.
        stored = _stored_answer(dedupe_key) if decide else None
        if stored is not None:
            return Outcome("duplicate", answer=stored[0], event=event)
        answer = decide(event) if decide else None
        status = CallbackStatus.RECEIVED if enqueue else CallbackStatus.PROCESSED
        callback_id = _store(Callback(status=status, dedupe_key=dedupe_key, answer=answer,
                                      **common), enqueue=enqueue)
    except IntegrityError:
        stored = _stored_answer(dedupe_key)
        return Outcome("duplicate", answer=stored[0] if stored else None, event=event)
    except OperationalError:
        log.exception("could not store a %s callback", provider)
        return Outcome("unavailable", event=event)
    return Outcome("accepted", callback_id=callback_id, answer=answer, event=event)


def _unstorable(params: Mapping[str, Any]) -> CallbackError | None:
    """The error naming the first key or value the database cannot hold: text with a NUL
    (PostgreSQL refuses it) or an unpaired surrogate (not UTF-8), or a non-finite number (no
    JSON column takes one). Only JSON bodies carry these; iterative, as they may nest deep."""
    stack: list[tuple[Any, str]] = [(params, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str) and not _storable(item):
            return CallbackError(_printable(path) or "body", "contains a NUL or an unpaired "
                                 "surrogate character")
        if isinstance(item, float) and not math.isfinite(item):  # NaN, Infinity, 1e400
            return CallbackError(_printable(path) or "body", "not a finite number")
        pairs = (item.items() if isinstance(item, Mapping)
                 else enumerate(item) if isinstance(item, list) else ())
        for key, child in pairs:
            stack.append((key, path))
            stack.append((child, f"{path}.{key}" if path else str(key)))
    return None


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _printable(name: str) -> str:
    return name.encode("utf-8", "replace").decode("utf-8").replace("\x00", "?")


def _fitting(dedupe_key: str) -> str:
    """The key as stored: one longer than its column (an absurdly long provider id) is
    hashed, still unique, instead of failing the insert on PostgreSQL."""
    if len(dedupe_key) <= DEDUPE_KEY_LENGTH:
        return dedupe_key
    return "sha256:" + hashlib.sha256(dedupe_key.encode("utf-8")).hexdigest()


def _stored_answer(dedupe_key: str) -> tuple[Any] | None:
    with session_scope() as session:
        row = session.execute(select(Callback.answer).where(
            Callback.dedupe_key == dedupe_key)).first()
        return (row.answer,) if row is not None else None


def store_and_enqueue(provider: str, params: Mapping[str, str],
                      parse: Callable[[Mapping[str, Any]], ProviderEvent]):  # type: ignore[no-untyped-def]
    """The plain-HTTP answer style (the Viber+SMS gateway): JSON status, 400 on bad input."""
    outcome = record_callback(provider, params, parse)
    if outcome.kind == "invalid":
        assert outcome.error is not None
        return jsonify(error="invalid_callback", field=outcome.error.field,
                       message=outcome.error.message), 400
    if outcome.kind == "unavailable":
        return jsonify(error="unavailable", message="try again later"), 503
    return jsonify(status=outcome.kind), 200


def _store(callback: Callback, enqueue: bool = False) -> int:
    """Insert the callback; with ``enqueue`` its handling task is registered on the same unit
    of work, so it leaves only once the row is committed (if the broker fails then, the
    recovery sweep re-publishes the received row)."""
    with recoverable_unit_of_work() as work:
        work.session.add(callback)
        work.session.flush()
        if enqueue:
            work.task(tasknames.HANDLE_CALLBACK, callback.id)
        return callback.id
