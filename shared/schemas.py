"""Pydantic models at the edges: what producers may send us.

``SendRequest`` is the contract producers code against: unknown fields are refused, phone
numbers are normalised to E.164 with ``phonenumbers``, and every refusal names its field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import phonenumbers
from pydantic import (
    AnyHttpUrl,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shared import egress, sendtime

Channel = Literal["viber", "sms", "rogerthat", "inapp"]
CHANNELS: tuple[str, ...] = ("viber", "sms", "rogerthat", "inapp")
PHONE_CHANNELS = frozenset({"viber", "sms"})
EMAIL_CHANNELS = frozenset({"rogerthat"})
CONVERSATION_CHANNELS = frozenset({"inapp"})
LISTING_SEPARATOR = "\u00ff"  # ÿ: the in-app provider's name/value pair separator

MAX_RECIPIENT_LENGTH = 200  # messages.recipient: what validation lets through must fit

# Validation context that applies the egress policy to producer URLs, DNS included: the API
# and shared.client pass it where a request comes in; the worker's re-reads of a stored
# request do not (no lookups per hop; the transport checks the address dialled anyway).
# ``intake`` marks the same moment for the rules that compare with the clock (``valid_until``
# in the future): a stored request re-read later must still validate.
EGRESS_CHECK = {"egress": True, "intake": True}

# The gateway's dlr_timeout range (providers.md §2.3).
MIN_DLR_TIMEOUT = 60
MAX_DLR_TIMEOUT = 86400


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Recipient(Strict):
    """Whom to reach: a phone for Viber/SMS, an e-mail (plus its messenger app) for Rogerthat."""

    phone: str | None = Field(default=None, description="international; normalised to E.164")
    email: EmailStr | None = None
    app_id: str | None = Field(default=None, min_length=1, max_length=100)
    timezone: str | None = Field(default=None, max_length=64,
                                 description="IANA zone, for quiet_hours timezone auto")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None and not sendtime.is_zone(value):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Brussels)")
        return value

    @field_validator("email")
    @classmethod
    def _email_fits(cls, value: str | None) -> str | None:
        """An address is shown as the message's recipient (a 200-character column)."""
        if value is not None and len(value) > MAX_RECIPIENT_LENGTH:
            raise ValueError(f"at most {MAX_RECIPIENT_LENGTH} characters")
        return value

    @field_validator("phone")
    @classmethod
    def _normalise_phone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            number = phonenumbers.parse(value, None)
        except phonenumbers.NumberParseException as exc:
            raise ValueError(f"not a phone number in international format ({exc})") from None
        if not phonenumbers.is_valid_number(number):
            raise ValueError("not a valid phone number")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class ConsumerDetails(Strict):
    """Optional facts about the app user that the in-app provider shows its agents."""

    first_name: str | None = Field(default=None, min_length=1, max_length=100)
    last_name: str | None = Field(default=None, min_length=1, max_length=100)
    phone: str | None = Field(default=None, min_length=1, max_length=32)
    device: str | None = Field(default=None, min_length=1, max_length=100)
    os_version: str | None = Field(default=None, min_length=1, max_length=50)


class ConversationRef(Strict):
    """An in-app conversation: the producer's app user (consumer) writing to an advertiser's
    agents. Producers name it by their own ids; the provider's VisitId stays ours to track.

    Without ``session_id`` a message continues the consumer's latest conversation with the
    advertiser (or starts one); with it, that exact conversation.
    """

    consumer_id: str = Field(min_length=1, max_length=100)
    advertiser_id: str | None = Field(default=None, min_length=1, max_length=100,
                                      description="default: SWITCHBOARD_CONTACTATONCE_ADVERTISER_ID")
    session_id: str | None = Field(default=None, min_length=1, max_length=100)
    consumer: ConsumerDetails | None = None
    listing_details: dict[str, str] = Field(default_factory=dict, max_length=50)

    @field_validator("listing_details")
    @classmethod
    def _no_separators(cls, value: dict[str, str]) -> dict[str, str]:
        for name, item in value.items():
            if not name or "=" in name or LISTING_SEPARATOR in name:
                raise ValueError(f"name {name!r} must be non-empty without '=' or 'ÿ'")
            if LISTING_SEPARATOR in item:
                raise ValueError(f"value of {name!r} must not contain 'ÿ'")
        return value


