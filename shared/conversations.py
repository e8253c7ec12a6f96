"""In-app conversations: the record that maps (advertiser, consumer, session) to the
provider's ``VisitId``, the messages each side sent, and the read side producers call.

Producers name a conversation by their own ids; the worker asks this module which provider
conversation a message joins (``resolve``), remembers the VisitId the Start call returned,
and files the agents' replies under it. Reads merge what the provider returns
(GetConversations, GetTranscript) with what we stored, so a producer sees our message ids and
statuses next to the provider's view, even when one side knows something the other does not.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import handlers
from shared.messages import add_app_event
from shared.models import DEFAULT_APP, Conversation, ConversationMessage, Message, utcnow
from shared.schemas import ConversationRef

PROVIDER = "contactatonce"


def resolve(session: Session, app_id: str, ref: ConversationRef,
            default_advertiser: str) -> Conversation:
    """The conversation a message joins: the named session, else the consumer's latest
    conversation with the advertiser, else a new one (flushed, not committed)."""
    advertiser = ref.advertiser_id or default_advertiser
    query = select(Conversation).where(
        Conversation.provider == PROVIDER, Conversation.advertiser_id == advertiser,
        Conversation.consumer_id == ref.consumer_id, Conversation.app_id == app_id)
    if ref.session_id:
        query = query.where(Conversation.session_id == ref.session_id)
    found = session.scalars(query.order_by(Conversation.updated_at.desc()).limit(1)).first()
    if found is not None:
        return found
    conversation = Conversation(
        id=str(uuid.uuid4()), app_id=app_id, provider=PROVIDER, advertiser_id=advertiser,
        consumer_id=ref.consumer_id, session_id=ref.session_id or uuid.uuid4().hex)
    session.add(conversation)
    session.flush()
    return conversation


def latest_agent_message_id(session: Session, conversation_id: str) -> str | None:
    """The provider id of the agents' latest message: what a reply answers."""
    return session.scalars(
        select(ConversationMessage.provider_message_id)
        .where(ConversationMessage.conversation_id == conversation_id,
               ConversationMessage.direction == "in")
        .order_by(ConversationMessage.sent_at.desc(), ConversationMessage.id.desc())
        .limit(1)).first()


def record_sent(session: Session, conversation_id: str, ids: Mapping[str, Any],
                message_id: str, attempt_id: str, text: str | None) -> None:
    """The provider accepted our message: remember its VisitId (first message only) and file
    the message under the conversation. Idempotent per attempt."""
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        return
    visit_id = ids.get("visit_id")
    if visit_id and not conversation.visit_id:
        conversation.visit_id = str(visit_id)
    conversation.updated_at = utcnow()
    exists = session.scalars(select(ConversationMessage.id).where(
        ConversationMessage.attempt_id == attempt_id)).first()
    if exists is None:
        session.add(ConversationMessage(conversation_id=conversation_id, direction="out",
                                        message_id=message_id, attempt_id=attempt_id,
                                        text=text))


def record_inbound(session: Session, data: Mapping[str, Any], text: str | None,
                   sent_at: datetime | None,
                   default_advertiser: str) -> tuple[Conversation, bool]:
    """File an agent's message under its conversation; returns it and whether it is new.

    A VisitId we never saw (a conversation started outside Switchboard) gets a record of the
    ``default`` app, so the message still reaches someone.
    """
    conversation = _conversation_for(session, data, default_advertiser)
    provider_id = str(data.get("message_id") or "")
    exists = session.scalars(select(ConversationMessage.id).where(
        ConversationMessage.conversation_id == conversation.id,
        ConversationMessage.direction == "in",
        ConversationMessage.provider_message_id == provider_id)).first()
    if exists is not None:
        return conversation, False
    session.add(ConversationMessage(
        conversation_id=conversation.id, direction="in", provider_message_id=provider_id,
        text=text, media_url=data.get("media_url") or None,
        agent_name=data.get("agent_name") or None,
        agent_image_url=data.get("agent_image_url") or None,
        sent_at=sent_at or utcnow()))
    conversation.updated_at = utcnow()
    session.flush()
    return conversation, True


