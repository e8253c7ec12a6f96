"""The producer HTTP API: messages, the event feed and event replay, scoped to the caller's app."""

from __future__ import annotations

import math
import uuid
from typing import TypeVar

from flask import Blueprint, g, jsonify, request
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import apps, cancellation, contacts, feed, tasknames, uow
from shared.db import session_scope
from shared.lifecycle import MessageStatus
from shared.messages import (
    IdempotencyConflict,
    check_replay,
    event_body,
    insert_message,
    message_view,
    new_message_id,
    redeliver,
    request_hash,
)
from shared.models import Contact, Message
from shared.schemas import (
    EGRESS_CHECK,
    AppSettingsUpdate,
    FriendRequest,
    ReplayRequest,
    SendRequest,
    error_list,
)
from shared.templates import TemplateError
from webhooks.auth import require_api_key
from webhooks.publishing import recoverable_unit_of_work

M = TypeVar("M", bound=BaseModel)
api = Blueprint("api", __name__, url_prefix="/v1")


class BadRequest(Exception):
    """A request body we refuse; carries the JSON answer naming the fields."""

    def __init__(self, body: dict, status: int) -> None:
        super().__init__(body)
        self.body, self.status = body, status


class BadArgument(ValueError):
    """A query parameter or body value we refuse, naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


MAX_JSON_DEPTH = 32  # deeper bodies are refused before they reach parsers and serializers


def _parse(model: type[M]) -> M:
    """The JSON body validated as ``model``; raises ``BadRequest`` (400 or 422) otherwise."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested too deep for the JSON decoder itself
        body = None
    if not isinstance(body, dict):
        raise BadRequest({"error": "invalid_json", "message": "body: expected a JSON object",
                          "errors": [{"field": "body", "message": "expected a JSON object"}]},
                         400)
    try:
        _check_values(body)
        return model.model_validate(body, context=EGRESS_CHECK)
    except BadArgument as exc:
        errors = [{"field": exc.field, "message": str(exc)}]
    except ValidationError as exc:
        errors = error_list(exc)
    raise BadRequest({"error": "validation_error", "message": _summary(errors),
                      "errors": errors}, 422)


def _check_values(body: dict) -> None:
    """Refuse what no field may hold but the model would not catch: nesting deeper than
    MAX_JSON_DEPTH (serializers recurse), NUL characters and non-finite numbers (PostgreSQL
    text and JSON cannot store them). Iterative, as the input may be deep."""
    stack: list[tuple[object, str, int]] = [(body, "", 1)]
    while stack:
        item, path, level = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            raise BadArgument(path or "body", "must not contain NUL characters")
        if isinstance(item, float) and not math.isfinite(item):  # NaN, Infinity, 1e400
            raise BadArgument(path or "body", "must be a finite number")
        if not isinstance(item, dict | list):
            continue
        if level > MAX_JSON_DEPTH:
            raise BadArgument(path, f"nested more than {MAX_JSON_DEPTH} levels deep")
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in pairs:
            if "\x00" in str(key):
                raise BadArgument(path or "body", "keys must not contain NUL characters")
            stack.append((child, f"{path}.{key}" if path else str(key), level + 1))


def _summary(errors: list[dict[str, str]]) -> str:
    """One line naming the bad fields, for clients that only show ``message``."""
    return "invalid field(s): " + ", ".join(dict.fromkeys(e["field"] for e in errors))


@api.errorhandler(BadRequest)
def _bad_request(exc: BadRequest):  # type: ignore[no-untyped-def]
    return jsonify(exc.body), exc.status


@api.errorhandler(TemplateError)
def _template_error(exc: TemplateError):  # type: ignore[no-untyped-def]
    """A template that is missing or cannot be rendered for this request: nothing stored."""
    return jsonify(exc.body()), 422


@api.errorhandler(IdempotencyConflict)
def _idempotency_conflict(exc: IdempotencyConflict):  # type: ignore[no-untyped-def]
    return jsonify(exc.body()), 409


