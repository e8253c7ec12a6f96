"""The producer HTTP API: messages, the event feed and event replay, scoped to the caller's app."""

from __future__ import annotations

import logging
import uuid
from typing import TypeVar

from flask import Blueprint, g, jsonify, request
from pydantic import BaseModel, ValidationError
from sqlalchemy import select

from shared import feed, tasknames
from shared.client import send_task
from shared.db import session_scope
from shared.messages import (
    create_message,
    event_body,
    message_view,
    new_message_id,
    redeliver,
)
from shared.models import Contact, Message
from shared.schemas import FriendRequest, ReplayRequest, SendRequest, error_list
from webhooks.auth import require_api_key

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
api = Blueprint("api", __name__, url_prefix="/v1")


class BadRequest(Exception):
    """A request body we refuse; carries the JSON answer naming the fields."""

    def __init__(self, body: dict, status: int) -> None:
        super().__init__(body)
        self.body, self.status = body, status


def _parse(model: type[M]) -> M:
    """The JSON body validated as ``model``; raises ``BadRequest`` (400 or 422) otherwise."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest({"error": "invalid_json", "errors": [
            {"field": "body", "message": "expected a JSON object"}]}, 400)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise BadRequest({"error": "validation_error", "errors": error_list(exc)}, 422) from None


@api.errorhandler(BadRequest)
def _bad_request(exc: BadRequest):  # type: ignore[no-untyped-def]
    return jsonify(exc.body), exc.status


@api.post("/messages")
@require_api_key
def create():  # type: ignore[no-untyped-def]
    send_request = _parse(SendRequest)
    message_id = new_message_id(send_request.idempotency_key, g.app_id)
    with session_scope() as session:
        message, created = create_message(session, message_id, send_request, g.app_id)
        status = message.status
    if not created:
        return jsonify(id=message_id, status=status, idempotent_replay=True), 200
    _enqueue_dispatch(message_id)
    return jsonify(id=message_id, status="queued"), 202


def _enqueue_dispatch(message_id: str) -> None:
    """After commit. If the broker is down the row is still durable: recovery re-publishes it."""
    try:
        send_task(tasknames.DISPATCH, message_id)
    except Exception:
        log.exception("could not publish dispatch for %s; the recovery sweep will", message_id)


@api.get("/messages/<message_id>")
@require_api_key
def show(message_id: str):  # type: ignore[no-untyped-def]
    with session_scope() as session:
        message = session.get(Message, message_id)
        if message is None or message.app_id != g.app_id:  # another app's message: not found
            return jsonify(error="not_found", message=f"no message {message_id}"), 404
        return jsonify(message_view(session, message))


@api.get("/events")
@require_api_key
def events():  # type: ignore[no-untyped-def]
    """Public events in commit order after a cursor: poll with ``?after=<next>``. Events join
    the feed within about a second of commit (see ``shared.feed``)."""
    try:
        after = int(request.args.get("after", "0"))
        limit = min(max(int(request.args.get("limit", "100")), 1), 1000)
    except ValueError:
        return jsonify(error="validation_error", errors=[
            {"field": "after", "message": "after and limit must be integers"}]), 422
    with session_scope() as session:
        rows = feed.page(session, g.app_id, after, limit)
        items = [event_body(e) for e in rows]
    return jsonify(events=items, next=rows[-1].feed_pos if rows else after)


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
    with session_scope() as session:
        message = session.get(Message, message_id)
        if message is None or message.app_id != g.app_id:
            return jsonify(error="not_found", message=f"no message {message_id}"), 404
    send_task(tasknames.SEAL, message_id, str(uuid.uuid4()))
    return jsonify(id=message_id, status="sealing"), 202


@api.post("/contacts/rogerthat/<action>")
@require_api_key
def friendship(action: str):  # type: ignore[no-untyped-def]
    """``invite`` or ``break-up``: the messenger's friend.invite / friend.break_up."""
    if action not in ("invite", "break-up"):
        return jsonify(error="not_found", message=f"no action {action}"), 404
    req = _parse(FriendRequest)
    if action == "invite":
        send_task(tasknames.FRIEND_INVITE, str(req.email), req.app_id, str(uuid.uuid4()),
                  req.name, req.message, req.language)
    else:
        send_task(tasknames.FRIEND_BREAK_UP, str(req.email), req.app_id, str(uuid.uuid4()))
    return jsonify(email=str(req.email), app_id=req.app_id, status="requested"), 202


@api.get("/contacts")
@require_api_key
def list_contacts():  # type: ignore[no-untyped-def]
    """What we know of each contact's consent (e.g. messenger friendships)."""
    with session_scope() as session:
        rows = session.scalars(select(Contact).order_by(Contact.updated_at.desc())
                               .limit(1000)).all()
        items = [{"channel": c.channel, "address": c.address, "app_id": c.app_id,
                  "status": c.status, "name": c.name,
                  "updated_at": c.updated_at.isoformat() + "Z"} for c in rows]
    return jsonify(contacts=items)