def _conversation_for(session: Session, data: Mapping[str, Any],
                      default_advertiser: str) -> Conversation:
    visit_id = str(data.get("visit_id") or "")
    found = session.scalars(select(Conversation).where(
        Conversation.provider == PROVIDER, Conversation.visit_id == visit_id)).first()
    if found is not None:
        return found
    session_id, consumer_id = data.get("session_id"), data.get("consumer_id")
    if session_id and consumer_id:
        found = session.scalars(select(Conversation).where(
            Conversation.provider == PROVIDER, Conversation.session_id == str(session_id),
            Conversation.consumer_id == str(consumer_id))).first()
        if found is not None:
            found.visit_id = found.visit_id or visit_id
            return found
    conversation = Conversation(
        id=str(uuid.uuid4()), app_id=DEFAULT_APP, provider=PROVIDER,
        advertiser_id=default_advertiser, consumer_id=str(consumer_id or ""),
        session_id=str(session_id or f"visit-{visit_id}"), visit_id=visit_id)
    session.add(conversation)
    session.flush()
    return conversation


def view(conversation: Conversation) -> dict[str, Any]:
    """A conversation as producers see it (our id first, the VisitId for reference)."""
    return {"id": conversation.id, "advertiser_id": conversation.advertiser_id,
            "consumer_id": conversation.consumer_id, "session_id": conversation.session_id,
            "visit_id": conversation.visit_id,
            "created_at": _iso(conversation.created_at),
            "updated_at": _iso(conversation.updated_at)}


def inbound_payload(conversation: Conversation, data: Mapping[str, Any], text: str | None,
                    sent_at: datetime | None) -> dict[str, Any]:
    """The ``inbound_message`` event producers receive for an agent's reply."""
    return {"channel": "inapp", "conversation": view(conversation),
            "provider_message_id": data.get("message_id"), "text": text,
            "media_url": data.get("media_url") or None,
            "agent_name": data.get("agent_name") or None,
            "agent_image_url": data.get("agent_image_url") or None,
            "sent_at": _iso(sent_at)}


# --- the read side ----------------------------------------------------------------------

def find(session: Session, app_id: str, key: str) -> Conversation | None:
    """A conversation by our id or by the provider's VisitId, if this app may see it."""
    conversation = session.get(Conversation, key) or session.scalars(select(Conversation).where(
        Conversation.provider == PROVIDER, Conversation.visit_id == key)).first()
    if conversation is None or not _visible(conversation, app_id):
        return None
    return conversation


def _visible(conversation: Conversation, app_id: str) -> bool:
    """Apps see their own conversations; the bootstrap app administers the deployment."""
    return app_id == DEFAULT_APP or conversation.app_id == app_id