@api.post("/messages")
@require_api_key
def create():  # type: ignore[no-untyped-def]
    send_request = _parse(SendRequest)
    message_id = new_message_id(send_request.idempotency_key, g.app_id)
    status, created = _queue_message(message_id, send_request)
    if not created:
        return jsonify(id=message_id, status=status, idempotent_replay=True), 200
    return jsonify(id=message_id, status=status), 202


def _queue_message(message_id: str, send_request: SendRequest) -> tuple[str, bool]:
    """Insert the message and register its dispatch in one unit of work, so the task leaves
    only once the row is durable (if the broker is down then, the recovery sweep re-publishes
    it); returns (status, created). An id that exists already (a retried idempotency key, or
    a concurrent insert that won the race) creates and publishes nothing, as in
    ``shared.messages.create_message``; one whose key came with another body raises
    ``IdempotencyConflict`` (409)."""
    body_hash = request_hash(send_request.model_dump(mode="json"))
    try:
        with recoverable_unit_of_work() as work:
            existing = work.session.get(Message, message_id)
            if existing is not None:
                check_replay(existing.request_hash, body_hash, send_request.idempotency_key)
                return existing.status, False
            message = insert_message(work.session, message_id, send_request, g.app_id)
            if message.status == MessageStatus.QUEUED:  # a scheduled one waits for the sweep
                work.task(tasknames.DISPATCH, message_id,
                          queue=tasknames.send_queue(send_request.priority))
            return message.status, True
    except IntegrityError:  # rolled back, nothing published: the other insert's row stands
        with session_scope() as session:
            raced = session.get(Message, message_id)
            if raced is None:  # the idempotency key was used with another id: impossible by
                raise  # construction, so surface it rather than guess
            check_replay(raced.request_hash, body_hash, send_request.idempotency_key)
            return raced.status, False


@api.get("/messages/<message_id>")
@require_api_key
def show(message_id: str):  # type: ignore[no-untyped-def]
    with session_scope() as session:
        message = _own_message(session, message_id)
        if message is None:
            return jsonify(error="not_found", message=f"no message {message_id}"), 404
        return jsonify(message_view(session, message))


@api.delete("/messages/<message_id>")
@require_api_key
def cancel(message_id: str):  # type: ignore[no-untyped-def]
    """Cancel a message not yet sent on any hop (``shared.cancellation``)."""
    return cancel_answer(message_id, g.app_id)


def cancel_answer(message_id: str, scope: str | None):  # type: ignore[no-untyped-def]
    """The one HTTP answer to a cancel (the API's and the console's): 200 with status
    ``cancelled`` (again: the same answer), 404 when ``scope`` (an app id; None: any app)
    does not own it, 409 naming the hop already sent."""
    with session_scope() as session:
        message = session.get(Message, message_id[:36])
        if message is None or scope not in (None, message.app_id):
            return jsonify(error="not_found", message=f"no message {message_id}"), 404
        try:
            cancellation.cancel_message(session, message)
        except cancellation.AlreadySent as exc:
            return jsonify(exc.body()), 409
        session.commit()
        return jsonify(id=message.id, status=MessageStatus.CANCELLED), 200


@api.get("/app")
@require_api_key
def app_settings():  # type: ignore[no-untyped-def]
    """The calling app's settings: its name and default quiet hours."""
    with session_scope() as session:
        return jsonify(id=g.app_id, name=apps.display_name(session, g.app_id),
                       quiet_hours=apps.default_quiet_hours(session, g.app_id))


@api.patch("/app")
@require_api_key
def update_app_settings():  # type: ignore[no-untyped-def]
    """Change the calling app's default quiet hours (``{"quiet_hours": null}`` clears them;
    a field left out is left as it is)."""
    update = _parse(AppSettingsUpdate)
    with session_scope() as session:
        if "quiet_hours" in update.model_fields_set:
            apps.set_quiet_hours(session, g.app_id, update.quiet_hours.model_dump()
                                 if update.quiet_hours else None)
        session.commit()
        return jsonify(id=g.app_id, name=apps.display_name(session, g.app_id),
                       quiet_hours=apps.default_quiet_hours(session, g.app_id))


