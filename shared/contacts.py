"""The messenger's contacts: friendship stages, invitations, which app reached whom.

A contact's stage (invited, friend, declined, not_friend) is kept from the provider's
friendship callbacks, our own invitations and the provider's "not in your friends list"
refusals; the stages that mean consent (friend: in; declined, broke up: out) are changes of
the one consent registry (``shared.consent``), which alone decides whether a message goes.
Unknown contacts are tried: the provider is the authority, and its refusal is recorded.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import requests
from sqlalchemy import ColumnElement, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import consent, egress, handlers
from shared.messages import add_app_event
from shared.models import DEFAULT_APP, AppContact, Contact
from shared.settings import get_settings

log = logging.getLogger(__name__)
INVITE_TAG_PREFIX = "switchboard-invite:"  # + the invitation's request id
INVITES_KEPT = 20  # per contact: whose recent invitations these were


def find(session: Session, channel: str, address: str, app_id: str) -> Contact | None:
    return session.scalars(select(Contact).where(
        Contact.channel == channel, Contact.address == address.lower(),
        Contact.app_id == app_id)).first()


def invitation_tag(request_id: str) -> str:
    """Our own tag for an invitation. The messenger echoes it in the invitation's result,
    and a declined result carries no e-mail: the tag is all that says whose it was. Made
    from the request id, so a retried invitation carries the same tag."""
    return INVITE_TAG_PREFIX + request_id


def note_invitation(contact: Contact, tag: str, producer_app: str) -> None:
    """Remember the latest invitation's tag (a decline is matched by it) and which app sent
    each recent one, so its answer goes to that app (``on_contact``)."""
    details = dict(contact.details or {})
    inviters = dict(details.get("invited_by") or {})
    inviters[tag] = producer_app
    details["invite_tag"] = tag
    details["invited_by"] = dict(list(inviters.items())[-INVITES_KEPT:])
    contact.details = details


def find_by_invite_tag(session: Session, channel: str, tag: str) -> Contact | None:
    """The contact whose latest invitation carried ``tag`` (recorded by ``record``)."""
    if not tag.startswith(INVITE_TAG_PREFIX):
        return None
    return session.scalars(select(Contact).where(
        Contact.channel == channel,
        Contact.details["invite_tag"].as_string() == tag)).first()


def may_message(session: Session, channel: str, address: str, app_id: str) -> bool:
    """Asked of the consent registry, which the friendship stages feed (``record``)."""
    return consent.may_message(session, channel, app_id, address.lower())


def record(session: Session, channel: str, address: str, app_id: str, status: str | None,
           name: str | None = None, details: dict[str, Any] | None = None) -> Contact:
    """Create or update a contact; ``status=None`` keeps the current one (a profile update)."""
    contact = find(session, channel, address, app_id)
    previous = contact.status if contact is not None else None
    if contact is None:
        contact = Contact(channel=channel, address=address.lower(), app_id=app_id,
                          status="unknown", details={})
        try:
            with session.begin_nested():  # a savepoint: a concurrent insert must not undo ours
                session.add(contact)
        except IntegrityError:  # created concurrently: update that one instead
            contact = find(session, channel, address, app_id)
            assert contact is not None
            previous = contact.status
    if status is not None and status != previous:
        contact.status = status
        session.flush()  # the apps that reached it are read by the contact's id
        consent.friendship(session, channel, contact.address, app_id, status,
                           apps_of(session, contact))
    if name:
        contact.name = name
    if details:
        contact.details = {**(contact.details or {}), **details}
    return contact


# --- which app reached which contact (a friendship is the service's, the list the app's) ---

def reached(session: Session, channel: str, address: str, scope: str, app_id: str) -> Contact:
    """``app_id`` messaged or invited this contact: it exists (``unknown`` when new, its
    status otherwise kept) and ``app_id`` lists it from now on."""
    contact = record(session, channel, address, scope, None)
    session.flush()  # the link needs the contact's id
    if session.get(AppContact, (app_id, contact.id)) is None:
        try:
            with session.begin_nested():  # a concurrent send linked it first: that one stands
                session.add(AppContact(app_id=app_id, contact_id=contact.id))
        except IntegrityError:
            pass
    return contact


def note_recipients(session: Session, request: Any, app_id: str) -> None:
    """At accept: the recipient of a hop on the friendships channel (the messenger's e-mail)
    becomes a contact ``app_id`` reached, whether or not that hop is ever tried: the app
    chose to message them. Phones are not listed: no friendship governs them, and a row per
    SMS would cost every accept a write."""
    from shared.providers import channel_for, get_provider, provider_name

    friendships = channel_for("friendships")
    for channel in request.route:
        if channel != friendships:
            continue
        recipient = get_provider(provider_name(channel)).recipient(request, channel)
        if recipient is not None:
            reached(session, channel, recipient.address, recipient.scope, app_id)


def visible(app_id: str) -> ColumnElement[bool]:
    """The contacts ``app_id`` may list: those it reached; the default app (the operator's
    bootstrap keys) also those no app reached (who befriended the service on their own)."""
    linked = Contact.id.in_(select(AppContact.contact_id).where(AppContact.app_id == app_id))
    if app_id != DEFAULT_APP:
        return linked
    return or_(linked, ~exists().where(AppContact.contact_id == Contact.id))


def apps_of(session: Session, contact: Contact) -> list[str]:
    """The apps that reached ``contact``, or ``[default]``: who hears of a change nobody asked
    for (the member broke up, accepted from their side, changed their name)."""
    found = session.scalars(select(AppContact.app_id).where(
        AppContact.contact_id == contact.id).order_by(AppContact.app_id)).all()
    return list(found) or [DEFAULT_APP]


def decide_invitation(session: Session, email: str, app_id: str, invitation: dict[str, Any],
                      ) -> str:
    """The inline answer to the messenger's ``friend.invited``: "accepted" or "declined"."""
    settings = get_settings()
    policy = settings.rogerthat_friend_policy
    if policy == "accept_all":
        accepted = True
    elif policy == "known_contacts":
        known = session.scalars(select(Contact.id).where(
            Contact.channel == "rogerthat", Contact.address == email.lower())).first()
        accepted = known is not None and \
            not consent.opted_out_anywhere(session, "rogerthat", email)
    else:
        accepted = _ask_producer(invitation)
    return "accepted" if accepted else "declined"


def _ask_producer(invitation: dict[str, Any]) -> bool:
    """POST the invitation to the producer and wait briefly for {"accept": true|false}."""
    settings = get_settings()
    default = settings.rogerthat_friend_policy_default == "accepted"
    if not settings.rogerthat_friend_policy_url:
        return default
    try:
        # The producer's URL: through the egress policy, no redirects, a capped answer.
        with egress.session() as http, http.post(
                settings.rogerthat_friend_policy_url, json=invitation, stream=True,
                allow_redirects=False,
                timeout=settings.rogerthat_friend_policy_timeout_seconds) as response:
            answer = json.loads(egress.read_capped(response)) if response.ok else {}
    except (requests.RequestException, ValueError) as exc:
        log.warning("friend policy URL did not answer (%s); using %s", exc,
                    settings.rogerthat_friend_policy_default)
        return default
    accept = answer.get("accept") if isinstance(answer, dict) else None
    return accept if isinstance(accept, bool) else default


# --- what the engine tells us (shared.handlers) -----------------------------------------

_CONTACT_STATUS = {("invite_result", "accepted"): "friend",
                   ("invite_result", "established"): "friend",
                   ("invite_result", "decline"): "declined",
                   ("broke_up", None): "not_friend"}
REFUSED_REASONS = frozenset({"not_a_friend"})  # a provider refusal that means "not reachable"


@handlers.on("contact")
def on_contact(work: Any, occurrence: handlers.Occurrence) -> bool:
    """A friendship callback: record the contact's new status and tell the producer."""
    assert occurrence.event is not None
    data = dict(occurrence.event.data)
    if data.get("change") == "invite_result" and not data.get("email") and data.get("tag"):
        data = _invited_by_us(work.session, occurrence.provider or "", data)
    change, email = data.get("change"), data.get("email")
    if change == "invited":  # decided inline by our receiver; ``answer`` is what it said
        status: str | None = "friend" if occurrence.answer == "accepted" else "declined"
    else:
        status = _CONTACT_STATUS.get((change, data.get("result")))
    contact = None
    if email:
        contact = record(work.session, occurrence.provider or "", email,
                         data.get("app_id") or "", status, name=data.get("name"))
        work.session.flush()
    payload = {"channel": occurrence.provider, "status": status, **data}
    for app_id in _told_apps(work.session, contact, data):
        add_app_event(work.session, "contact", payload, app_id)
    return True


def _told_apps(session: Session, contact: Contact | None, data: dict[str, Any]) -> list[str]:
    """Who hears of a friendship change: the app whose invitation this answers (our tag
    names it), else every app that reached the contact, else the default app."""
    tag = data.get("tag")
    if contact is not None and isinstance(tag, str) and tag.startswith(INVITE_TAG_PREFIX):
        inviters = (contact.details or {}).get("invited_by") or {}
        if isinstance(inviters, dict) and isinstance(inviters.get(tag), str):
            return [inviters[tag]]
    return apps_of(session, contact) if contact is not None else [DEFAULT_APP]


def _invited_by_us(session: Session, channel: str, data: dict[str, Any]) -> dict[str, Any]:
    """An invitation result without an e-mail (a decline): whose it is, from our tag."""
    contact = find_by_invite_tag(session, channel, str(data["tag"]))
    if contact is None:
        log.info("an invitation result with tag %r matches none of our invitations",
                 data["tag"])
        return data
    return {**data, "email": contact.address, "app_id": contact.app_id}


def learn_refusal(session: Session, channel: str, address: str, scope: str,
                  reason: str) -> None:
    """A provider refused a recipient as unreachable: skip them next time, before any call."""
    if reason in REFUSED_REASONS:
        record(session, channel, address, scope, "not_friend")
