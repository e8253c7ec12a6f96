"""Producer-initiated messenger calls: seal a message, invite or drop a friend.

Each call carries a JSON-RPC id chosen when the producer asked (in the task arguments), so a
retried task reuses it and the messenger replays the first result instead of acting twice.
``retries`` (the task's retry count) lets the adapter get past an error the messenger cached
under that id (a 1000), which a retry under the same id could only replay.
"""

from __future__ import annotations

from sqlalchemy import select

from shared import contacts
from shared.db import session_scope
from shared.messages import add_app_event, add_event
from shared.models import DEFAULT_APP, Attempt
from shared.providers import channel_for, provider_for
from shared.providers.base import PermanentError


def seal(message_id: str, rpc_id: str, retries: int = 0) -> str:
    """Lock the messenger message of ``message_id`` (after the producer has its answer)."""
    with session_scope() as session:
        key = session.scalars(select(Attempt.provider_message_id).where(
            Attempt.message_id == message_id, Attempt.channel == channel_for("seal"),
            Attempt.provider_message_id.is_not(None))).first()
    if key is None:
        _note(message_id, "seal_failed", reason="no messenger message to seal")
        return "nothing_to_seal"
    try:
        provider_for("seal").seal(key, rpc_id=rpc_id, retries=retries)  # type: ignore[attr-defined]
    except PermanentError as exc:
        _note(message_id, "seal_failed", reason=exc.reason, detail=exc.detail)
        return exc.reason
    _note(message_id, "sealed", message_key=key)
    return "sealed"


def _note(message_id: str, type_: str, **payload: object) -> None:
    with session_scope() as session:
        add_event(session, message_id, type_, channel=channel_for("seal"), **payload)


def invite(email: str, app_id: str, rpc_id: str, name: str | None = None,
           message: str | None = None, language: str | None = None, retries: int = 0,
           producer_app: str = DEFAULT_APP) -> str:
    """Ask someone to become the service's friend; the answer comes as friend.invite_result,
    matched by our own tag (``contacts.invitation_tag``: a decline carries no e-mail).
    ``app_id`` is the messenger app; ``producer_app`` is ours that asked: it lists the contact
    from now on and alone hears how the invitation ended."""
    tag = contacts.invitation_tag(rpc_id)
    with session_scope() as session:
        contacts.reached(session, channel_for("friendships"), email, app_id, producer_app)
        contact = contacts.record(session, channel_for("friendships"), email, app_id,
                                  "invited", name=name)
        contacts.note_invitation(contact, tag, producer_app)
    try:
        provider_for("friendships").invite(  # type: ignore[attr-defined]
            email, app_id, name=name, message=message, language=language, tag=tag,
            rpc_id=rpc_id, retries=retries)
    except PermanentError as exc:
        if exc.reason == "already_friend":
            _contact(email, app_id, "friend", "invite", producer_app)
            return "already_friend"
        _contact(email, app_id, None, "invite_failed", producer_app, reason=exc.reason)
        return exc.reason
    return "invited"


def break_up(email: str, app_id: str, rpc_id: str, retries: int = 0,
             producer_app: str = DEFAULT_APP) -> str:
    """End the friendship at the messenger, then record it (no callback tells us) with the
    app that asked (``producer_app``; ``app_id`` is the messenger app)."""
    provider_for("friendships").break_up(  # type: ignore[attr-defined]
        email, app_id, rpc_id=rpc_id, retries=retries)
    _contact(email, app_id, "not_friend", "break_up", producer_app)
    return "broken_up"


def _contact(email: str, app_id: str, status: str | None, change: str, producer_app: str,
             **extra: object) -> None:
    """Record the outcome and tell the app that asked (not every app: the e-mail is its)."""
    channel = channel_for("friendships")
    with session_scope() as session:
        if status is not None:
            contacts.record(session, channel, email, app_id, status)
        add_app_event(session, "contact", {"channel": channel, "change": change,
                                           "email": email, "app_id": app_id,
                                           "status": status, **extra}, producer_app)
