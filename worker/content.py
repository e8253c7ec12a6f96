"""What the engine knows about an attempt beyond its request: the consent registry's answer
for a batch (``opted_out``, asked before anything is claimed), and what it hands the
provider's ``outbound`` (which alone knows its wire): the in-app conversation the hop joins
and a shared cache of uploaded images.

Nothing here branches on a channel or a provider name: the adapter says who its recipient is
(``recipient``) and whether its hops join conversations (``uses_conversations``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from shared import consent, contacts, conversations
from shared.db import session_scope
from shared.providers.base import OutboundMessage, Provider, SendContext
from shared.schemas import SendRequest
from shared.settings import get_settings
from worker.timing import RetryLater
from worker.redis_conn import get_redis

IMAGE_TTL_SECONDS = 30 * 86400  # a campaign's image is uploaded once a month at most


class RedisImageCache:
    """Uploaded image ids, shared by every worker, with a lock so racing sends upload once."""

    def get(self, key: str) -> str | None:
        value = get_redis().get(f"switchboard:image:{key}")
        return value.decode() if value else None

    def set(self, key: str, value: str) -> None:
        get_redis().set(f"switchboard:image:{key}", value, ex=IMAGE_TTL_SECONDS)

    def lock(self, key: str) -> AbstractContextManager[Any]:
        return get_redis().lock(f"switchboard:lock:image:{key}", timeout=120,
                                blocking_timeout=60)


def outbound(provider: Provider, request: SendRequest, attempt_id: str, channel: str,
             app_id: str, retries: int = 0) -> OutboundMessage:
    """The attempt's content as its provider sends it (consent was asked before, for the
    whole batch: ``opted_out``). ``retries`` is how often this attempt was tried already (a
    provider that caches answers by request id, errors included, needs it to run a retry
    afresh)."""
    context = SendContext(attempt_id=attempt_id, channel=channel, app_id=app_id,
                          conversation=_conversation(provider, request, app_id),
                          images=RedisImageCache(), retries=retries)
    return provider.outbound(request, context)


def opted_out(provider: Provider, request: SendRequest, channel: str,
              items: Sequence[tuple[str, str, str | None]]) -> dict[str, consent.Refusal]:
    """The attempts (``(attempt id, message id, key)``) whose recipient opted out of this
    channel, or of the request's category, by attempt id: ONE registry query for the whole
    batch. A campaign item's key is its phone as the registry keys it; a single message's
    recipient is the provider's to say. A critical message is sent anyway."""
    recipient = provider.recipient(request, channel)
    if recipient is None or consent.is_critical(request):
        return {}
    recipients = {attempt_id: (recipient.scope, key or recipient.address)
                  for attempt_id, _, key in items}
    with session_scope() as session:
        return consent.refusals(session, channel, recipients, request.category,
                                {attempt_id: message_id for attempt_id, message_id, _ in items})


def learn_refusal(provider: Provider, request: SendRequest, channel: str, reason: str) -> None:
    """The provider refused the recipient (e.g. not a friend): remember it for next time."""
    recipient = provider.recipient(request, channel)
    if recipient is not None:
        with session_scope() as session:
            contacts.learn_refusal(session, channel, recipient.address, recipient.scope,
                                   reason)


def _conversation(provider: Provider, request: SendRequest, app_id: str) -> dict | None:
    """The conversation an in-app hop joins: Start when it has no VisitId yet, else
    SendMessage into it (the adapter picks by ``visit_id``)."""
    ref = request.conversation
    if not provider.uses_conversations or ref is None:
        return None
    with session_scope() as session:
        conversation = conversations.resolve(
            session, app_id, ref, get_settings().contactatonce_advertiser_id)
        return {
            "conversation_id": conversation.id, "advertiser_id": conversation.advertiser_id,
            "consumer_id": conversation.consumer_id, "session_id": conversation.session_id,
            "visit_id": conversation.visit_id,
            "reply_to": conversations.latest_agent_message_id(session, conversation.id),
            "consumer": ref.consumer.model_dump(exclude_none=True) if ref.consumer else {},
            "listing_details": dict(ref.listing_details)}


@contextmanager
def conversation_turn(provider: Provider, request: SendRequest, app_id: str) -> Iterator[None]:
    """Hops that join a conversation go one at a time per consumer: the first one's Start call
    creates the provider conversation (VisitId) the next ones must join, and agents read them
    in order."""
    ref = request.conversation
    if not provider.uses_conversations or ref is None:
        yield
        return
    key = hashlib.sha256(f"{app_id}|{ref.advertiser_id}|{ref.consumer_id}".encode())
    lock = get_redis().lock(f"switchboard:lock:conversation:{key.hexdigest()}",
                            timeout=3 * get_settings().contactatonce_timeout_seconds + 30,
                            blocking_timeout=10)
    if not lock.acquire():
        raise RetryLater(1 + random.uniform(0, 1), "conversation busy")
    try:
        yield
    finally:
        lock.release()
