"""What every provider adapter offers, and the errors that tell the worker what to do next.

The worker never looks at HTTP codes or provider error numbers: an adapter turns them into
one of three exceptions, and the retry/fallback policy lives in one place (the attempt task).

* ``RetryableError``: sending again cannot duplicate, because the request surely did not take
  effect (connection refused, the gateway's "temporary error", 429/503), or because the
  provider dedupes on our attempt id (the messenger replays a JSON-RPC id's result for a day;
  our retries end long before that: at most ``max_send_retries`` with capped backoff).
* ``PermanentError``: the provider refused this attempt; do not resend it (the route may move on).
* ``AmbiguousError``: the request may have reached the provider (read timeout, connection
  dropped after sending, unreadable reply). Resending could double-send, so the attempt stays
  ``submitted`` and its persisted deadline decides; any report still matches by attempt id.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import SecretStr

from shared.settings import get_settings

if TYPE_CHECKING:
    from shared.schemas import SendRequest

# Events about a message we sent (matched to an attempt) ...
EventKind = Literal["delivered", "seen", "undelivered", "expired", "replied", "interim",
                    # ... and events about a contact or a conversation, matched to no attempt
                    "contact", "poke", "flow_result", "test",
                    # ... and a message a person (e.g. an in-app agent) sent us
                    "inbound"]
MESSAGE_EVENT_KINDS = frozenset({"delivered", "seen", "undelivered", "expired", "replied",
                                 "interim"})


REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 6  # shorter configured values are not redacted (they would mangle text)


def configured_secrets() -> list[str]:
    """Every secret in the settings (each ``SecretStr`` and each API key), longest first."""
    settings = get_settings()
    values = (getattr(settings, name) for name in type(settings).model_fields)
    secrets = {v.get_secret_value() for v in values if isinstance(v, SecretStr)}
    secrets.update(settings.api_key_list)
    return sorted((s for s in secrets if len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every configured secret replaced by ``[redacted]``."""
    for secret in configured_secrets():
        text = text.replace(secret, REDACTED)
    return text


class ProviderError(Exception):
    """A failed provider call. ``reason`` is our normalised reason (e.g. ``auth_error``).

    ``detail`` quotes what went wrong, and that may quote our request (a transport error, a
    provider echoing the credentials it refused); it reaches the timeline, API answers,
    producers' webhooks and logs, so configured secrets are redacted from it here, once for
    every adapter.
    """

    def __init__(self, reason: str, detail: str = "", code: str | None = None) -> None:
        detail = redact(detail) if detail else detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.code = code


class RetryableError(ProviderError):
    """Safe to send again (see the module docstring); ``retry_after`` (seconds) when the
    provider said how long to wait."""

    def __init__(
        self, reason: str, detail: str = "", code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason, detail, code)
        self.retry_after = retry_after


class PermanentError(ProviderError):
    """The provider refused this request; sending it again would be refused again."""


class AccountRefusal(PermanentError):
    """The provider refused the account, not this message (bad credentials, no balance):
    every message to it would be refused alike until someone fixes the account. The worker
    opens the provider's circuit for all its messages instead of failing them one by one;
    their deadlines keep running, so fallback to another channel still happens."""


class AmbiguousError(ProviderError):
    """The request may have arrived. Never resend blindly; let the deadline settle it."""


