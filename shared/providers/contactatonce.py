"""The ContactAtOnce!-style In-App Messaging REST service: conversations with dealer agents.

Everything specific to this provider lives here (wire format: the team's copy of the CAO
"In App Messaging" page, summarised in ``guide/providers.md`` §3), so the worker only ever sees
``SendResult``, ``ProviderEvent`` and the three ``ProviderError`` classes. The adapter is
stateless apart from its configuration and is safe to share.

* A consumer's first message opens a conversation (``Start``); CAO answers with its
  ``VisitId``, which the caller must remember (``SendResult.conversation``) to send the next
  messages of that conversation (``SendMessage``).
* Every call carries ``Authorization: Basic <api key>`` (the key itself, not a base64
  ``user:password``) and ``Accept: version=2;``. Replies are JSON with ``Status`` 0 (success)
  or 1 (failure, with a ``FailureDescription``); numbers may arrive as strings or ints.
* CAO documents no idempotency: whether a repeated ``ExternalMessageId`` is deduplicated is
  unknown, so a send is only ``RetryableError`` when it surely did not take effect (no
  connection, 429/502/503/504, a refusal that says it is temporary) and ``AmbiguousError``
  when it may have (read timeout, dropped connection, HTTP 500, an unreadable 2xx reply).
  The two reads (``GetConversations``, ``GetTranscript``) are harmless to repeat, so there the
  "may have arrived" cases are retryable.
* CAO calls us back with delivery/read receipts (``MessageStatus``) and agent messages
  (``ReceiveMessage``). The document's samples of both carry ``Authorization: Basic
  {YOUR_API_KEY}``, the same key we call with, so the inbound key defaults to the API key
  (``Settings.effective_contactatonce_inbound_key``); how the key is encoded is not shown
  beyond that sample, so ``verify_basic_key`` accepts it raw and as base64 of ``key``,
  ``key:``, ``:key`` or ``user:key``.
* Receipts name our message twice: CAO's ``MessageId`` for it and our ``ExternalMessageId``
  (the attempt id, required in the receipt). The worker matches the first, then the second.
  The ``MessageId`` we put in ``SendMessage`` is an agent's message, never one of ours (see
  ``send_message_body``), so it is not an id any of our attempts is known by; the document
  says a receipt's ``MessageId`` is unique to the message it reports.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from shared.providers.base import (
    AccountRefusal,
    REDACTED,
    AmbiguousError,
    CallbackError,
    EventKind,
    OutboundMessage,
    PermanentError,
    ProviderError,
    ProviderEvent,
    Recipient,
    RetryableError,
    SendContext,
    SendResult,
    require_channel,
)
from shared.providers.http import classify_http_status, echoed, http_request, short

if TYPE_CHECKING:
    from shared.schemas import SendRequest
    from shared.settings import Settings

API_PATH = "api/v1.0/AsyncConversation/"
ACCEPT = "version=2;"  # the trailing ";" is in every CAO header sample
CONTENT_TYPE = "application/json; charset=utf-8"
LISTING_SEPARATOR = "\u00ff"  # "ÿ" between ListingDetails name=value pairs
RAW_LIMIT = 2000
# A refusal whose description contains one of these is worth retrying (case-insensitive).
TEMPORARY_HINTS = ("try again", "temporar", "timeout", "timed out", "busy", "unavailable")

# Conversation ``Status`` of GetConversations items (guide §3.1).
CONVERSATION_STATUS = {0: "active", 1: "closed", 2: "paused", 3: "awaiting_department_selection"}
# ``MessageStatus`` of receipts: 0 Unknown, 1 Delivered, 2 Read.
MESSAGE_STATUS_KINDS: dict[int, EventKind] = {0: "interim", 1: "delivered", 2: "seen"}

# OutboundMessage.content["consumer"] key -> Start field
_CONSUMER_FIELDS = (("device", "Device"), ("os_version", "OSVersion"),
                    ("first_name", "ConsumerFirstName"), ("last_name", "ConsumerLastName"),
                    ("phone", "ConsumerPhoneNumber"))
_DIGITS = re.compile(r"[0-9]+")
_US_FORMATS = ("%m/%d/%Y %I:%M %p", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S",
               "%m/%d/%Y %H:%M", "%m/%d/%Y")


# --------------------------------------------------------------------------------------
# Request building
# --------------------------------------------------------------------------------------

def listing_details(details: Mapping[str, Any] | None) -> str | None:
    """``name=valueÿname=value``, or None when there is nothing to send.

    ValueError (TypeError) for anything the receiving side could not split back unambiguously: a
    separator in a name or value, ``=`` or emptiness in a name, a non-string.
    """
    if not details:
        return None
    if not isinstance(details, Mapping):
        raise TypeError("listing_details must be an object")
    pairs = []
    for name, value in details.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"listing_details {name!r}: names and values must be strings")
        if not name or "=" in name or LISTING_SEPARATOR in name:
            raise ValueError(f"listing_details name {name!r} is empty or holds '=' or 'ÿ'")
        if LISTING_SEPARATOR in value:
            raise ValueError(f"listing_details {name!r}: value holds the separator 'ÿ'")
        pairs.append(f"{name}={value}")
    return LISTING_SEPARATOR.join(pairs)


def _required(content: Mapping[str, Any], key: str) -> str:
    value = content.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} is required (a non-empty string)")
    return value


def _optional(mapping: Mapping[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _wire_visit_id(visit_id: str) -> int | str:
    """CAO types VisitId as Int: send digits as a JSON number, anything else as given."""
    return int(visit_id) if _DIGITS.fullmatch(visit_id) else visit_id


def start_body(msg: OutboundMessage, advertiser_id: str) -> dict[str, Any]:
    """The ``Start`` body in the doc's field order; absent optionals are left out."""
    content = msg.content
    consumer = content.get("consumer") or {}
    if not isinstance(consumer, Mapping):
        raise TypeError("consumer must be an object")
    body: dict[str, Any] = {
        "AdvertiserId": content.get("advertiser_id") or advertiser_id,
        "ConsumerId": _required(content, "consumer_id"),
        "SessionId": _required(content, "session_id"),
        "ExternalMessageId": msg.attempt_id,
        "Message": msg.text,
    }
    if not isinstance(body["AdvertiserId"], str) or not body["AdvertiserId"]:
        raise ValueError("advertiser_id is required (a non-empty string)")
    for key, wire in _CONSUMER_FIELDS:
        value = _optional(consumer, key)
        if value is not None:
            body[wire] = value
    details = listing_details(content.get("listing_details"))
    if details is not None:
        body["ListingDetails"] = details
    return body


