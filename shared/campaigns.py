"""Campaigns: one request, many phones, one message per phone (the bulk path's front half).

Why a separate path: creating 10,000 messages one ``POST /v1/messages`` at a time costs 10,000
HTTP round trips and 10,000 small transactions before anything is sent. Here the content is
validated once, each phone once, and every row (campaign, messages, their ``queued`` events
and webhook deliveries, first-hop attempts) goes in with a handful of bulk inserts in ONE
transaction, so a campaign exists whole or not at all. The worker then sends the attempts in
batches through the gateway's multi-phone request (``worker.bulk``).

Each phone still gets its own message: its own id, status, timeline, report and fallback.
Message ids and idempotency keys derive from the campaign (``<campaign key>:<phone>``), so a
retried campaign request creates nothing new, and a message is the same one a producer would
get from ``send(idempotency_key="<campaign key>:<phone>")``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.apps import delivery_target
from shared.messages import app_quiet_hours, check_replay, request_hash, resolve_timing
from shared.lifecycle import AttemptStatus, MessageStatus
from shared.models import DEFAULT_APP, Attempt, Campaign, Delivery, Event, Message, utcnow
from shared.providers import provider_name
from shared.schemas import (
    PHONE_CHANNELS,
    Recipient,
    SendRequest,
    Strict,
    _field_error,
)

MAX_RECIPIENTS = 10_000
FIRST_HOPS = frozenset({"viber", "sms"})  # the channels whose gateway takes many phones
_NAMESPACE = uuid.UUID("0b6c1f0e-3d57-4f5c-9a0e-6a8d2f1c7b42")
_PER_MESSAGE = ("to", "metadata", "idempotency_key", "recipients")


class CampaignRecipient(Strict):
    """One phone of a campaign, with metadata merged over the campaign's own."""

    phone: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    # With a template: this phone's placeholders (over the template's ``data``) and locale.
    data: dict[str, Any] = Field(default_factory=dict)
    locale: str | None = Field(default=None, min_length=2, max_length=35)

    @field_validator("phone")
    @classmethod
    def _normalise(cls, value: str) -> str:
        """The same E.164 normalisation as a single message's ``to.phone``."""
        try:
            phone = Recipient(phone=value).phone
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
        assert phone is not None
        return phone


class CampaignRequest(SendRequest):
    """A send request's content once, plus up to 10,000 recipients (phones only).

    It is a ``SendRequest`` so every content rule (text, sms_text, button, image, deadlines)
    is checked by the same validators with the same field names.
    """

    recipients: list[CampaignRecipient] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    # Room for ":<phone>" within a message's 200-character idempotency key.
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=150)

    @model_validator(mode="after")
    def _recipient_fits_route(self) -> CampaignRequest:  # replaces SendRequest's check
        if "to" in self.model_fields_set:
            raise _field_error("to", "a campaign names its phones in recipients")
        if self.route[0] not in FIRST_HOPS:
            raise _field_error("route", "a campaign's first hop must be viber or sms")
        if not set(self.route) <= PHONE_CHANNELS:
            raise _field_error("route", "a campaign reaches phones only: viber and sms")
        return self

    @model_validator(mode="after")
    def _data_needs_a_template(self) -> CampaignRequest:
        if self.template is None:
            for index, recipient in enumerate(self.recipients):
                if recipient.data or recipient.locale:
                    raise _field_error(f"recipients.{index}.data",
                                       "data and locale need a template")
        return self

    @model_validator(mode="after")
    def _unique_phones(self) -> CampaignRequest:
        seen: dict[str, int] = {}
        for index, recipient in enumerate(self.recipients):
            if recipient.phone in seen:
                raise _field_error(f"recipients.{index}.phone",
                                   f"duplicate of recipients.{seen[recipient.phone]}.phone")
            seen[recipient.phone] = index
        return self

    def content(self) -> dict[str, Any]:
        """The request fields every message of the campaign shares (JSON-ready)."""
        data = self.model_dump(mode="json", exclude=set(_PER_MESSAGE))
        data["metadata"] = dict(self.metadata)
        return data

    def message_request(self, content: dict[str, Any], recipient: CampaignRecipient,
                        ) -> dict[str, Any]:
        """One phone's message request: what ``SendRequest`` would hold for it."""
        key = f"{self.idempotency_key}:{recipient.phone}" if self.idempotency_key else None
        return {**content, "to": {"phone": recipient.phone, "email": None, "app_id": None,
                                  "timezone": None},
                "metadata": {**content["metadata"], **recipient.metadata},
                "idempotency_key": key}


def new_campaign_id(idempotency_key: str | None, app_id: str = DEFAULT_APP) -> str:
    """Keys are per app, like message keys; no key: a fresh id."""
    if idempotency_key:
        return str(uuid.uuid5(_NAMESPACE, f"{app_id}:{idempotency_key}"))
    return str(uuid.uuid4())


