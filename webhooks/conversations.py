"""The producer API's read side for in-app conversations: a consumer's conversations and a
conversation's transcript, merged from our records and the provider's (``shared.conversations``).
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from shared import conversations as store
from shared.db import session_scope
from webhooks.auth import require_api_key

conversations = Blueprint("conversations", __name__, url_prefix="/v1/conversations")


@conversations.get("")
@require_api_key
def list_conversations():  # type: ignore[no-untyped-def]
    """``?consumer_id=``: our conversations with that consumer plus the provider's view."""
    consumer_id = request.args.get("consumer_id", "").strip()
    if not consumer_id or len(consumer_id) > 100:
        return jsonify(error="validation_error", message="consumer_id is required",
                       errors=[{"field": "consumer_id",
                                "message": "required, 1 to 100 characters"}]), 422
    with session_scope() as session:
        return jsonify(store.read_conversations(session, g.app_id, consumer_id))


@conversations.get("/<key>")
@require_api_key
def show_conversation(key: str):  # type: ignore[no-untyped-def]
    """One conversation by our id or by the provider's VisitId, with its transcript."""
    with session_scope() as session:
        body = store.read_transcript(session, g.app_id, key)
    if body is None:
        return jsonify(error="not_found", message=f"no conversation {key}"), 404
    return jsonify(body)