def list_for_consumer(session: Session, app_id: str, consumer_id: str,
                      provider_items: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Our conversations with a consumer, each joined with the provider's item of the same
    VisitId; provider-only conversations are listed for the bootstrap app only (another app
    cannot tell whether they are its own)."""
    ours = session.scalars(select(Conversation).where(
        Conversation.provider == PROVIDER, Conversation.consumer_id == consumer_id)
        .order_by(Conversation.updated_at.desc())).all()
    ours = [c for c in ours if _visible(c, app_id)]
    by_visit = {str(item.get("visit_id")): item for item in provider_items or []}
    merged = [{**view(c), "provider": by_visit.pop(c.visit_id, None) if c.visit_id else None}
              for c in ours]
    if app_id == DEFAULT_APP:
        merged += [{"id": None, "advertiser_id": item.get("advertiser_id"),
                    "consumer_id": consumer_id, "session_id": item.get("session_id"),
                    "visit_id": visit, "created_at": None, "updated_at": None,
                    "provider": item} for visit, item in by_visit.items()]
    return merged


def transcript(session: Session, conversation: Conversation,
               provider_transcript: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every message of the conversation: ours (with our message id and status), the agents'
    replies we received, and whatever only the provider's transcript holds."""
    rows = session.scalars(select(ConversationMessage).where(
        ConversationMessage.conversation_id == conversation.id)
        .order_by(ConversationMessage.sent_at, ConversationMessage.id)).all()
    statuses = _message_statuses(session, [r.message_id for r in rows if r.message_id])
    items = [_stored_item(row, statuses) for row in rows]
    for entry in (provider_transcript or {}).get("messages", []):
        match = _match(items, entry)
        if match is not None:
            match["provider"] = entry
            match["source"] = "both"
        else:
            items.append(_provider_item(entry))
    return items


def _stored_item(row: ConversationMessage, statuses: dict[str, str]) -> dict[str, Any]:
    return {"direction": row.direction, "text": row.text, "sent_at": _iso(row.sent_at),
            "message_id": row.message_id, "attempt_id": row.attempt_id,
            "status": statuses.get(row.message_id or ""),
            "provider_message_id": row.provider_message_id, "agent_name": row.agent_name,
            "media_url": row.media_url, "source": "switchboard", "provider": None}


def _provider_item(entry: dict[str, Any]) -> dict[str, Any]:
    role = str(entry.get("speaker_role") or "").lower()
    return {"direction": "in" if role == "agent" else "out", "text": entry.get("message"),
            "sent_at": entry.get("timestamp"), "message_id": None,
            "attempt_id": entry.get("external_message_id"), "status": None,
            "provider_message_id": entry.get("message_id"),
            "agent_name": entry.get("speaker_name") if role == "agent" else None,
            "media_url": entry.get("media_url") or None, "source": "provider",
            "provider": entry}


def _match(items: list[dict[str, Any]], entry: dict[str, Any]) -> dict[str, Any] | None:
    """The stored message a provider transcript entry is: by our attempt id (ExternalMessageId)
    for ours, by the provider's MessageId for the agents'."""
    for item in items:
        if item["source"] != "switchboard":
            continue
        external, provider_id = entry.get("external_message_id"), entry.get("message_id")
        if external and item["attempt_id"] == str(external):
            return item
        if provider_id and item["provider_message_id"] == str(provider_id):
            return item
    return None


def _message_statuses(session: Session, message_ids: list[str]) -> dict[str, str]:
    if not message_ids:
        return {}
    return dict(session.execute(select(Message.id, Message.status)
                                .where(Message.id.in_(message_ids))).all())


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


# --- reads that ask the provider too ------------------------------------------------------

def provider_call(call: str, *args: Any) -> tuple[Any, dict[str, str] | None]:
    """Ask the provider (GetConversations / GetTranscript); on failure return what went wrong
    instead, so the caller still answers with what we stored."""
    from shared.providers import get_provider
    from shared.providers.base import ProviderError

    try:
        return getattr(get_provider(PROVIDER), call)(*args), None
    except ProviderError as exc:
        return None, {"reason": exc.reason, "detail": exc.detail}


def read_conversations(session: Session, app_id: str, consumer_id: str) -> dict[str, Any]:
    """A consumer's conversations: ours merged with the provider's GetConversations."""
    items, error = provider_call("get_conversations", consumer_id)
    return {"consumer_id": consumer_id,
            "conversations": list_for_consumer(session, app_id, consumer_id, items),
            "provider_error": error}


def read_transcript(session: Session, app_id: str, key: str) -> dict[str, Any] | None:
    """One conversation (by our id or VisitId) with its merged transcript; None if unknown."""
    conversation = find(session, app_id, key)
    if conversation is None:
        return None
    provider_transcript, error = (provider_call("get_transcript", conversation.visit_id)
                                  if conversation.visit_id else (None, None))
    return {"conversation": view(conversation),
            "messages": transcript(session, conversation, provider_transcript),
            "provider_error": error}


# --- what the engine tells us (shared.handlers) -----------------------------------------

@handlers.on("inbound")
def on_inbound(work: Any, occurrence: handlers.Occurrence) -> bool:
    """An agent wrote into an in-app conversation: file it, tell the producer, and let the
    features that read conversations (flows) see its text — once, not on a redelivery."""
    from shared.settings import get_settings

    event = occurrence.event
    assert event is not None
    conversation, new = record_inbound(work.session, event.data, event.text, event.occurred_at,
                                       get_settings().contactatonce_advertiser_id)
    if new:
        add_app_event(work.session, "inbound_message", inbound_payload(
            conversation, event.data, event.text, event.occurred_at), conversation.app_id)
        handlers.dispatch(work, handlers.Occurrence(
            "conversation_text", provider=occurrence.provider, event=event, data={
                "consumer_id": conversation.consumer_id, "app_id": conversation.app_id,
                "session_id": conversation.session_id,
                "advertiser_id": conversation.advertiser_id}))
    return True
