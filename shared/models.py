"""SQLAlchemy 2.0 typed models: the system of record for messages, attempts and callbacks.

The ``messages`` row doubles as the outbox (status ``queued`` until a worker claims it), and
``attempts.deadline_at`` is the source of truth for fallback deadlines (Redis only indexes it).
Timestamps are naive UTC everywhere so SQLite and PostgreSQL compare them the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """Naive UTC now: the one clock every row uses."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


DEFAULT_APP = "default"  # the producer app behind the bootstrap SWITCHBOARD_API_KEYS


class App(Base):
    """A producer application: its API key (stored hashed), callback URL and signing secret."""

    __tablename__ = "apps"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    signing_secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(DateTime)
    # After a rotation the old secret keeps signing beside the new one until then.
    previous_signing_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_until: Mapped[datetime | None] = mapped_column(DateTime)
    # The app's own opt-out/opt-in keywords and confirmation texts (shared.consent).
    consent_settings: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class AppSettings(Base):
    """An app's defaults for its messages, the bootstrap ``default`` app's included (it has
    no ``apps`` row): its quiet hours (``{start, end, timezone}``) for messages naming none."""

    __tablename__ = "app_settings"

    app_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    quiet_hours: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(36), default=DEFAULT_APP, index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    reason: Mapped[str | None] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(200))
    route: Mapped[list[str]] = mapped_column(JSON)
    hop: Mapped[int] = mapped_column(Integer, default=0)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))  # the body the key came with
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    event_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    campaign_id: Mapped[str | None] = mapped_column(String(36), index=True)  # shared.campaigns
    # When it may go (shared.sendtime), resolved at accept: ``scheduled`` until ``send_at``;
    # no hop starts after ``valid_until``; quiet hours with the recipient's zone resolved.
    send_at: Mapped[datetime | None] = mapped_column(DateTime)
    valid_until: Mapped[datetime | None] = mapped_column(DateTime)
    priority: Mapped[str] = mapped_column(String(16), default="normal", server_default="normal")
    quiet_hours: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The template version (and locale) the content was rendered from at accept (issue 19).
    template_name: Mapped[str | None] = mapped_column(String(100))
    template_version: Mapped[int | None] = mapped_column(Integer)
    template_locale: Mapped[str | None] = mapped_column(String(35))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    attempts: Mapped[list[Attempt]] = relationship(
        back_populates="message", order_by="Attempt.hop", lazy="selectin"
    )

    __table_args__ = (
        Index("ix_messages_status_updated", "status", "updated_at"),
        Index("ix_messages_status_send_at", "status", "send_at"),
        UniqueConstraint("app_id", "idempotency_key", name="uq_messages_app_idempotency"),
    )


class Attempt(Base):
    """One try on one channel. Its id travels to the provider, so reports find it again."""

    __tablename__ = "attempts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id"), index=True)
    hop: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(32))
    provider: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    provider_message_id: Mapped[str | None] = mapped_column(String(100), index=True)
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_reason: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    request_summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # secrets redacted
    response_code: Mapped[str | None] = mapped_column(String(32))
    response_text: Mapped[str | None] = mapped_column(Text)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    not_before: Mapped[datetime | None] = mapped_column(DateTime)  # a retry is scheduled then
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime)
    seen_at: Mapped[datetime | None] = mapped_column(DateTime)

    message: Mapped[Message] = relationship(back_populates="attempts")

    __table_args__ = (
        UniqueConstraint("message_id", "hop", name="uq_attempts_message_hop"),
        Index("ix_attempts_status_updated", "status", "updated_at"),
    )