class CallbackError(ValueError):
    """A provider callback we cannot read; ``field`` names the offending parameter.

    ``dedupe_key`` is set when the callback still carries the provider's own id (e.g. the
    messenger's JSON-RPC id): a provider that retries it is then not stored again.
    """

    def __init__(self, field: str, message: str, dedupe_key: str | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.dedupe_key = dedupe_key


@dataclass(frozen=True)
class OutboundMessage:
    """One attempt's content, already validated and normalised by ``shared.schemas``."""

    attempt_id: str  # our stable id; travels as p_transaction_id / ExternalMessageId / JSON-RPC id
    channel: str  # "viber" | "sms" | ...
    phones: tuple[str, ...]  # international digits, no "+"
    text: str | None = None
    sms_text: str | None = None  # Viber: what the SMS carries after expiry (expiry_txt)
    image_id: str | None = None
    image_url: str | None = None
    button_text: str | None = None
    button_url: str | None = None
    sender: str | None = None
    dlr_timeout: int | None = None
    email: str | None = None  # messenger recipient
    app_id: str | None = None  # messenger app the recipient uses
    # Channel-specific content, validated by shared.schemas (e.g. the messenger's buttons,
    # flags, alert settings, branding, tag, thread, attachments).
    content: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    """An accepted request: one provider message id per recipient."""

    provider_message_ids: dict[str, str]  # phone (or recipient key) -> provider message id
    code: str = "0"
    detail: str = ""
    raw: str = ""
    # Conversation identifiers the provider assigned (e.g. the in-app VisitId), to remember.
    conversation: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderEvent:
    """A callback normalised: what happened, to which provider message or attempt."""

    kind: EventKind
    dedupe_key: str
    provider_message_id: str | None = None
    attempt_ref: str | None = None  # our attempt id, echoed back by the provider
    reason: str | None = None  # normalised, e.g. "viber_user_not_found"
    text: str | None = None  # reply text
    status: str | None = None  # provider's own status value, for the timeline
    occurred_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    # Structured extras: e.g. {"button_id": ..., "dismissed": ...} on a reply, or the contact
    # ({"email", "app_id", "change"}) on a friendship callback.
    data: Mapping[str, Any] = field(default_factory=dict)
    # The channel the report is about, when its format says so; None: the matched attempt's.
    # A provider that sent a later hop itself (the gateway's own SMS) reports it under the
    # first hop's ids, and this names the hop it belongs to.
    channel: str | None = None


def require_channel(channels: tuple[str, ...], channel: str) -> None:
    """Refuse a channel the adapter does not serve, before anything is built or sent: the
    same route sent again would be refused again, so it is a ``PermanentError``."""
    if channel not in channels:
        raise PermanentError("unsupported_channel", channel)


class KeyValueCache(Protocol):
    """Where uploaded image ids are remembered (a dict wrapper, a Redis client)."""

    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...


class ImageCache(KeyValueCache, Protocol):
    """Uploaded image ids, and a lock per image: a campaign's sends race for the same image,
    and holding ``lock(key)`` around look-up, upload and remember makes one of them upload it
    while the others wait and then find its id."""

    def lock(self, key: str) -> AbstractContextManager[object]: ...


@dataclass(frozen=True)
class SendContext:
    """What the engine knows about one attempt beyond the request, so an adapter can build
    its content without reading the database itself."""

    attempt_id: str  # travels as the provider's idempotency/correlation id
    channel: str  # this hop's channel (one of the adapter's ``channels``)
    app_id: str  # the Switchboard app (tenant) the message belongs to
    # The resolved in-app conversation: conversation_id, advertiser_id, consumer_id,
    # session_id, visit_id, reply_to, consumer, listing_details. Only for conversation hops.
    conversation: Mapping[str, Any] | None = None
    images: ImageCache | None = None  # for adapters that upload images before sending
    # How many times this attempt was already retried (0 on its first send): an adapter
    # whose provider caches answers by request id (the messenger) picks the id from it.
    retries: int = 0


@dataclass(frozen=True)
class Recipient:
    """Who the consent registry (``shared.contacts``: channel, address, app id) knows this
    hop's recipient as, so the engine can check consent without knowing the provider."""

    address: str  # e.g. the messenger e-mail, or the phone digits without "+"
    scope: str  # e.g. the messenger app id; "" where the provider has no such notion


@dataclass(frozen=True)
class EndedHop:
    """A hop that ended badly, as the route's next step sees it: what its provider needs to
    say whether it carries the route on by itself."""

    channel: str
    status: str  # undelivered | expired | failed
    reason: str | None
    provider_message_id: str | None  # set: the provider accepted the request


@runtime_checkable
class CarriesFallback(Protocol):
    """An optional capability: a provider account that sends a route's next hop itself (the
    gateway's account-side SMS after an undelivered Viber message). The route asks it before
    sending that hop, so the person does not get it twice."""

    def carried_hop(self, ended: EndedHop, request: SendRequest,
                    channel: str) -> dict[str, Any] | None:
        """None: the hop on ``channel`` after ``ended`` is ours to send. Otherwise the
        provider sends it itself, and this is what it sends, for the timeline."""
        ...


class Provider(Protocol):
    """A provider adapter. Stateless apart from its configuration; safe to share."""

    name: str
    channels: tuple[str, ...]
    # True when hops join a provider conversation (the first one opens it, the next ones
    # need its id), so the engine sends them to one consumer one at a time.
    uses_conversations: bool

    def recipient(self, request: SendRequest, channel: str) -> Recipient | None:
        """This hop's recipient as the consent registry knows it; None when the provider
        has no registry. Never touches the database."""
        ...

    def outbound(self, request: SendRequest, context: SendContext) -> OutboundMessage:
        """The provider's content for one attempt of ``request``, built from the normalised
        request and the engine's ``context``. Raises ``PermanentError`` (content this
        provider cannot send) or ``RetryableError`` (e.g. an image upload that failed)
        before anything is sent; ValueError when ``context`` lacks what this hop needs (a
        bug in the caller, not a refusal)."""
        ...

    def send(self, message: OutboundMessage) -> SendResult:
        """Call the provider once. Raises one of the ``ProviderError`` subclasses."""
        ...

    def parse_callback(self, params: Mapping[str, Any]) -> ProviderEvent:
        """Read one stored callback (form fields, or a JSON body). Raises ``CallbackError``
        naming the bad field."""
        ...

    def summarize(self, message: OutboundMessage) -> dict[str, Any]:
        """The request as it will be sent, with secrets and signatures redacted, for the
        message timeline ("what exactly did we send?")."""
        ...