def _own_message(session: Session, message_id: str) -> Message | None:
    """The caller's message, or None: another app's message is not found either."""
    message = session.get(Message, message_id)
    return message if message is not None and message.app_id == g.app_id else None


@api.get("/events")
@require_api_key
def events():  # type: ignore[no-untyped-def]
    """Public events in commit order after a cursor: poll with ``?after=<next>``. Events join
    the feed within about a second of commit (see ``shared.feed``)."""
    try:
        after = _int_arg("after", 0)
        limit = min(max(_int_arg("limit", 100), 1), 1000)
    except BadArgument as exc:
        return jsonify(error="validation_error", message=f"{exc.field}: {exc}",
                       errors=[{"field": exc.field, "message": str(exc)}]), 422
    with session_scope() as session:
        rows = feed.page(session, g.app_id, after, limit)
        items = [event_body(e) for e in rows]
    return jsonify(events=items, next=rows[-1].feed_pos if rows else after)


def _int_arg(name: str, default: int) -> int:
    """A query integer that fits the database's 64-bit columns (a larger one is no cursor)."""
    try:
        value = int(request.args.get(name, str(default)))
    except ValueError:
        raise BadArgument(name, "must be an integer") from None
    if not -(2**63) <= value < 2**63:
        raise BadArgument(name, "out of range")
    return value


@api.post("/events/replay")
@require_api_key
def replay():  # type: ignore[no-untyped-def]
    """Deliver public events again to the callback URL: ``{"since": ...}`` or
    ``{"message_id": ...}``. Each replayed event keeps its id and sequence number."""
    req = _parse(ReplayRequest)
    with session_scope() as session:
        count = redeliver(session, g.app_id, since=req.since, message_id=req.message_id)
    return jsonify(replayed=count), 202




@api.post("/messages/<message_id>/seal")
@require_api_key
def seal(message_id: str):  # type: ignore[no-untyped-def]
    """Lock the messenger message so no more answers come (the outcome is a timeline event)."""
    with uow.unit_of_work() as work:
        if _own_message(work.session, message_id) is None:
            return jsonify(error="not_found", message=f"no message {message_id}"), 404
        work.task(tasknames.SEAL, message_id, str(uuid.uuid4()))
    return jsonify(id=message_id, status="sealing"), 202


@api.post("/contacts/rogerthat/<action>")
@require_api_key
def friendship(action: str):  # type: ignore[no-untyped-def]
    """``invite`` or ``break-up``: the messenger's friend.invite / friend.break_up."""
    if action not in ("invite", "break-up"):
        return jsonify(error="not_found", message=f"no action {action}"), 404
    req = _parse(FriendRequest)
    if action == "invite":  # no row of ours changes: a task of its own, through the same seam
        uow.publish_task(tasknames.FRIEND_INVITE, str(req.email), req.app_id,
                         str(uuid.uuid4()), req.name, req.message, req.language, g.app_id)
    else:  # the trailing g.app_id: the app that asked is told, and lists an invited contact
        uow.publish_task(tasknames.FRIEND_BREAK_UP, str(req.email), req.app_id,
                         str(uuid.uuid4()), g.app_id)
    return jsonify(email=str(req.email), app_id=req.app_id, status="requested"), 202


@api.get("/contacts")
@require_api_key
def list_contacts():  # type: ignore[no-untyped-def]
    """What we know of the consent of each contact this app messaged or invited (e.g. a
    messenger friendship, which is the service's: every app sees the same status)."""
    with session_scope() as session:
        rows = session.scalars(select(Contact).where(contacts.visible(g.app_id))
                               .order_by(Contact.updated_at.desc()).limit(1000)).all()
        items = [{"channel": c.channel, "address": c.address, "app_id": c.app_id,
                  "status": c.status, "name": c.name,
                  "updated_at": c.updated_at.isoformat() + "Z"} for c in rows]
    return jsonify(contacts=items)