class Event(Base):
    """The message timeline: every status change, report, fallback decision and reply.

    ``seq`` numbers a message's events 1, 2, 3... in commit order (taken from a counter on the
    message row, which also serialises concurrent writers), so producers can order them.
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # None for events about no message (a friendship change, a poke): then ``seq`` is None
    # and ``app_id`` says whose feed it joins.
    message_id: Mapped[str | None] = mapped_column(ForeignKey("messages.id"), index=True)
    app_id: Mapped[str] = mapped_column(String(36), default=DEFAULT_APP, index=True)
    seq: Mapped[int | None] = mapped_column(Integer)
    # Position in the producers' event feed, given after commit by one sweeper in commit
    # order; ids are taken at insert time, so an id cursor could skip a late-committing event.
    feed_pos: Mapped[int | None] = mapped_column(Integer, unique=True)
    attempt_id: Mapped[str | None] = mapped_column(String(36))
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("message_id", "seq", name="uq_events_message_seq"),)


class Contact(Base):
    """A person we know on a channel (a messenger friend): name, invitations and the
    friendship's stage. Whether they may be messaged is the consent registry's (``Consent``),
    which the stages that mean consent feed (``shared.contacts.record``)."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(320))  # e-mail for the messenger
    app_id: Mapped[str] = mapped_column(String(100), default="")
    status: Mapped[str] = mapped_column(String(16))  # friend | invited | declined | not_friend
    name: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("channel", "address", "app_id", name="uq_contacts"),)



class Consent(Base):
    """The consent registry (``shared.consent``): may this address be messaged on this
    channel of this provider account (``scope``: the messenger app id, the in-app
    advertiser, "" for the gateway's one account)? ``opted_out`` with no ``categories`` is
    everything; with categories, only those. Every change is a ``ConsentChange`` row."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    scope: Mapped[str] = mapped_column(String(100), default="")
    address: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16))  # opted_in | opted_out
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    source: Mapped[str] = mapped_column(String(32))  # of the latest change
    app_id: Mapped[str | None] = mapped_column(String(36))  # whose message/request made it
    message_id: Mapped[str | None] = mapped_column(String(36))  # the message that carried it
    # A confirmation we send back after a keyword: the one message an opt-out lets through.
    confirmation_message_id: Mapped[str | None] = mapped_column(String(36))
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("channel", "scope", "address", name="uq_consents_address"),
        Index("ix_consents_status", "status", "id"),)


class ConsentChange(Base):
    """One change of a consent record, kept for audit: when, what it became, from where
    (keyword, provider report, the API and which app, an import, a friendship) and the
    message that carried it."""

    __tablename__ = "consent_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    consent_id: Mapped[int] = mapped_column(ForeignKey("consents.id"), index=True)
    channel: Mapped[str] = mapped_column(String(32))
    scope: Mapped[str] = mapped_column(String(100), default="")
    address: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16))
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    source: Mapped[str] = mapped_column(String(32))
    app_id: Mapped[str | None] = mapped_column(String(36), index=True)
    message_id: Mapped[str | None] = mapped_column(String(36))
    detail: Mapped[str | None] = mapped_column(Text)  # e.g. the keyword as written
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AppContact(Base):
    """An app that messaged or invited a contact: a friendship is the messenger service's,
    but each app lists only the contacts it reached."""

    __tablename__ = "app_contacts"

    app_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

class Delivery(Base):
    """One outbound event notification to a producer's URL, retried on a schedule.

    ``next_attempt_at`` is both the retry time and a lease: the sweep that hands a delivery to
    a worker pushes it forward, so a crashed worker's delivery is picked up again later.
    """

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), index=True)
    message_id: Mapped[str | None] = mapped_column(String(36), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (Index("ix_deliveries_status_next", "status", "next_attempt_at"),)


class Callback(Base):
    """A provider callback exactly as received, stored before any processing (audit + dedupe)."""

    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="received")
    method: Mapped[str] = mapped_column(String(8))
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    body: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    answer: Mapped[Any] = mapped_column(JSON, nullable=True)  # what we answered inline (replayed to retries)
    attempt_id: Mapped[str | None] = mapped_column(String(36))
    tries: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (Index("ix_callbacks_status_received", "status", "received_at"),)


class Conversation(Base):
    """An in-app conversation: (advertiser, consumer, session) as producers name it, and the
    provider's ``VisitId`` once its Start call answered, so producers never handle VisitIds."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(36), default=DEFAULT_APP, index=True)
    provider: Mapped[str] = mapped_column(String(32))
    advertiser_id: Mapped[str] = mapped_column(String(100))
    consumer_id: Mapped[str] = mapped_column(String(100), index=True)
    session_id: Mapped[str] = mapped_column(String(100))
    visit_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("provider", "advertiser_id", "consumer_id", "session_id",
                                       name="uq_conversations_identity"),)