def send_message_body(msg: OutboundMessage) -> dict[str, Any]:
    """The ``SendMessage`` body, in the doc's field order.

    ``MessageId`` is required, and the document defines it as the "Unique ID assigned to the
    Message by ContactAtOnce": it is CAO's to assign, so we only ever put a CAO id there. The
    one we can name is the agents' latest message in this conversation (``reply_to``, from
    their ReceiveMessage). Before any agent has written there is none, and the field goes as
    an empty string: present, as the table requires, and claiming no id. Our attempt id
    already travels in ``ExternalMessageId``, the publisher's field; putting it in
    ``MessageId`` too would name a message CAO never assigned.
    """
    content = msg.content
    visit_id = content.get("visit_id")
    if isinstance(visit_id, int) and not isinstance(visit_id, bool):
        visit_id = str(visit_id)
    return {
        "VisitId": _wire_visit_id(_required({"visit_id": visit_id}, "visit_id")),
        "MessageId": _optional(content, "reply_to") or "",
        "ExternalMessageId": msg.attempt_id,
        "Message": msg.text,
        "SessionId": _required(content, "session_id"),
    }


# --------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------

def _status_code(value: Any) -> int | None:
    """``Status`` as an int (0 / "0" / 1 / "1" ...), or None when unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value.strip())
    return None


def refusal(description: str) -> ProviderError:
    """``Status: 1``: permanent, unless CAO's description says it is temporary."""
    lowered = description.lower()
    if any(hint in lowered for hint in TEMPORARY_HINTS):
        return RetryableError("temporary_error", description, code="1")
    return PermanentError("provider_refused", description, code="1")


def _description(data: Mapping[str, Any]) -> str:
    value = data.get("FailureDescription")
    return "" if value is None else str(value)