def message_id_for(campaign_id: str, request: CampaignRequest, phone: str,
                   app_id: str) -> str:
    """With a campaign key: the id ``send()`` would give ``<key>:<phone>``; else one derived
    from the campaign id, so a redelivered accept task inserts the same rows."""
    from shared.messages import new_message_id

    if request.idempotency_key:
        return new_message_id(f"{request.idempotency_key}:{phone}", app_id)
    return str(uuid.uuid5(_NAMESPACE, f"{campaign_id}:{phone}"))


@dataclass(frozen=True)
class Created:
    """What ``insert_campaign`` did: the campaign, and the attempts to send (None: it
    existed already and nothing was inserted)."""

    campaign: Campaign
    attempt_ids: list[str] | None

    @property
    def created(self) -> bool:
        return self.attempt_ids is not None


def create_campaign(session: Session, campaign_id: str, request: CampaignRequest,
                    app_id: str = DEFAULT_APP) -> Created:
    """``insert_campaign``, then commit, so the caller publishes the send batches only once
    the rows are durable; a concurrent identical request that won the race is returned as
    existing (nothing inserted)."""
    try:
        created = insert_campaign(session, campaign_id, request, app_id)
        session.commit()
    except IntegrityError:  # a concurrent identical request won the race
        session.rollback()
        raced = session.get(Campaign, campaign_id)
        if raced is None:
            raise
        check_campaign_replay(raced, request)
        return Created(raced, None)
    return created


def check_campaign_replay(existing: Campaign, request: CampaignRequest) -> None:
    """``shared.messages.check_replay`` for a campaign: its key reused with another body
    (other recipients, other content) raises ``IdempotencyConflict``."""
    check_replay(existing.request_hash, request_hash(request.model_dump(mode="json")),
                 request.idempotency_key)


def insert_campaign(session: Session, campaign_id: str, request: CampaignRequest,
                    app_id: str = DEFAULT_APP) -> Created:
    """Insert the campaign, its messages, events, deliveries and first-hop attempts without
    committing, for a caller whose unit of work commits them with the batches' tasks.

    Messages whose id exists already (the same ``<key>:<phone>`` sent on its own before) are
    left alone and not counted. A concurrent insert of the same campaign surfaces as an
    ``IntegrityError`` (at the flush here, or at the caller's commit). An existing campaign
    whose key came with another body raises ``IdempotencyConflict``.
    """
    existing = session.get(Campaign, campaign_id)
    if existing is not None:
        check_campaign_replay(existing, request)
        return Created(existing, None)
    now = utcnow()
    rows = _message_rows(session, campaign_id, request, app_id, now)
    campaign = Campaign(id=campaign_id, app_id=app_id, idempotency_key=request.idempotency_key,
                        route=list(request.route), request=request.content(),
                        request_hash=request_hash(request.model_dump(mode="json")),
                        total=len(rows), created_at=now)
    session.add(campaign)
    session.flush()
    return Created(campaign, _insert_rows(session, rows, request, app_id, now))


def _message_rows(session: Session, campaign_id: str, request: CampaignRequest, app_id: str,
                  now: Any) -> list[dict[str, Any]]:
    """The messages rows, minus ids that exist already."""
    content = request.content()
    callback_url = content.get("callback_url")
    app_default = app_quiet_hours(session, request, app_id)
    template = _template_row(session, request, app_id)
    rows = []
    for index, recipient in enumerate(request.recipients):
        data = _recipient_template(request.message_request(content, recipient), recipient)
        stored, use = _rendered(session, app_id, data, template, index)
        timing = resolve_timing(request, now, recipient.phone, None, app_default)
        rows.append({
            "id": message_id_for(campaign_id, request, recipient.phone, app_id),
            "app_id": app_id, "recipient": recipient.phone,
            "status": MessageStatus.SCHEDULED if timing.send_at else MessageStatus.QUEUED,
            "send_at": timing.send_at, "valid_until": timing.valid_until,
            "priority": request.priority, "quiet_hours": timing.quiet_hours,
            "route": list(request.route), "hop": 0, "request": stored,
            "template_name": use and use.name, "template_version": use and use.version,
            "template_locale": use and use.locale,
            "idempotency_key": data["idempotency_key"], "callback_url": callback_url,
            "request_hash": request_hash(data),  # what send() of this phone's request hashes
            "event_seq": 1, "campaign_id": campaign_id, "created_at": now, "updated_at": now})
    taken = _existing_ids(session, [r["id"] for r in rows])
    return [r for r in rows if r["id"] not in taken]