class ConversationMessage(Base):
    """One message in a conversation as we know it: ours (``out``, sent through an attempt)
    or an agent's (``in``, from the provider's ReceiveMessage callback)."""

    __tablename__ = "conversation_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    direction: Mapped[str] = mapped_column(String(3))  # out | in
    message_id: Mapped[str | None] = mapped_column(String(36))  # ours, for "out"
    attempt_id: Mapped[str | None] = mapped_column(String(36), unique=True)
    provider_message_id: Mapped[str | None] = mapped_column(String(100))
    text: Mapped[str | None] = mapped_column(Text)
    media_url: Mapped[str | None] = mapped_column(String(2048))
    agent_name: Mapped[str | None] = mapped_column(String(200))
    agent_image_url: Mapped[str | None] = mapped_column(String(2048))
    sent_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("conversation_id", "direction", "provider_message_id",
                                       name="uq_conversation_messages_provider_id"),)


class Flow(Base):
    """One saved version of a message flow definition; saving again adds a version, and a
    running flow keeps the version it started with."""

    __tablename__ = "flows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(String(36), default=DEFAULT_APP, index=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("app_id", "name", "version", name="uq_flows_version"),)


class FlowRun(Base):
    """One recipient walking through one flow version: where they are, what they answered.

    ``deadline_at`` is the current step's answer deadline (``on_timeout``), swept like attempt
    deadlines; ``steps`` is the result so far, posted to the producer at each end and flush.
    """

    __tablename__ = "flow_runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    flow_id: Mapped[int] = mapped_column(ForeignKey("flows.id"), index=True)
    app_id: Mapped[str] = mapped_column(String(36), default=DEFAULT_APP, index=True)
    contact: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"to": ..., "conversation": ...}
    contact_key: Mapped[str] = mapped_column(String(200), index=True)
    trigger: Mapped[str] = mapped_column(String(16), default="api")
    status: Mapped[str] = mapped_column(String(16), default="running")
    native: Mapped[bool] = mapped_column(default=False)
    provider_run_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    current_step: Mapped[str | None] = mapped_column(String(100))
    current_message_id: Mapped[str | None] = mapped_column(String(36), index=True)
    reasked: Mapped[int] = mapped_column(Integer, default=0)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    end_id: Mapped[str | None] = mapped_column(String(100))
    timed_out: Mapped[bool] = mapped_column(default=False)
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    # What the launch asked of every step's message (shared.flows.runtime.launch_fields):
    # send_at (the first step), valid_until, quiet_hours, priority, category.
    launch: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)

    flow: Mapped[Flow] = relationship(lazy="joined")


class FlowLink(Base):
    """An action link that starts a flow for the contact it was made for (``GET /l/<token>``)."""

    __tablename__ = "flow_links"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    flow_id: Mapped[int] = mapped_column(ForeignKey("flows.id"))
    app_id: Mapped[str] = mapped_column(String(36), default=DEFAULT_APP)
    contact: Mapped[dict[str, Any]] = mapped_column(JSON)
    single_use: Mapped[bool] = mapped_column(default=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime)
    run_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Campaign(Base):
    """One bulk request: shared content for many phones, each its own message
    (``messages.campaign_id``); see ``shared.campaigns``."""

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(36), default=DEFAULT_APP, index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    route: Mapped[list[str]] = mapped_column(JSON)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # the content, without recipients
    request_hash: Mapped[str | None] = mapped_column(String(64))  # the body the key came with
    total: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("app_id", "idempotency_key", name="uq_campaigns_app_idempotency"),)


class Template(Base):
    """One saved version of an app's message template (``shared.templates``): content per
    locale and channel; saving again adds a version, and a message records the one it used."""

    __tablename__ = "templates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(String(36), default=DEFAULT_APP, index=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("app_id", "name", "version",
                                       name="uq_templates_version"),)
