"""Pydantic models at the edges: what producers may send us.

``SendRequest`` is the contract producers code against: unknown fields are refused, phone
numbers are normalised to E.164 with ``phonenumbers``, and every refusal names its field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import phonenumbers
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

Channel = Literal["viber", "sms"]
CHANNELS: tuple[str, ...] = ("viber", "sms")

# The gateway's dlr_timeout range (providers.md §2.3).
MIN_DLR_TIMEOUT = 60
MAX_DLR_TIMEOUT = 86400


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Recipient(Strict):
    phone: str = Field(description="international number; normalised to E.164")

    @field_validator("phone")
    @classmethod
    def _normalise_phone(cls, value: str) -> str:
        try:
            number = phonenumbers.parse(value, None)
        except phonenumbers.NumberParseException as exc:
            raise ValueError(f"not a phone number in international format ({exc})") from None
        if not phonenumbers.is_valid_number(number):
            raise ValueError("not a valid phone number")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class Button(Strict):
    text: str = Field(min_length=1, max_length=30)
    url: AnyHttpUrl

    @field_validator("url")
    @classmethod
    def _url_length(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if len(str(value)) > 2048:
            raise ValueError("at most 2048 characters")
        return value


class SendRequest(Strict):
    """One message to one recipient over an ordered route of channels."""

    to: Recipient
    route: list[Channel] = Field(min_length=1, max_length=5)
    text: str | None = Field(default=None, min_length=1, max_length=2048)
    sms_text: str | None = Field(default=None, min_length=1, max_length=2048)
    image_url: AnyHttpUrl | None = None
    image_id: str | None = Field(default=None, min_length=1, max_length=64)
    button: Button | None = None
    sender: str | None = Field(default=None, min_length=1, max_length=11)
    dlr_timeout: int | None = Field(default=None, ge=MIN_DLR_TIMEOUT, le=MAX_DLR_TIMEOUT)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    callback_url: AnyHttpUrl | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("route")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a channel may appear only once in a route")
        return value

    @model_validator(mode="after")
    def _content_fits_route(self) -> SendRequest:
        if self.image_url and self.image_id:
            raise _field_error("image_id", "give image_url or image_id, not both")
        if self.button and not self.text:
            raise _field_error("text", "a button needs text")
        if "sms" in self.route and not (self.text or self.sms_text):
            raise _field_error("text", "an sms hop needs text or sms_text")
        if not self.text and not (self.image_url or self.image_id):
            raise _field_error("text", "text is required (or an image for a Viber-only route)")
        return self

    def text_for(self, channel: str) -> str | None:
        """The text a hop on ``channel`` carries: SMS prefers ``sms_text`` (the gateway's expiry_txt)."""
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