def check_reply(text: str, *, idempotent: bool) -> dict[str, Any]:
    """The JSON object of a 2xx reply with ``Status`` 0, or the error it means.

    An unreadable reply (not JSON, no readable Status, an unknown Status) says nothing about
    whether a send took effect, so it is ambiguous unless the call was a harmless read.
    """
    unreadable = RetryableError if idempotent else AmbiguousError
    try:
        data = json.loads(text)
    except ValueError:
        raise unreadable("unreadable_response", short(text)) from None
    if not isinstance(data, dict):
        raise unreadable("unreadable_response", short(text))
    status = _status_code(data.get("Status"))
    if status == 1:
        raise refusal(_description(data))
    if status != 0:
        raise unreadable("unreadable_response", short(f"Status {data.get('Status')!r}: {text}"))
    return data


def http_error(resp: requests.Response, *, idempotent: bool) -> ProviderError | None:
    """None for 2xx; else the error the HTTP status implies, with CAO's FailureDescription
    as detail when the body has one. 401/403 mean the API key is wrong: ``auth_error``."""
    status = resp.status_code
    if 200 <= status < 300:
        return None
    detail = _body_description(resp.text) or short(resp.text, 200)
    code = f"http_{status}"
    if status in (401, 403):
        return AccountRefusal("auth_error", detail, code=code)
    error = classify_http_status(resp, idempotent=idempotent)
    assert error is not None
    if isinstance(error, RetryableError):
        return RetryableError(error.reason, detail, code=code, retry_after=error.retry_after)
    return type(error)(error.reason, detail, code=code)


def _body_description(text: str) -> str:
    """The FailureDescription of a JSON error body, else ""."""
    try:
        data = json.loads(text)
    except ValueError:
        return ""
    return _description(data) if isinstance(data, dict) else ""


def _loose_id(value: Any) -> str | None:
    """An id from a reply (string or int) as a string; None when absent or odd."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _loose_int(value: Any) -> int | None:
    return _status_code(value)


# --------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------

def parse_datetime(value: str) -> datetime:
    """ISO 8601 (trailing spaces, ``Z`` or offsets allowed) or the US ``6/15/2015 4:13 PM``
    style of the transcript samples, as a naive UTC datetime. ValueError otherwise.

    CAO does not say which zone its times are in; we read zone-less ones as UTC.
    """
    text = value.strip()
    if not text:
        raise ValueError("empty date")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        parsed = _us_datetime(text)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _us_datetime(text: str) -> datetime:
    for fmt in _US_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise ValueError(f"unreadable date {text!r}")


def _iso_or_raw(value: Any) -> str | None:
    """For listings: the ISO form when readable, else the provider's text as it came."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return parse_datetime(value).isoformat()
    except ValueError:
        return value


# --------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------

