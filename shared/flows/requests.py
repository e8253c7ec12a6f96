"""What producers send to run flows: whom to run a flow for, and action links to make."""

from __future__ import annotations

from pydantic import Field, model_validator

from shared.schemas import ConversationRef, Recipient, Strict, Timing, _field_error


class FlowContact(Strict):
    """One recipient of a flow: a phone (Viber/SMS), an e-mail (messenger) or an in-app
    consumer, whichever the flow's route needs."""

    to: Recipient = Field(default_factory=Recipient)
    conversation: ConversationRef | None = None

    @model_validator(mode="after")
    def _someone(self) -> FlowContact:
        if not (self.to.phone or self.to.email or self.conversation):
            raise _field_error("to", "give to.phone, to.email or conversation.consumer_id")
        return self



def contact_key(contact: dict) -> str:
    """``+32...``, ``someone@example.com`` or ``inapp:<consumer id>``."""
    to = contact.get("to") or {}
    if to.get("phone") or to.get("email"):
        return str(to.get("phone") or to.get("email"))
    return f"inapp:{(contact.get('conversation') or {}).get('consumer_id', '')}"


class FlowStartRequest(Timing):
    """Launch a flow for a list of contacts, or for every contact with consent on the flow's
    first channel (``all``). The timing fields apply to its steps' messages: the first step
    waits for ``send_at``; no step starts after ``valid_until``; quiet hours, priority and
    ``category`` (consent) hold for each."""

    category: str | None = Field(default=None, min_length=1, max_length=64,
                                 description="what kind of messages its steps are (consent)")

    contacts: list[FlowContact] = Field(default_factory=list, max_length=1000)
    all: bool = False
    version: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_way(self) -> FlowStartRequest:
        if bool(self.contacts) == self.all:
            raise _field_error("contacts", "give contacts, or all: true (not both)")
        return self


class FlowLinkRequest(Strict):
    """An action link for one contact: single-use by default, optionally expiring."""

    contact: FlowContact
    single_use: bool = True
    expires_in: int | None = Field(default=None, ge=60, le=90 * 86400)