class Button(Strict):
    text: str = Field(min_length=1, max_length=30)
    url: AnyHttpUrl

    @field_validator("url")
    @classmethod
    def _url_length(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if len(str(value)) > 2048:
            raise ValueError("at most 2048 characters")
        return value


_ACTION_SCHEMES = ("http:", "https:", "geo:", "tel:", "mailto:", "confirm:")
_ATTACHMENT_TYPES = Literal["image/png", "image/jpeg", "application/pdf", "video/mp4"]


class AnswerButton(Strict):
    """A messenger quick-reply button; its ``id`` comes back with the answer."""

    id: str = Field(min_length=1, max_length=100)
    caption: str = Field(min_length=1, max_length=200)
    action: str | None = Field(default=None, max_length=2048)
    ui_flags: int = Field(default=0, ge=0, le=3)

    @field_validator("action")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        if value and not value.lower().startswith(_ACTION_SCHEMES):
            raise ValueError("action must start with tel:, geo:, http(s):, mailto: or confirm:")
        return value or None


class Alert(Strict):
    """How the phone alerts: silent, or vibrate, ring for N seconds, repeat every M seconds."""

    silent: bool = False
    vibrate: bool | None = None  # None: vibrate unless silent
    ring_seconds: Literal[5, 15, 30, 60] | None = None
    repeat_seconds: Literal[5, 15, 30, 60, 300, 900, 3600] | None = None

    @model_validator(mode="after")
    def _combination(self) -> Alert:
        if self.silent and (self.vibrate or self.ring_seconds or self.repeat_seconds):
            raise _field_error("alert.silent", "a silent alert cannot vibrate, ring or repeat")
        return self


class Attachment(Strict):
    content_type: _ATTACHMENT_TYPES
    url: AnyHttpUrl
    name: str = Field(min_length=1, max_length=200)
    size: int = Field(default=0, ge=0)


class QuietHours(Strict):
    """Hours in the recipient's zone in which nothing starts; ``start > end`` spans midnight."""

    start: str = Field(description="HH:MM, local time", examples=["21:00"])
    end: str = Field(description="HH:MM, local time", examples=["08:00"])
    timezone: str = Field(default=sendtime.AUTO_ZONE, max_length=64,
                          description="an IANA zone, or auto: to.timezone, else the phone's")

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        sendtime.parse_clock(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if value != sendtime.AUTO_ZONE and not sendtime.is_zone(value):
            raise ValueError(f"{value!r} is not an IANA time zone or auto")
        return value

    @classmethod
    def parse_range(cls, spec: str, zone: str = sendtime.AUTO_ZONE) -> QuietHours:
        """``21:00-08:00`` (the CLI's and the app settings' short form)."""
        start, sep, end = spec.partition("-")
        if not sep:
            raise ValueError(f"{spec!r}: use START-END, e.g. 21:00-08:00")
        return cls(start=start, end=end, timezone=zone)


class Timing(Strict):
    """When a message may go (``shared.sendtime`` holds the rules): messages, campaigns and
    flow launches share these fields."""

    send_at: AwareDatetime | None = Field(
        default=None, description="RFC 3339 with an offset; at most a year ahead, past = now")
    valid_until: AwareDatetime | None = Field(
        default=None, description="no hop starts after it; undelivered by then = expired")
    ttl_seconds: int | None = Field(default=None, ge=1, le=int(
        sendtime.MAX_SCHEDULE_AHEAD.total_seconds()), description="valid_until, relative")
    quiet_hours: QuietHours | None = None
    priority: Literal["normal", "critical"] = "normal"

    @field_validator("send_at")
    @classmethod
    def _within_a_year(cls, value: datetime | None) -> datetime | None:
        if value is not None and value > datetime.now(UTC) + sendtime.MAX_SCHEDULE_AHEAD:
            raise ValueError("at most a year ahead")
        return value

    @model_validator(mode="after")
    def _validity(self, info: ValidationInfo) -> Timing:
        if self.valid_until is not None and self.ttl_seconds is not None:
            raise _field_error("ttl_seconds", "give valid_until or ttl_seconds, not both")
        if self.valid_until is None:
            return self
        if self.send_at is not None and self.valid_until <= self.send_at:
            raise _field_error("valid_until", "must be after send_at")
        if (info.context or {}).get("intake") and self.valid_until <= datetime.now(UTC):
            raise _field_error("valid_until", "must be in the future")
        return self


class TemplateRef(Strict):
    """A saved template to render this message's content from (``shared.templates``), at
    accept, once: its latest version unless ``version`` is given; the locale falls back
    ``nl-BE`` → ``nl`` → the template's default locale."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    version: int | None = Field(default=None, ge=1, lt=2**31)
    locale: str | None = Field(default=None, min_length=2, max_length=35,
                               description="BCP 47, e.g. nl-BE")
    data: dict[str, Any] = Field(default_factory=dict, description="the placeholders' values")


class SendRequest(Timing):
    """One message to one recipient over an ordered route of channels."""

    to: Recipient = Field(default_factory=Recipient)
    conversation: ConversationRef | None = None  # in-app hops
    route: list[Channel] = Field(min_length=1, max_length=5)
    text: str | None = Field(default=None, min_length=1, max_length=2048)
    sms_text: str | None = Field(default=None, min_length=1, max_length=2048)
    # Per-channel text, e.g. a flow step with buttons on the messenger and numbered options on
    # SMS; a channel not named here carries ``text`` (``sms_text`` for SMS).
    texts: dict[Channel, str] = Field(default_factory=dict)
    image_url: AnyHttpUrl | None = None
    image_id: str | None = Field(default=None, min_length=1, max_length=64)
    button: Button | None = None
    sender: str | None = Field(default=None, min_length=1, max_length=11)
    dlr_timeout: int | None = Field(default=None, ge=MIN_DLR_TIMEOUT, le=MAX_DLR_TIMEOUT)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    callback_url: AnyHttpUrl | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    # What kind of message this is (free string, e.g. "marketing"): a person may opt out of
    # some categories on a channel and still get the others (shared.consent).
    category: str | None = Field(default=None, min_length=1, max_length=64)
    # Per-hop deadlines (seconds), e.g. {"rogerthat": 300, "viber": 3600}; default dlr_timeout.
    deadlines: dict[Channel, int] = Field(default_factory=dict)
    # Messenger (rogerthat) content
    buttons: list[AnswerButton] = Field(default_factory=list, max_length=20)
    allow_dismiss: bool = False  # implied when there are no buttons (plain text is dismissable)
    auto_lock: bool = False
    branding: str | None = Field(default=None, min_length=1, max_length=200)
    alert: Alert | None = None
    tag: str | None = Field(default=None, min_length=1, max_length=500)
    parent_message_key: str | None = Field(default=None, min_length=1, max_length=100)
    attachments: list[Attachment] = Field(default_factory=list, max_length=10)
    # Content from a saved template instead of text/sms_text/texts (rendered at accept).
    template: TemplateRef | None = None

    @field_validator("texts")
    @classmethod
    def _text_lengths(cls, value: dict[str, str]) -> dict[str, str]:
        for channel, text in value.items():
            if not 1 <= len(text) <= 2048:
                raise ValueError(f"{channel}: 1 to 2048 characters")
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback_url_fits(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        """Stored in a 2048-character column, like a button's URL."""
        if value is not None and len(str(value)) > 2048:
            raise ValueError("at most 2048 characters")
        return value

    @field_validator("callback_url", "image_url")
    @classmethod
    def _egress_allowed(cls, value: AnyHttpUrl | None, info: ValidationInfo,
                        ) -> AnyHttpUrl | None:
        """Switchboard dials these URLs itself: refuse internal targets (shared.egress)."""
        if value is not None and (info.context or {}).get("egress"):
            try:
                egress.check_url(str(value))
            except egress.EgressRefused as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("deadlines")
    @classmethod
    def _deadline_range(cls, value: dict[str, int]) -> dict[str, int]:
        for channel, seconds in value.items():
            if not MIN_DLR_TIMEOUT <= seconds <= MAX_DLR_TIMEOUT:
                raise ValueError(f"{channel}: between {MIN_DLR_TIMEOUT} and {MAX_DLR_TIMEOUT} s")
        return value

    @field_validator("tag")
    @classmethod
    def _tag_prefix(cls, value: str | None) -> str | None:
        if value and value.startswith("__rt__"):
            raise ValueError("must not start with __rt__ (reserved by the messenger)")
        return value

    @field_validator("buttons")
    @classmethod
    def _unique_buttons(cls, value: list[AnswerButton]) -> list[AnswerButton]:
        ids = [b.id for b in value]
        if len(set(ids)) != len(ids):
            raise ValueError("button ids must be unique")
        return value

    @field_validator("route")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a channel may appear only once in a route")
        return value

    @model_validator(mode="after")
    def _recipient_fits_route(self) -> SendRequest:
        if PHONE_CHANNELS & set(self.route) and not self.to.phone:
            raise _field_error("to.phone", "viber and sms hops need a phone number")
        if EMAIL_CHANNELS & set(self.route) and not self.to.email:
            raise _field_error("to.email", "rogerthat hops need an e-mail address")
        if CONVERSATION_CHANNELS & set(self.route) and self.conversation is None:
            raise _field_error("conversation", "inapp hops need a conversation (consumer_id)")
        if self.conversation is not None and not CONVERSATION_CHANNELS & set(self.route):
            raise _field_error("conversation", "a conversation needs an inapp hop in the route")
        return self

    @model_validator(mode="after")
    def _content_fits_route(self) -> SendRequest:
        if self.image_url and self.image_id:
            raise _field_error("image_id", "give image_url or image_id, not both")
        if self.template is not None:  # the rules apply to the rendered request (at accept)
            for name in ("text", "sms_text", "texts"):
                if getattr(self, name):
                    raise _field_error(name, f"give {name} or template, not both")
            return self
        if self.button and not self.text:
            raise _field_error("text", "a button needs text")
        if "sms" in self.route and not (self.text or self.sms_text):
            raise _field_error("text", "an sms hop needs text or sms_text")
        if "inapp" in self.route and not self.text:
            raise _field_error("text", "an inapp hop needs text")
        if not self.text and not (self.image_url or self.image_id):
            raise _field_error("text", "text is required (or an image for a Viber-only route)")
        return self

    def deadline_for(self, channel: str, default: int) -> int:
        """This hop's deadline: ``deadlines[channel]``, else ``dlr_timeout``, else ``default``."""
        return self.deadlines.get(channel) or self.dlr_timeout or default  # type: ignore[call-overload]

    def recipient(self) -> str:
        """The identity shown for this message: the phone, else the e-mail, else the in-app
        consumer."""
        if self.to.phone or self.to.email:
            return self.to.phone or str(self.to.email)
        assert self.conversation is not None  # the validators require one of the three
        return f"inapp:{self.conversation.consumer_id}"

    def text_for(self, channel: str) -> str | None:
        """The text a hop on ``channel`` carries: ``texts[channel]``, else for SMS ``sms_text``
        (the gateway's expiry_txt), else ``text``."""
        if channel in self.texts:
            return self.texts[channel]  # type: ignore[index]
        if channel == "sms":
            return self.sms_text or self.text
        return self.text


def _field_error(field: str, message: str) -> PydanticCustomError:
    """A cross-field refusal that still names the field a producer must fix."""
    return PydanticCustomError("field_error", message, {"field": field})


def error_list(exc: Exception) -> list[dict[str, str]]:
    """Pydantic errors as ``[{"field": "to.phone", "message": ...}]`` for HTTP and CLI answers."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return [{"field": "", "message": str(exc)}]
    out = []
    for err in errors():
        field = (".".join(str(p) for p in err.get("loc", ()))
                 or (err.get("ctx") or {}).get("field") or "body")
        message = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            message = "unknown field"
        out.append({"field": field, "message": message.removeprefix("Value error, ")})
    return out


class AppSettingsUpdate(Strict):
    """``PATCH /v1/app``: the calling app's defaults; a field left out is left unchanged."""

    quiet_hours: QuietHours | None = Field(
        default=None, description="default quiet hours of messages naming none; null clears")


class ReplayRequest(Strict):
    """Which events to deliver again: everything since a time, or one message's events."""

    since: datetime | None = None
    message_id: str | None = Field(default=None, min_length=1, max_length=36)

    @model_validator(mode="after")
    def _exactly_one(self) -> ReplayRequest:
        if (self.since is None) == (self.message_id is None):
            raise _field_error("since", "give either since or message_id")
        return self

    @field_validator("since")
    @classmethod
    def _naive_utc(cls, value: datetime | None) -> datetime | None:
        """Rows hold naive UTC; accept any offset and convert."""
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value


class ConsentUpdate(Strict):
    """``PUT /v1/consent/<channel>/<address>``: opt an address out (of everything, or of some
    categories) or back in (shared.consent merges it into the record)."""

    status: Literal["opted_out", "opted_in"]
    categories: list[str] = Field(default_factory=list, max_length=50)

    @field_validator("categories")
    @classmethod
    def _category_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not 1 <= len(name.strip()) <= 64:
                raise ValueError("each category: 1 to 64 characters")
        return sorted({name.strip() for name in value})


class FriendRequest(Strict):
    """Invite someone to be the messenger service's friend, or end the friendship."""

    email: EmailStr
    app_id: str = Field(default="rogerthat", min_length=1, max_length=100)
    name: str | None = Field(default=None, max_length=200)
    message: str | None = Field(default=None, max_length=2000)
    language: str | None = Field(default=None, max_length=10)