def _recipient_template(data: dict[str, Any], recipient: CampaignRecipient) -> dict[str, Any]:
    """A phone's template reference: its ``data`` over the campaign's, its ``locale`` (else
    the campaign's); hashed like ``send()`` of that phone's request would be."""
    template = data.get("template")
    if not template:
        return data
    return {**data, "template": {**template, "data": {**template["data"], **recipient.data},
                                 "locale": recipient.locale or template["locale"]}}


def _template_row(session: Session, request: CampaignRequest, app_id: str) -> Any:
    """The campaign's template version, loaded once for all its phones (None: no template)."""
    if request.template is None:
        return None
    from shared.templates import require_template

    return require_template(session, app_id, request.template.name, request.template.version)


def _rendered(session: Session, app_id: str, data: dict[str, Any], template: Any,
              index: int) -> tuple[dict[str, Any], Any]:
    """One phone's request as stored: its template rendered in with its own data and locale
    (``shared.templates.render_request``), refusals naming ``recipients.<n>``."""
    if template is None:
        return data, None
    from shared.templates import TemplateError, render_request

    try:
        request, use = render_request(session, app_id, SendRequest.model_validate(data),
                                      template)
    except TemplateError as exc:
        raise TemplateError([{**e, "field": f"recipients.{index}.{e['field']}"}
                             for e in exc.errors]) from None
    return request.model_dump(mode="json"), use


def _existing_ids(session: Session, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in chunks(list(ids), 1000):
        found.update(session.scalars(select(Message.id).where(Message.id.in_(chunk))))
    return found


def _insert_rows(session: Session, rows: list[dict[str, Any]], request: CampaignRequest,
                 app_id: str, now: Any) -> list[str]:
    """Bulk inserts: messages, ``queued`` (or ``scheduled``) events (+ webhook deliveries),
    first attempts; returns the attempts to send now. A scheduled campaign's attempts wait
    with ``not_before`` at its ``send_at``; the release sweep sends them in batches then."""
    if not rows:
        return []
    session.execute(insert(Message), rows)
    route = list(request.route)
    events = [{"message_id": r["id"], "app_id": app_id, "seq": 1,
               **_first_event(r, route), "created_at": now} for r in rows]
    url = rows[0]["callback_url"] or delivery_target(session, app_id)[0]
    if url:
        event_ids = session.scalars(insert(Event).returning(
            Event.id, sort_by_parameter_order=True), events).all()
        session.execute(insert(Delivery), [
            {"event_id": event_id, "message_id": r["id"], "url": url, "next_attempt_at": now,
             "status": "pending", "attempts": 0, "created_at": now}
            for event_id, r in zip(event_ids, rows, strict=True)])
    else:
        session.execute(insert(Event), events)
    channel = route[0]
    attempts = [{"id": str(uuid.uuid4()), "message_id": r["id"], "hop": 0, "channel": channel,
                 "provider": provider_name(channel), "status": AttemptStatus.PENDING,
                 "retries": 0, "not_before": r["send_at"],
                 "created_at": now, "updated_at": now} for r in rows]
    session.execute(insert(Attempt), attempts)
    return [a["id"] for a in attempts if a["not_before"] is None]


def _first_event(row: dict[str, Any], route: list[str]) -> dict[str, Any]:
    """``queued``, or ``scheduled`` with its time, like ``shared.messages.insert_message``."""
    if row["send_at"] is None:
        return {"type": "queued", "payload": {"route": route}}
    return {"type": "scheduled",
            "payload": {"route": route, "send_at": row["send_at"].isoformat() + "Z"}}


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), max(1, size)):
        yield items[start:start + size]


def counts(session: Session, campaign_id: str) -> dict[str, Any]:
    """Messages by status, and attempts by channel and status (fallbacks show up as sms)."""
    by_status = dict(session.execute(
        select(Message.status, func.count()).where(Message.campaign_id == campaign_id)
        .group_by(Message.status)).all())
    attempts: dict[str, dict[str, int]] = {}
    for channel, status, count in session.execute(
            select(Attempt.channel, Attempt.status, func.count())
            .join(Message, Message.id == Attempt.message_id)
            .where(Message.campaign_id == campaign_id)
            .group_by(Attempt.channel, Attempt.status)):
        attempts.setdefault(channel, {})[status] = count
    return {"messages": by_status, "attempts": attempts}


def campaign_view(session: Session, campaign: Campaign) -> dict[str, Any]:
    """``GET /v1/campaigns/<id>``: what was asked, and where its messages are now."""
    tally = counts(session, campaign.id)
    return {"id": campaign.id, "idempotency_key": campaign.idempotency_key,
            "route": campaign.route, "messages": campaign.total,
            "created_at": campaign.created_at.isoformat() + "Z",
            "counts": tally["messages"], "attempts": tally["attempts"]}