def _id_field(params: Mapping[str, Any], name: str, *, required: bool,
              digits: bool = False) -> str | None:
    """A numeric-or-string id: ints and strings accepted, normalised to a stripped string.

    Refused: bools, floats with a fraction, empty strings, other types, and (``digits``)
    anything but ASCII digits.
    """
    value = params.get(name)
    if value is None:
        if required:
            raise CallbackError(name, "missing")
        return None
    if isinstance(value, bool):
        raise CallbackError(name, f"not an id: {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise CallbackError(name, f"not an integer: {value!r}")
        value = int(value)
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise CallbackError(name, f"not a string or number: {value!r}")
    if not text:
        raise CallbackError(name, "empty")
    if digits and not _DIGITS.fullmatch(text):
        raise CallbackError(name, f"not a number: {value!r}")
    return text


def _text_field(params: Mapping[str, Any], *names: str) -> str | None:
    """An optional string under the first of ``names`` present; "" reads as None."""
    for name in names:
        if params.get(name) is not None:
            value = params[name]
            if not isinstance(value, str):
                raise CallbackError(name, f"not a string: {value!r}")
            return value.strip() or None
    return None


def _occurred_at(params: Mapping[str, Any]) -> datetime | None:
    value = params.get("DateTime")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise CallbackError("DateTime", f"not a string: {value!r}")
    try:
        return parse_datetime(value)
    except ValueError:
        raise CallbackError("DateTime", f"unreadable date: {value!r}") from None


def _require_mapping(params: Any) -> Mapping[str, Any]:
    if not isinstance(params, Mapping):
        raise CallbackError("body", "not a JSON object")
    return params


def parse_message(params: Mapping[str, Any]) -> ProviderEvent:
    """A ``ReceiveMessage`` callback: an agent wrote to the consumer (kind ``inbound``).

    The doc marks AgentName/AgentImageUrl required, but we only require what we cannot do
    without; the sample spells ``AgentImageURL``, the table ``AgentImageUrl``: both are read.
    """
    params = _require_mapping(params)
    visit_id = _id_field(params, "VisitId", required=True, digits=True)
    message_id = _id_field(params, "MessageId", required=True)
    text = params.get("Message")
    if not isinstance(text, str):
        raise CallbackError("Message", "missing" if text is None else f"not a string: {text!r}")
    media_url = _text_field(params, "MediaURL", "MediaUrl")
    if not text.strip() and media_url is None:
        raise CallbackError("Message", "empty, and no MediaURL")
    data = {
        "visit_id": visit_id,
        "session_id": _id_field(params, "SessionId", required=False),
        "consumer_id": _id_field(params, "ConsumerId", required=False),
        "message_id": message_id,
        "media_url": media_url,
        "agent_name": _text_field(params, "AgentName"),
        "agent_image_url": _text_field(params, "AgentImageUrl", "AgentImageURL"),
    }
    return ProviderEvent(
        kind="inbound", dedupe_key=f"contactatonce:message:{message_id}", provider_message_id=message_id,
        text=text, occurred_at=_occurred_at(params), raw=dict(params), data=data,
    )


def _message_status(params: Mapping[str, Any]) -> int:
    value = params.get("MessageStatus")
    code = _status_code(value.strip() if isinstance(value, str) else value)
    if value is None:
        raise CallbackError("MessageStatus", "missing")
    if code not in MESSAGE_STATUS_KINDS:
        raise CallbackError("MessageStatus", f"unknown status {value!r} (known: 0, 1, 2)")
    return code


def parse_status(params: Mapping[str, Any]) -> ProviderEvent:
    """A ``MessageStatus`` receipt for one of our messages: 1 delivered, 2 read, 0 unknown."""
    params = _require_mapping(params)
    visit_id = _id_field(params, "VisitId", required=True, digits=True)
    attempt_ref = _id_field(params, "ExternalMessageId", required=True)
    message_id = _id_field(params, "MessageId", required=True)
    code = _message_status(params)
    data = {"visit_id": visit_id,
            "session_id": _id_field(params, "SessionId", required=False),
            "consumer_id": _id_field(params, "ConsumerId", required=False)}
    return ProviderEvent(
        kind=MESSAGE_STATUS_KINDS[code], dedupe_key=f"contactatonce:status:{message_id}:{code}",
        provider_message_id=message_id, attempt_ref=attempt_ref, status=str(code),
        occurred_at=_occurred_at(params), raw=dict(params), data=data,
    )


def parse_callback(params: Mapping[str, Any]) -> ProviderEvent:
    """Either callback: a body with ``MessageStatus`` is a receipt, anything else a message."""
    params = _require_mapping(params)
    return parse_status(params) if "MessageStatus" in params else parse_message(params)


# --------------------------------------------------------------------------------------
# Listings
# --------------------------------------------------------------------------------------

def normalise_conversation(item: Mapping[str, Any]) -> dict[str, Any]:
    """One ``AsynConversationItem`` in snake_case; status as int with its name."""
    status = _loose_int(item.get("Status"))
    return {
        "advertiser_id": _loose_id(item.get("AdvertiserId")),
        "advertiser_name": item.get("AdvertiserName"),
        "agent_name": item.get("AgentName"),
        "session_id": _loose_id(item.get("SessionId")),
        "visit_id": _loose_id(item.get("VisitId")),
        "last_message_at": _iso_or_raw(item.get("LastMessageDateTime")),
        "last_message": item.get("LastMessage"),
        "status": status,
        "status_name": CONVERSATION_STATUS.get(status) if status is not None else None,
    }


def normalise_transcript_message(item: Mapping[str, Any]) -> dict[str, Any]:
    """One ``AsynConversationMessage`` in snake_case ("" media URL reads as None)."""
    return {
        "timestamp": _iso_or_raw(item.get("TimeStamp")),
        "speaker_name": item.get("SpeakerName"),
        "speaker_role": item.get("SpeakerRole"),
        "message": item.get("Message"),
        "media_url": item.get("MediaURL") or item.get("MediaUrl") or None,
        "message_id": _loose_id(item.get("MessageId")),
        "external_message_id": _loose_id(item.get("ExternalMessageId")),
        "status": _loose_int(item.get("Status")),
    }


def _items(data: Mapping[str, Any], *names: str) -> list[Mapping[str, Any]]:
    """The list under the first of ``names`` that holds one; RetryableError if malformed."""
    for name in names:
        value = data.get(name)
        if isinstance(value, list):
            if not all(isinstance(item, Mapping) for item in value):
                raise RetryableError("unreadable_response", f"{name} holds a non-object")
            return value
        if value is not None:
            raise RetryableError("unreadable_response", f"{name} is not a list")
    return []


def normalise_transcript(data: Mapping[str, Any]) -> dict[str, Any]:
    """A GetTranscript reply; the doc's table says ``Message``, its sample ``Messages``."""
    messages = [normalise_transcript_message(m) for m in _items(data, "Messages", "Message")]
    num = _loose_int(data.get("NumMessages"))
    return {
        "visit_id": _loose_id(data.get("VisitId")),
        "consumer_id": _loose_id(data.get("ConsumerId")),
        "session_id": _loose_id(data.get("SessionId")),
        "num_messages": num if num is not None else len(messages),
        "total_unread": _loose_int(data.get("TotalUnreadConsumerMessages")),
        "messages": messages,
    }


# --------------------------------------------------------------------------------------
# Inbound authentication
# --------------------------------------------------------------------------------------

def _credential_candidates(credentials: str) -> list[str]:
    """What a Basic credential may carry the key as.

    The document's samples show ``Basic {YOUR_API_KEY}``: the key itself. Clients that build
    Basic auth the usual way send base64 of ``user:password``, with the key as the user and no
    password (``key:``), or as the password with any or no user (``user:key``, ``:key``), so
    those are read too; ``key:something`` is not (the password would be ignored).
    """
    candidates = [credentials]
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return candidates
    candidates.append(decoded)
    user, colon, password = decoded.partition(":")
    if colon:
        candidates.append(password if password else user)
    return candidates


def verify_basic_key(authorization: str | None, key: str) -> bool:
    """Whether an ``Authorization`` header presents ``key`` as Basic credentials.

    Every candidate is compared (constant time each, no early exit), so timing tells little.
    An empty configured key refuses everything.
    """
    if not key or not authorization:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "basic" or not credentials:
        return False
    expected = key.encode("utf-8")
    matched = False
    for candidate in _credential_candidates(credentials):
        matched |= hmac.compare_digest(candidate.encode("utf-8"), expected)
    return matched


# --------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------

class ContactAtOnceService:
    """One CAO publisher account: starts conversations, sends into them, reads them back."""

    name = "contactatonce"
    channels = ("inapp",)
    uses_conversations = True  # the first hop's Start opens the VisitId the next ones join

    def __init__(
        self, url: str, api_key: str, advertiser_id: str = "", inbound_key: str = "",
        timeout: float = 10.0, session: requests.Session | None = None,
    ) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self.api_key = api_key
        self.advertiser_id = advertiser_id
        self.inbound_key = inbound_key
        self.timeout = timeout
        self.session = session or requests.Session()

    @classmethod
    def from_settings(cls, settings: Settings) -> ContactAtOnceService:
        """The account the settings describe (the local simulator when no URL is set)."""
        return cls(
            url=settings.effective_contactatonce_url,
            api_key=settings.contactatonce_api_key.get_secret_value(),
            advertiser_id=settings.contactatonce_advertiser_id,
            inbound_key=settings.effective_contactatonce_inbound_key.get_secret_value(),
            timeout=settings.contactatonce_timeout_seconds,
        )

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Basic {self.api_key}", "Accept": ACCEPT,
                "Content-Type": CONTENT_TYPE}

    # --- HTTP ------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None,
                 *, idempotent: bool) -> tuple[dict[str, Any], str]:
        """(reply object, reply text) of one call with Status 0, or the error it means."""
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        resp = http_request(self.session, method, self.url + path, data=data,
                            headers=self._headers, timeout=self.timeout, idempotent=idempotent)
        with resp:
            text = resp.text
            error = http_error(resp, idempotent=idempotent)
        if error is not None:
            raise error
        return check_reply(text, idempotent=idempotent), text

    # --- from a send request -------------------------------------------------------------

    def recipient(self, request: SendRequest, channel: str) -> Recipient | None:
        """The conversation's consumer under its advertiser (the account the consent
        registry keys an in-app opt-out by); None when the request names no conversation."""
        require_channel(self.channels, channel)
        ref = request.conversation
        if ref is None:
            return None
        return Recipient(address=ref.consumer_id, scope=ref.advertiser_id or self.advertiser_id)

    def outbound(self, request: SendRequest, context: SendContext) -> OutboundMessage:
        """The channel's text and the conversation the engine resolved (``visit_id`` None:
        this hop opens it with ``Start``, else it joins with ``SendMessage``)."""
        require_channel(self.channels, context.channel)
        if context.conversation is None:
            raise ValueError("an in-app hop needs the resolved conversation in its "
                             "SendContext")
        return OutboundMessage(attempt_id=context.attempt_id, channel=context.channel,
                               phones=(), text=request.text_for(context.channel),
                               content=dict(context.conversation))

    # --- sending ---------------------------------------------------------------------------

    def build_request(self, msg: OutboundMessage) -> tuple[str, dict[str, Any]]:
        """(path under the base URL, JSON body): ``Start`` without a visit, else ``SendMessage``.

        Content we cannot send is a ``PermanentError("invalid_message")``: resending the same
        content would fail the same way.
        """
        require_channel(self.channels, msg.channel)
        if not isinstance(msg.text, str) or not msg.text.strip():
            raise PermanentError("invalid_message", "Message (text) is required")
        try:
            if msg.content.get("visit_id") is None:
                return API_PATH + "Start", start_body(msg, self.advertiser_id)
            return API_PATH + "SendMessage", send_message_body(msg)
        except (TypeError, ValueError) as exc:
            raise PermanentError("invalid_message", str(exc)) from None

    def summarize(self, msg: OutboundMessage) -> dict[str, Any]:
        """The request ``send`` makes, for the timeline; the API key is redacted."""
        path, body = self.build_request(msg)
        return {"method": "POST", "url": self.url + path, "path": "/" + path,
                "headers": {**self._headers, "Authorization": f"Basic {REDACTED}"},
                "body": body}

    def send(self, message: OutboundMessage) -> SendResult:
        """One POST, never retried here; see the module docstring for the classification."""
        path, body = self.build_request(message)
        data, text = self._request("POST", path, body, idempotent=False)
        visit_id = _loose_id(data.get("VisitId"))
        if visit_id is None and "VisitId" not in body:
            # Accepted, but we cannot address the conversation; it may exist, so let the
            # attempt's deadline settle it rather than opening a second one.
            raise AmbiguousError("no_visit_id", short(text))
        conversation = {
            "visit_id": visit_id or str(body["VisitId"]),
            "consumer_id": _loose_id(data.get("ConsumerId")) or message.content.get(
                "consumer_id"),
            "session_id": _loose_id(data.get("SessionId")) or body["SessionId"],
        }
        return SendResult(provider_message_ids={}, code="0", detail=echoed(_description(data)),
                          raw=echoed(text, RAW_LIMIT), conversation=conversation)

    # --- reading conversations -------------------------------------------------------------

    def get_conversations(self, consumer_id: str) -> list[dict[str, Any]]:
        """The consumer's conversations (``GetConversations``), normalised to snake_case."""
        path = API_PATH + "GetConversations/" + quote(consumer_id, safe="")
        data, _ = self._request("GET", path, idempotent=True)
        return [normalise_conversation(item) for item in _items(data, "Conversations")]

    def get_transcript(self, visit_id: str | int) -> dict[str, Any]:
        """Every message of one conversation (``GetTranscript``), normalised to snake_case."""
        path = API_PATH + "GetTranscript/" + quote(str(visit_id), safe="")
        data, _ = self._request("GET", path, idempotent=True)
        return normalise_transcript(data)

    # --- callbacks -------------------------------------------------------------------------

    def verify_inbound_key(self, authorization_header: str | None) -> bool:
        """Whether CAO's call to us carries our configured inbound key (see
        ``verify_basic_key`` for the accepted forms)."""
        return verify_basic_key(authorization_header, self.inbound_key)

    def parse_message(self, params: Mapping[str, Any]) -> ProviderEvent:
        """See the module-level ``parse_message``."""
        return parse_message(params)

    def parse_status(self, params: Mapping[str, Any]) -> ProviderEvent:
        """See the module-level ``parse_status``."""
        return parse_status(params)

    def parse_callback(self, params: Mapping[str, Any]) -> ProviderEvent:
        """See the module-level ``parse_callback`` (the worker re-parses stored callbacks)."""
        return parse_callback(params)
