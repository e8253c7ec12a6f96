"""The producer contract (shared.schemas.SendRequest) and its error reporting (error_list)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.schemas import MAX_DLR_TIMEOUT, MIN_DLR_TIMEOUT, SendRequest, error_list

PHONE = "+32 470 12 34 56"
E164 = "+32470123456"


def valid(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"to": {"phone": PHONE}, "route": ["viber", "sms"], "text": "Hello"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def refusal(body: dict[str, Any]) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as info:
        SendRequest.model_validate(body)
    errors = error_list(info.value)
    assert errors, "a refusal must carry at least one error"
    for err in errors:
        assert set(err) == {"field", "message"}
        assert err["message"]
    return errors


def fields(errors: list[dict[str, str]]) -> list[str]:
    return [err["field"] for err in errors]


# --------------------------------------------------------------------------------------
# Valid requests
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("phone", [PHONE, E164, " +32470123456 ", "+32-470-12-34-56",
                                   "+32 (0)470 12 34 56"])
def test_phone_is_normalised_to_e164(phone: str) -> None:
    request = SendRequest.model_validate(valid(to={"phone": phone}))
    assert request.to.phone == E164


def test_full_valid_request() -> None:
    request = SendRequest.model_validate(valid(
        sms_text="Hello by SMS", image_url="https://example.com/a.png",
        button={"text": "Open", "url": "https://example.com/x"}, sender="Shop",
        dlr_timeout=600, idempotency_key="order-1", callback_url="https://example.com/cb",
        metadata={"order": 1},
    ))
    assert request.route == ["viber", "sms"]
    assert request.button is not None and request.button.text == "Open"
    assert request.dlr_timeout == 600
    assert request.metadata == {"order": 1}
    dumped = request.model_dump(mode="json")
    assert dumped["to"] == {"phone": E164, "email": None, "app_id": None, "timezone": None}
    assert dumped["image_url"] == "https://example.com/a.png"


def test_defaults() -> None:
    request = SendRequest.model_validate(valid())
    assert request.sms_text is None and request.image_url is None and request.image_id is None
    assert request.button is None and request.sender is None and request.dlr_timeout is None
    assert request.idempotency_key is None and request.callback_url is None
    assert request.metadata == {}


@pytest.mark.parametrize("dlr_timeout", [MIN_DLR_TIMEOUT, MAX_DLR_TIMEOUT])
def test_dlr_timeout_bounds_are_inclusive(dlr_timeout: int) -> None:
    assert MIN_DLR_TIMEOUT == 60 and MAX_DLR_TIMEOUT == 86400
    assert SendRequest.model_validate(valid(dlr_timeout=dlr_timeout)).dlr_timeout == dlr_timeout


def test_viber_only_route_with_an_image_and_no_text() -> None:
    request = SendRequest.model_validate(
        {"to": {"phone": PHONE}, "route": ["viber"], "image_id": "img-1"})
    assert request.text is None and request.image_id == "img-1"


def test_sms_text_alone_satisfies_the_sms_hop_of_an_image_message() -> None:
    request = SendRequest.model_validate(
        {"to": {"phone": PHONE}, "route": ["viber", "sms"], "image_id": "i", "sms_text": "s"})
    assert request.text_for("sms") == "s"


def test_sender_of_eleven_characters_is_accepted() -> None:
    assert SendRequest.model_validate(valid(sender="A" * 11)).sender == "A" * 11


# --------------------------------------------------------------------------------------
# text_for
# --------------------------------------------------------------------------------------

def test_text_for_sms_prefers_sms_text() -> None:
    request = SendRequest.model_validate(valid(text="long viber text", sms_text="short"))
    assert request.text_for("sms") == "short"
    assert request.text_for("viber") == "long viber text"


def test_text_for_sms_falls_back_to_text() -> None:
    request = SendRequest.model_validate(valid(text="only text"))
    assert request.text_for("sms") == "only text"
    assert request.text_for("viber") == "only text"


# --------------------------------------------------------------------------------------
# Refusals: each one names its field
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(valid(to={"phone": "12345"}), "to.phone", id="phone-not-international"),
        pytest.param(valid(to={"phone": "+32 12"}), "to.phone", id="phone-invalid-number"),
        pytest.param(valid(to={"phone": "hello"}), "to.phone", id="phone-not-a-number"),
        pytest.param(valid(to={"phone": ""}), "to.phone", id="phone-empty"),
        pytest.param(valid(to={}), "to.phone", id="phone-missing"),
        pytest.param(valid(colour="blue"), "colour", id="unknown-top-level-field"),
        pytest.param(valid(to={"phone": E164, "name": "Ann"}), "to.name",
                     id="unknown-field-inside-to"),
        pytest.param(valid(route=[]), "route", id="empty-route"),
        pytest.param(valid(route=["viber", "fax"]), "route.1", id="unknown-channel"),
        pytest.param(valid(route=["sms", "sms"]), "route", id="repeated-channel"),
        pytest.param(valid(dlr_timeout=59), "dlr_timeout", id="dlr-timeout-59"),
        pytest.param(valid(dlr_timeout=86401), "dlr_timeout", id="dlr-timeout-86401"),
        pytest.param(valid(button={"url": "https://example.com"}), "button.text",
                     id="button-without-text"),
        pytest.param(valid(button={"text": "", "url": "https://example.com"}), "button.text",
                     id="button-with-empty-text"),
        pytest.param(valid(button={"text": "Go"}), "button.url", id="button-without-url"),
        pytest.param(valid(sender="A" * 12), "sender", id="sender-longer-than-11"),
        pytest.param(valid(callback_url="not a url"), "callback_url", id="callback-not-a-url"),
        pytest.param(valid(callback_url="ftp://example.com/cb"), "callback_url",
                     id="callback-not-http"),
        pytest.param(valid(image_url="nope"), "image_url", id="bad-image-url"),
        pytest.param(valid(text=""), "text", id="empty-text"),
        pytest.param({"route": ["sms"], "text": "x"}, "to.phone", id="to-missing"),
        pytest.param({"to": {"phone": PHONE}, "text": "x"}, "route", id="route-missing"),
    ],
)
def test_field_refusal_names_the_field(body: dict[str, Any], field: str) -> None:
    errors = refusal(body)
    assert field in fields(errors), errors


def test_unknown_field_message() -> None:
    errors = refusal(valid(colour="blue"))
    assert errors == [{"field": "colour", "message": "unknown field"}]


def test_value_error_prefix_is_removed() -> None:
    errors = refusal(valid(route=["sms", "sms"]))
    assert errors == [{"field": "route",
                       "message": "a channel may appear only once in a route"}]


# Cross-field rules (the model validator). They must be refused, with a clear message ...
CROSS_FIELD_CASES = [
    pytest.param(valid(image_url="https://example.com/a.png", image_id="img-1"),
                 "not both", {"image_url", "image_id"}, id="both-image-url-and-image-id"),
    pytest.param({"to": {"phone": PHONE}, "route": ["viber"], "image_id": "img-1",
                  "button": {"text": "Go", "url": "https://example.com"}},
                 "button needs text", {"text", "button"}, id="button-without-message-text"),
    pytest.param({"to": {"phone": PHONE}, "route": ["viber"]},
                 "text is required", {"text"}, id="no-text-and-no-image"),
    pytest.param({"to": {"phone": PHONE}, "route": ["viber", "sms"], "image_id": "img-1"},
                 "sms hop needs text", {"text", "sms_text"}, id="sms-route-without-any-text"),
]


@pytest.mark.parametrize(("body", "message", "_fields"), CROSS_FIELD_CASES)
def test_cross_field_rule_is_refused(body: dict[str, Any], message: str,
                                     _fields: set[str]) -> None:
    errors = refusal(body)
    assert any(message in err["message"] for err in errors), errors


# ... and, like every refusal ("every refusal names its field"), name the field concerned
# rather than the whole body.
@pytest.mark.parametrize(("body", "_message", "expected_fields"), CROSS_FIELD_CASES)
def test_cross_field_refusal_names_the_field(body: dict[str, Any], _message: str,
                                             expected_fields: set[str]) -> None:
    errors = refusal(body)
    assert set(fields(errors)) & expected_fields, errors


# --------------------------------------------------------------------------------------
# error_list on non-pydantic exceptions
# --------------------------------------------------------------------------------------

def test_error_list_of_a_plain_exception() -> None:
    assert error_list(ValueError("boom")) == [{"field": "", "message": "boom"}]


# --- in-app conversations ---------------------------------------------------------------

def inapp(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"route": ["inapp"], "text": "Is the flat still free?",
                            "conversation": {"consumer_id": "u-42"}}
    body.update(overrides)
    return body


def test_inapp_request_needs_no_to_and_names_the_consumer() -> None:
    request = SendRequest.model_validate(inapp())
    assert request.conversation is not None
    assert request.conversation.consumer_id == "u-42"
    assert request.recipient() == "inapp:u-42"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(inapp(conversation=None), "conversation", id="inapp-without-conversation"),
        pytest.param(valid(conversation={"consumer_id": "u"}), "conversation",
                     id="conversation-without-inapp-hop"),
        pytest.param(inapp(conversation={}), "conversation.consumer_id", id="no-consumer"),
        pytest.param(inapp(text=None), "text", id="inapp-without-text"),
        pytest.param(inapp(conversation={"consumer_id": "u",
                                         "listing_details": {"make": "Ford\u00ffF150"}}),
                     "conversation.listing_details", id="separator-in-listing-value"),
        pytest.param(inapp(conversation={"consumer_id": "u", "listing_details": {"a=b": "x"}}),
                     "conversation.listing_details", id="equals-in-listing-name"),
        pytest.param(inapp(conversation={"consumer_id": "u", "visit_id": "1"}),
                     "conversation.visit_id", id="visit-id-is-ours-to-track"),
    ],
)
def test_inapp_refusals_name_the_field(body: dict[str, Any], field: str) -> None:
    assert field in fields(refusal(body)), refusal(body)


def test_inapp_route_can_fall_back_to_sms() -> None:
    request = SendRequest.model_validate(inapp(route=["inapp", "sms"], to={"phone": PHONE}))
    assert request.route == ["inapp", "sms"]
    assert request.deadline_for("inapp", 600) == 600


# --------------------------------------------------------------------------------------
# Timing: send_at, valid_until / ttl_seconds, quiet_hours, priority (shared.sendtime)
# --------------------------------------------------------------------------------------

def ahead(hours: float, offset: str = "Z") -> str:
    """An RFC 3339 time ``hours`` from now (UTC, written with ``offset`` as Z)."""
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S") + offset


def intake_refusal(body: dict[str, Any]) -> list[dict[str, str]]:
    """As the API validates: with the intake context (clock-relative rules on)."""
    from shared.schemas import EGRESS_CHECK

    with pytest.raises(ValidationError) as info:
        SendRequest.model_validate(body, context=EGRESS_CHECK)
    return error_list(info.value)


def test_timing_fields_are_accepted() -> None:
    request = SendRequest.model_validate(valid(
        send_at=ahead(24, "+00:00"), valid_until=ahead(30),
        quiet_hours={"start": "21:00", "end": "08:00", "timezone": "Europe/Brussels"},
        priority="critical", to={"phone": PHONE, "timezone": "Europe/Brussels"}))
    assert request.priority == "critical" and request.quiet_hours is not None
    assert request.quiet_hours.timezone == "Europe/Brussels"
    assert request.to.timezone == "Europe/Brussels"


@pytest.mark.parametrize(("overrides", "field"), [
    ({"send_at": ahead(1, "")}, "send_at"),  # no offset
    ({"send_at": ahead(24 * 400)}, "send_at"),  # more than a year ahead
    ({"send_at": ahead(48), "valid_until": ahead(24)}, "valid_until"),  # ends before it starts
    ({"valid_until": ahead(24), "ttl_seconds": 60}, "ttl_seconds"),
    ({"ttl_seconds": 0}, "ttl_seconds"),
    ({"quiet_hours": {"start": "25:00", "end": "08:00"}}, "quiet_hours.start"),
    ({"quiet_hours": {"start": "21:00", "end": "08:00", "timezone": "Mars/Olympus"}},
     "quiet_hours.timezone"),
    ({"quiet_hours": {"start": "21:00"}}, "quiet_hours.end"),
    ({"priority": "urgent"}, "priority"),
    ({"to": {"phone": PHONE, "timezone": "CET+1"}}, "to.timezone"),
], ids=["naive-send-at", "too-far", "valid-before-send", "both-validities", "zero-ttl",
        "bad-clock", "bad-zone", "missing-end", "bad-priority", "bad-recipient-zone"])
def test_timing_refusals_name_the_field(overrides: dict[str, Any], field: str) -> None:
    assert field in fields(refusal(valid(**overrides)))


def test_a_past_valid_until_is_refused_at_intake_only() -> None:
    """The API refuses it; a stored request read back after it passed still validates."""
    body = valid(valid_until="2020-01-01T00:00:00Z")
    assert fields(intake_refusal(body)) == ["valid_until"]
    assert SendRequest.model_validate(body).valid_until is not None


def test_quiet_hours_short_form() -> None:
    from shared.schemas import QuietHours

    assert QuietHours.parse_range("21:00-08:00").model_dump() == {
        "start": "21:00", "end": "08:00", "timezone": "auto"}
    with pytest.raises(ValueError):
        QuietHours.parse_range("21:00")
