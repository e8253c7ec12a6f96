"""The Rogerthat messenger (JSON-RPC over HTTPS): sending, sealing, friendship, callbacks.

Everything specific to Rogerthat lives here (wire format in ``guide/providers.md`` §1), so the
worker only ever sees ``SendResult``, ``ProviderEvent`` and the three ``ProviderError`` classes.
The adapter is stateless apart from its configuration and is safe to share.

Failure classification differs from the SMS gateway because Rogerthat is idempotent (§1.3):
the server stores every answer under the JSON-RPC ``id`` for a day, its error included, and
replays it when the same ``id`` comes again (or answers 1009 while the first call still runs).
We send the attempt id (or another stable id the caller chose), so whenever we cannot tell
whether a call took effect (read timeout, dropped connection, 5xx, 429, an empty or unreadable
200) resending with that id is safe and the error is ``RetryableError``. Error 1000 is
retryable too, but the server cached it: a retry under the same id would only get it back, so
retries walk a chain of ids (``rpc_ids``) and execute afresh only past a cached 1000. Only a
refusal is ``PermanentError``.

Callbacks (§1.8) arrive as a JSON-RPC envelope authenticated only by the shared service key
header; retries reuse the envelope ``id``, which is therefore the dedupe key. The server
retries every answer that is not an HTTP 200 with a JSON-RPC body (and after a few failures
mails the service's admins that it "will soon be disabled"), while a 200 carrying an
``error`` ends the retries: so a callback we cannot use is answered with ``callback_refusal``,
not an HTTP error.
"""

from __future__ import annotations

import hmac
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import IntEnum, IntFlag
from typing import TYPE_CHECKING, Any

import requests

from shared.providers.base import (
    AccountRefusal,
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

CONTENT_TYPE = "application/json-rpc; charset=utf-8"
API_KEY_HEADER = "X-Nuntiuz-API-Key"
SERVICE_KEY_HEADER = "X-Nuntiuz-Service-Key"  # on inbound callbacks (§1.2)
DEFAULT_APP_ID = "rogerthat"
DEFAULT_SERVICE_IDENTITY = "+default+"
MAX_TAG_LENGTH = 500


# --------------------------------------------------------------------------------------
# Constants (§1.5)
# --------------------------------------------------------------------------------------

class MessageFlag(IntFlag):
    """``flags`` of a message. Only the first seven may be set by a service."""

    ALLOW_DISMISS = 1
    ALLOW_CUSTOM_REPLY = 2
    ALLOW_REPLY = 4
    ALLOW_REPLY_ALL = 8
    SHARED_MEMBERS = 16
    LOCKED = 32
    AUTO_LOCK = 64  # "auto-seal": the first answer locks the message
    # Set by the server, or stripped from messaging.send:
    SENT_BY_MFR = 128
    SENT_BY_JS_MFR = 256
    DYNAMIC_CHAT = 512
    NOT_REMOVABLE = 1024
    ALLOW_CHAT_BUTTONS = 2048
    CHAT_STICKY = 4096
    ALLOW_CHAT_PICTURE = 8192
    ALLOW_CHAT_VIDEO = 16384
    ALLOW_CHAT_PRIORITY = 32768
    ALLOW_CHAT_STICKY = 65536


class AlertFlag(IntFlag):
    """Per-member ``alert_flags``: at most one RING_* and at most one INTERVAL_*."""

    SILENT = 1
    VIBRATE = 2
    RING_5 = 4
    RING_15 = 8
    RING_30 = 16
    RING_60 = 32
    INTERVAL_5 = 64
    INTERVAL_15 = 128
    INTERVAL_30 = 256
    INTERVAL_60 = 512
    INTERVAL_300 = 1024
    INTERVAL_900 = 2048
    INTERVAL_3600 = 4096


class ButtonUiFlag(IntFlag):
    """A button's ``ui_flags`` (and ``dismiss_button_ui_flags``); anything above 3 is refused."""

    EXPECT_NEXT_WAIT_5 = 1
    AUTHORIZE_LOCATION = 2


class MemberStatus(IntFlag):
    """The ``status`` bitmask of ``messaging.update`` callbacks."""

    RECEIVED = 1
    ACKED = 2
    READ = 4
    DELETED = 8
    ACCOUNT_DELETED = 16


class DirtyBehavior(IntEnum):
    """``messaging.seal``'s ``dirty_behavior``."""

    NORMAL = 1
    MAKE_DIRTY = 2
    CLEAR_DIRTY = 3


ATTACHMENT_PNG = "image/png"
ATTACHMENT_JPEG = "image/jpeg"
ATTACHMENT_PDF = "application/pdf"
ATTACHMENT_MP4 = "video/mp4"
ATTACHMENT_CONTENT_TYPES = frozenset({ATTACHMENT_PNG, ATTACHMENT_JPEG, ATTACHMENT_PDF,
                                      ATTACHMENT_MP4})

ACTION_SCHEMES = frozenset({"http", "https", "geo", "tel", "mailto", "confirm"})
RING_FLAGS = {5: AlertFlag.RING_5, 15: AlertFlag.RING_15, 30: AlertFlag.RING_30,
              60: AlertFlag.RING_60}
INTERVAL_FLAGS = {5: AlertFlag.INTERVAL_5, 15: AlertFlag.INTERVAL_15,
                  30: AlertFlag.INTERVAL_30, 60: AlertFlag.INTERVAL_60,
                  300: AlertFlag.INTERVAL_300, 900: AlertFlag.INTERVAL_900,
                  3600: AlertFlag.INTERVAL_3600}
_ALL_ALERT_BITS = sum(AlertFlag)
_MAX_UI_FLAGS = int(ButtonUiFlag.EXPECT_NEXT_WAIT_5 | ButtonUiFlag.AUTHORIZE_LOCATION)

# Envelope and business error codes (§1.4) -> our reason; any other code is "error_<code>".
UNKNOWN_ERROR, STILL_RUNNING = 1000, 1009
_RETRYABLE_CODES = {UNKNOWN_ERROR: "provider_error", STILL_RUNNING: "still_running"}
_PERMANENT_CODES = {
    1001: "invalid_request", 1002: "service_disabled", 1003: "invalid_request",
    1004: "invalid_request", 1005: "invalid_request", 1006: "invalid_request",
    1007: "invalid_request",
    20000: "invalid_email", 20001: "already_invited_recently", 20002: "invited_too_often",
    20003: "cannot_invite_self", 20004: "no_email_invitations",
    20005: "cannot_request_location", 20006: "user_not_found", 20007: "already_friend",
    20008: "cannot_invite_service",
    30000: "not_a_friend", 30052: "member_not_found", 30057: "flow_invalid",
    40001: "flow_not_found", 40002: "not_a_friend", 40003: "flow_invalid",
    40004: "invalid_request", 40005: "invalid_request", 40009: "flow_language",
}
FLOW_NAMESPACE = "https://rogerth.at/api/1/MessageFlow.xsd"
RETRY_ID_INFIX = ".r"  # rpc_ids: "<id>", "<id>.r1", "<id>.r2", ...


# --------------------------------------------------------------------------------------
# Flags, buttons, attachments
# --------------------------------------------------------------------------------------

def alert_flags(
    silent: bool = False, vibrate: bool | None = None, ring_seconds: int | None = None,
    repeat_seconds: int | None = None,
) -> int:
    """The ``alert_flags`` bitmask. ``vibrate`` defaults to True unless ``silent``.

    Raises ValueError for a silent alert that also vibrates, rings or repeats, and for ring
    or repeat durations Rogerthat has no flag for.
    """
    if silent:
        clashes = [name for name, on in (("vibrate", bool(vibrate)),
                                         ("ring", ring_seconds is not None),
                                         ("repeat", repeat_seconds is not None)) if on]
        if clashes:
            raise ValueError(f"a silent alert cannot also {'/'.join(clashes)}")
        return int(AlertFlag.SILENT)
    flags = AlertFlag.VIBRATE if vibrate is None or vibrate else AlertFlag(0)
    if ring_seconds is not None:
        flags |= _lookup_seconds(RING_FLAGS, ring_seconds, "ring_seconds")
    if repeat_seconds is not None:
        flags |= _lookup_seconds(INTERVAL_FLAGS, repeat_seconds, "repeat_seconds")
    return int(flags)


def _lookup_seconds(table: Mapping[int, AlertFlag], seconds: int, name: str) -> AlertFlag:
    if isinstance(seconds, bool) or seconds not in table:
        allowed = ", ".join(str(s) for s in table)
        raise ValueError(f"{name} must be one of {allowed}, not {seconds!r}")
    return table[seconds]


def check_alert_flags(value: Any) -> int:
    """A ready-made ``alert_flags`` int, checked as the server does (30017/30018/30019)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"alert_flags must be an int, not {value!r}")
    if value < 0 or value & ~_ALL_ALERT_BITS:
        raise ValueError(f"alert_flags has unknown bits: {value}")
    if sum(1 for flag in RING_FLAGS.values() if value & flag) > 1:
        raise ValueError("alert_flags has more than one RING_* flag")
    if sum(1 for flag in INTERVAL_FLAGS.values() if value & flag) > 1:
        raise ValueError("alert_flags has more than one INTERVAL_* flag")
    return value


def message_flags(allow_dismiss: bool = False, auto_lock: bool = False) -> int:
    """The message ``flags`` for the two a messenger message may choose."""
    flags = MessageFlag(0)
    if allow_dismiss:
        flags |= MessageFlag.ALLOW_DISMISS
    if auto_lock:
        flags |= MessageFlag.AUTO_LOCK
    return int(flags)


def validate_buttons(buttons: Iterable[Mapping[str, Any]]) -> None:
    """Refuse what the server refuses (30006, 30008, 30014, 30035) with a ValueError."""
    seen: set[str] = set()
    for index, button in enumerate(buttons, start=1):
        if not isinstance(button, Mapping):
            raise TypeError(f"button {index}: not an object")
        button_id, caption = button.get("id"), button.get("caption")
        if not isinstance(button_id, str) or not button_id:
            raise ValueError(f"button {index}: empty id")
        if not isinstance(caption, str) or not caption:
            raise ValueError(f"button {button_id!r}: empty caption")
        if button_id in seen:
            raise ValueError(f"duplicate button id {button_id!r}")
        seen.add(button_id)
        _check_action(button_id, button.get("action"))
        _check_ui_flags(button_id, button.get("ui_flags") or 0)


def _check_action(button_id: str, action: Any) -> None:
    if action is None or action == "":
        return
    scheme, colon, _ = action.partition(":") if isinstance(action, str) else ("", "", "")
    if not colon or scheme.lower() not in ACTION_SCHEMES:
        allowed = ", ".join(sorted(ACTION_SCHEMES))
        raise ValueError(f"button {button_id!r}: action scheme must be one of {allowed}, "
                         f"not {action!r}")


def _check_ui_flags(button_id: str, ui_flags: Any) -> None:
    if isinstance(ui_flags, bool) or not isinstance(ui_flags, int) or ui_flags < 0:
        raise ValueError(f"button {button_id!r}: ui_flags must be an int, not {ui_flags!r}")
    if ui_flags > _MAX_UI_FLAGS:
        raise ValueError(f"button {button_id!r}: ui_flags {ui_flags} > {_MAX_UI_FLAGS}")


def answers(buttons: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validated ``AnswerTO`` dicts: ``type`` "button" and ``action`` always present (§1.6)."""
    buttons = list(buttons)
    validate_buttons(buttons)
    return [{"id": b["id"], "caption": b["caption"], "action": b.get("action") or None,
             "ui_flags": b.get("ui_flags") or 0, "type": "button"} for b in buttons]


def attachments(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``AttachmentTO`` dicts; ValueError for an unknown content type or a non-http(s) URL.

    The URL is read from ``download_url`` (the wire name) or ``url`` (``schemas.Attachment``).
    """
    result = []
    for index, item in enumerate(items, start=1):
        if not isinstance(item, Mapping):
            raise TypeError(f"attachment {index}: not an object")
        content_type = item.get("content_type")
        url = item.get("download_url") or item.get("url")
        if content_type not in ATTACHMENT_CONTENT_TYPES:
            raise ValueError(f"attachment {index}: content_type must be one of "
                             f"{', '.join(sorted(ATTACHMENT_CONTENT_TYPES))}")
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise ValueError(f"attachment {index}: download_url must be http(s)")
        result.append({"content_type": content_type, "download_url": url,
                       "name": item.get("name"), "size": item.get("size", 0)})
    return result


def _check_tag(tag: Any) -> str | None:
    if tag is None:
        return None
    if not isinstance(tag, str):
        raise TypeError("tag must be a string")
    if len(tag) > MAX_TAG_LENGTH:
        raise ValueError(f"tag longer than {MAX_TAG_LENGTH} characters")
    if tag.startswith("__rt__"):
        raise ValueError("tag must not start with __rt__")
    return tag


# --------------------------------------------------------------------------------------
# Replies (§1.1, §1.4)
# --------------------------------------------------------------------------------------

def _error_detail(error: Mapping[str, Any]) -> str:
    """The provider message plus its extra fields (``name``, ``member``, ``app_id`` ...)."""
    message = str(error.get("message") or "")
    extras = [f"{key}={value}" for key, value in error.items() if key not in ("code", "message")]
    return f"{message} ({', '.join(extras)})" if extras else message


def classify_error(error: Any) -> ProviderError:
    """The exception for a JSON-RPC ``error`` object."""
    code = error.get("code") if isinstance(error, Mapping) else None
    if isinstance(code, str) and code.strip().lstrip("-").isdigit():
        code = int(code)
    if isinstance(code, bool) or not isinstance(code, int):
        return RetryableError("unreadable_response", short(f"unreadable error: {error!r}"))
    detail = _error_detail(error)
    if code in _RETRYABLE_CODES:
        return RetryableError(_RETRYABLE_CODES[code], detail, code=str(code))
    return PermanentError(_PERMANENT_CODES.get(code, f"error_{code}"), detail, code=str(code))


def parse_reply(body: bytes, rpc_id: str) -> Any:
    """The ``result`` of a 200 reply, or the error it carries.

    An empty body (what the server writes when it could not parse our request) or anything
    that is not a JSON-RPC reply is retryable: a resend with the same id cannot duplicate.
    """
    text = body.decode("utf-8", errors="replace")
    if not text.strip():
        raise RetryableError("empty_response", "HTTP 200 with an empty body")
    try:
        reply = json.loads(text)
    except ValueError:
        raise RetryableError("unreadable_response", short(text)) from None
    if not isinstance(reply, dict) or not ({"result", "error"} & reply.keys()):
        raise RetryableError("unreadable_response", short(text))
    if "id" in reply and reply["id"] != rpc_id:
        raise RetryableError("unreadable_response",
                             short(f"reply id {reply['id']!r} is not {rpc_id!r}"))
    if reply.get("error") is not None:
        raise classify_error(reply["error"])
    return reply.get("result")


def rpc_ids(rpc_id: str, retries: int = 0) -> list[str]:
    """The JSON-RPC ids a call may use once it has been retried ``retries`` times, in order:
    ``rpc_id``, then ``rpc_id.r1`` ... ``rpc_id.r<retries>``.

    Why a chain: the server caches each answer under its id for a day, errors included
    (§1.3). A retry whose first outcome is unknown (a timeout) must reuse the id, so the cache
    replays what happened instead of acting twice; a retry after error 1000, which the server
    cached, needs a new id or it only gets the same 1000 back. Walking the chain from its
    start does both without remembering which retry followed what: an id that already failed
    with 1000 replays that 1000 (nothing runs) and the walk moves on; the first id that did
    not replays its outcome (a result, a refusal, 1009) or, never sent before, runs the call.
    Every new id follows a 1000 that cost a retry, so ``retries`` + 1 ids are enough.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a non-negative int, not {retries!r}")
    return [rpc_id, *(f"{rpc_id}{RETRY_ID_INFIX}{n}" for n in range(1, retries + 1))]


# --------------------------------------------------------------------------------------
# Callbacks (§1.8)
# --------------------------------------------------------------------------------------

def _timestamp(value: Any) -> datetime | None:
    """Integer epoch seconds -> aware datetime; None for 0, absent or odd values."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return datetime.fromtimestamp(value, UTC)


def _user_details(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """The first UserDetailsTO: a list in most callbacks, a single object in friend.update."""
    details = params.get("user_details")
    if isinstance(details, list):
        details = details[0] if details else None
    return details if isinstance(details, Mapping) else {}


def _app_id(params: Mapping[str, Any]) -> str:
    return _user_details(params).get("app_id") or params.get("app_id") or DEFAULT_APP_ID


def _email(params: Mapping[str, Any], key: str = "email", required: bool = True) -> str | None:
    email = params.get(key) or _user_details(params).get("email")
    if email is not None and not isinstance(email, str):
        raise CallbackError(key, f"not a string: {email!r}")
    if required and not email:
        raise CallbackError(key, "missing")
    return email or None


def _required_str(params: Mapping[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise CallbackError(key, "missing" if value in (None, "") else f"not a string: {value!r}")
    return value


def _update_kind(status: int, params: Mapping[str, Any]) -> tuple[EventKind, str | None]:
    """(kind, reason) for a ``messaging.update`` status bitmask."""
    if "answer_id" in params and status & MemberStatus.ACKED:
        return "replied", None
    if status & (MemberStatus.ACKED | MemberStatus.READ):
        return "seen", None
    if status & MemberStatus.RECEIVED:
        return "delivered", None
    if status & (MemberStatus.DELETED | MemberStatus.ACCOUNT_DELETED):
        return "interim", "deleted"
    raise CallbackError("status", f"no known status bit in {status}")


def _update_status(params: Mapping[str, Any]) -> int:
    """The member's ``status`` bitmask; without one, what the timestamps say.

    The getting-started document's own ``messaging.update`` example carries only
    ``received_timestamp``, ``member`` and ``message_key``: a callback without ``status`` is
    read as ACKED|READ when it has an ``acked_timestamp`` and otherwise as RECEIVED (the
    server sends ``messaging.update`` only once the message reached the member).
    """
    status = params.get("status")
    if status is None:
        acked = params.get("acked_timestamp")
        if isinstance(acked, int | float) and not isinstance(acked, bool) and acked > 0:
            return int(MemberStatus.RECEIVED | MemberStatus.ACKED | MemberStatus.READ)
        return int(MemberStatus.RECEIVED)
    if isinstance(status, bool) or not isinstance(status, int):
        raise CallbackError("status", f"not an int: {status!r}")
    return status


def _messaging_update(params: Mapping[str, Any]) -> dict[str, Any]:
    message_key = _required_str(params, "message_key")
    status = _update_status(params)
    kind, reason = _update_kind(status, params)
    data: dict[str, Any] = {"member": _email(params, "member", required=False),
                            "app_id": _app_id(params),
                            "tag": params.get("tag"),
                            "parent_message_key": params.get("parent_message_key")}
    text = None
    if kind == "replied":
        answer_id = params.get("answer_id")
        data.update(button_id=answer_id, dismissed=answer_id is None)
        text = answer_id
    at = params.get("acked_timestamp") if status & MemberStatus.ACKED else None
    return {"kind": kind, "reason": reason, "provider_message_id": message_key,
            "status": str(status), "text": text, "data": data,
            "occurred_at": _timestamp(at or params.get("received_timestamp"))}


def _poke(params: Mapping[str, Any]) -> dict[str, Any]:
    data = {"email": _email(params), "tag": params.get("tag"), "context": params.get("context"),
            "app_id": _app_id(params)}
    return {"kind": "poke", "data": data, "occurred_at": _timestamp(params.get("timestamp"))}


def _flow_result(params: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "flow_result", "data": dict(params)}


def _friend_invited(params: Mapping[str, Any]) -> dict[str, Any]:
    data = {"change": "invited", "email": _email(params), "app_id": _app_id(params),
            "name": params.get("name") or _user_details(params).get("name"),
            "origin": params.get("origin"), "message": params.get("message"),
            "language": params.get("language"), "tag": params.get("tag")}
    return {"kind": "contact", "data": data}


def _friend_invite_result(params: Mapping[str, Any]) -> dict[str, Any]:
    data = {"change": "invite_result", "result": _required_str(params, "result"),
            "email": _email(params, required=False), "app_id": _app_id(params),
            "tag": params.get("tag"), "origin": params.get("origin")}
    return {"kind": "contact", "data": data}


def _friend_broke_up(params: Mapping[str, Any]) -> dict[str, Any]:
    data = {"change": "broke_up", "email": _email(params), "app_id": _app_id(params)}
    return {"kind": "contact", "data": data}


def _friend_update(params: Mapping[str, Any]) -> dict[str, Any]:
    details = _user_details(params)
    data = {"change": "update", "email": _email(params), "app_id": _app_id(params),
            "name": details.get("name"), "language": details.get("language")}
    return {"kind": "contact", "data": data}


def _test(params: Mapping[str, Any]) -> dict[str, Any]:
    value = params.get("value")
    if not isinstance(value, str):
        raise CallbackError("value", "missing" if value is None else f"not a string: {value!r}")
    return {"kind": "test", "data": {"value": value}}


_CALLBACKS = {
    "messaging.update": _messaging_update,
    "messaging.poke": _poke,
    "messaging.flow_member_result": _flow_result,
    "friend.invited": _friend_invited,
    "friend.invite_result": _friend_invite_result,
    "friend.broke_up": _friend_broke_up,
    "friend.update": _friend_update,
    "test.test": _test,
}


def parse_callback(envelope: Mapping[str, Any]) -> ProviderEvent:
    """Normalise one callback envelope ``{"id", "method", "params"}``.

    Message events carry the message key as ``provider_message_id`` and no ``attempt_ref``
    (Rogerthat does not echo our ``context``); the others are matched to no attempt.
    """
    envelope_id = envelope.get("id")
    if not isinstance(envelope_id, str) or not envelope_id:
        raise CallbackError("id", "missing" if envelope_id in (None, "")
                            else f"not a string: {envelope_id!r}")
    method = envelope.get("method")
    if not isinstance(method, str) or not method:
        raise CallbackError("method", "missing")
    params = envelope.get("params")
    if not isinstance(params, Mapping):
        raise CallbackError("params", "missing" if params is None else "not an object")
    dedupe_key = f"rogerthat:{envelope_id}"
    handler = _CALLBACKS.get(method)
    try:
        if handler is None:
            raise CallbackError("method", f"unsupported callback method {method!r}")
        fields = handler(params)
    except CallbackError as exc:
        exc.dedupe_key = dedupe_key  # a retry of it carries the same id: stored once
        raise
    return ProviderEvent(dedupe_key=dedupe_key, raw=dict(envelope), **fields)


def callback_answer(envelope_id: str, result: Any) -> dict[str, Any]:
    """The JSON body that answers a callback (HTTP 200): ``result`` echoes ``value`` for
    ``test.test``, is "accepted"/"decline" for ``friend.invited``, else usually None."""
    return {"id": envelope_id, "result": result, "error": None}


def callback_refusal(envelope: Mapping[str, Any], error: CallbackError) -> dict[str, Any]:
    """The JSON-RPC ``error`` answer (HTTP 200) to a callback we cannot use.

    A 200 with an ``error`` ends the server's retries (it logs 1008), where an HTTP error
    would be retried, again the same, until the admins are told the service will soon be
    disabled. Codes are the server's own envelope codes (§1.4): 1003 incomplete, 1005 params
    not an object, 1006 a method we do not handle, 1001 a field we cannot read (``name``).
    """
    if error.field == "method":
        code = 1006 if isinstance(envelope.get("method"), str) else 1003
    elif error.field == "params":
        code = 1003 if envelope.get("params") is None else 1005
    else:
        code = 1001
    return {"id": envelope.get("id"), "result": None,
            "error": {"code": code, "message": error.message, "name": error.field}}


# --------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------

def _flow_language(xml: str) -> str | None:
    """The ``language`` of a single-language flow document; None for a definition set
    (the server then chooses per member) or a document we cannot read."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    if root.tag != f"{{{FLOW_NAMESPACE}}}messageFlowDefinition":
        return None
    return root.get("language") or None


def content_from_request(request: SendRequest) -> dict[str, Any]:
    """The messenger part of a send request, in the shape ``build_send_params`` reads."""
    alert = request.alert
    flags = (alert_flags(silent=alert.silent, vibrate=alert.vibrate,
                         ring_seconds=alert.ring_seconds, repeat_seconds=alert.repeat_seconds)
             if alert else int(AlertFlag.VIBRATE))
    return {
        "buttons": [b.model_dump() for b in request.buttons],
        # The messenger refuses a message with neither buttons nor a dismiss button
        # (30012): plain text is sent dismissable.
        "allow_dismiss": request.allow_dismiss or not request.buttons,
        "auto_lock": request.auto_lock,
        "branding": request.branding,
        "alert_flags": flags,
        "tag": request.tag,
        "parent_message_key": request.parent_message_key,
        "attachments": [{"content_type": a.content_type, "download_url": str(a.url),
                         "name": a.name, "size": a.size} for a in request.attachments],
    }


def _retries(message: OutboundMessage) -> int:
    """How often the attempt was retried, as ``outbound`` noted it (0 if it did not)."""
    retries = message.content.get("rpc_retries") or 0
    return retries if isinstance(retries, int) and not isinstance(retries, bool) else 0


class RogerthatService:
    """One Rogerthat service account: sends messages, seals them, manages friends, starts
    native flows."""

    name = "rogerthat"
    channels = ("rogerthat",)
    uses_conversations = False

    def __init__(
        self, url: str, api_key: str, service_key: str, timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url
        self.api_key = api_key
        self.service_key = service_key
        self.timeout = timeout
        self.session = session or requests.Session()

    @classmethod
    def from_settings(cls, settings: Settings) -> RogerthatService:
        """The service the settings describe (the local simulator when no URL is set)."""
        url = getattr(settings, "rogerthat_url", None) or (
            f"http://127.0.0.1:{settings.rogerthat_simulator_port}/api/1")
        return cls(
            url=url,
            api_key=settings.rogerthat_api_key.get_secret_value(),
            service_key=settings.rogerthat_service_key.get_secret_value(),
            timeout=settings.rogerthat_timeout_seconds,
        )

    # --- from a send request -------------------------------------------------------------

    def recipient(self, request: SendRequest, channel: str) -> Recipient:
        """The member as the friendship registry knows them: e-mail and messenger app."""
        require_channel(self.channels, channel)
        if request.to.email is None:
            raise ValueError("a messenger hop needs request.to.email (the schema requires it)")
        return Recipient(address=str(request.to.email), scope=request.to.app_id or DEFAULT_APP_ID)

    def outbound(self, request: SendRequest, context: SendContext) -> OutboundMessage:
        """The member, the channel's text and the messenger content (buttons, flags, alert,
        branding, tag, thread, attachments). Content the messenger refuses is a
        ``PermanentError("invalid_message")``, as in ``build_send_params``."""
        member = self.recipient(request, context.channel)
        try:
            content = content_from_request(request)
        except (TypeError, ValueError) as exc:
            raise PermanentError("invalid_message", str(exc)) from None
        content["rpc_retries"] = context.retries  # which JSON-RPC ids ``send`` may use
        return OutboundMessage(attempt_id=context.attempt_id, channel=context.channel,
                               phones=(), text=request.text_for(context.channel),
                               email=member.address, app_id=member.scope, content=content)

    # --- the JSON-RPC call ---------------------------------------------------------------

    def call(self, method: str, params: Mapping[str, Any], rpc_id: str,
             retries: int = 0) -> Any:
        """Returns ``result``. ``rpc_id`` makes a resend replay, not re-execute; ``retries``
        (how often this call was retried) lets it get past a cached 1000 (``rpc_ids``)."""
        return self._call_chain(method, params, rpc_id, retries)[0]

    def _call_chain(self, method: str, params: Mapping[str, Any], rpc_id: str,
                    retries: int) -> tuple[Any, str, str]:
        """(result, reply text, id used): ``_call`` along ``rpc_ids(rpc_id, retries)``,
        moving to the next id only past an error 1000, which the server cached."""
        *earlier, last = rpc_ids(rpc_id, retries)
        for candidate in earlier:
            try:
                result, raw = self._call(method, params, candidate)
            except RetryableError as exc:
                if exc.code != str(UNKNOWN_ERROR):
                    raise
                continue
            return result, raw, candidate
        result, raw = self._call(method, params, last)
        return result, raw, last

    def _call(self, method: str, params: Mapping[str, Any], rpc_id: str) -> tuple[Any, str]:
        """(result, reply text) of one POST, or the error it means (module docstring)."""
        if not isinstance(rpc_id, str) or not rpc_id:
            raise ValueError("rpc_id must be a non-empty string")
        body = json.dumps({"id": rpc_id, "method": method, "params": dict(params)},
                          ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": CONTENT_TYPE, API_KEY_HEADER: self.api_key}
        # idempotent: the server replays an id's result (module docstring)
        resp = http_request(self.session, "POST", self.url, data=body, headers=headers,
                            timeout=self.timeout, idempotent=True)
        if resp.status_code == 401:
            raise AccountRefusal("auth_error", short(resp.reason or resp.text), code="http_401")
        error = classify_http_status(resp, idempotent=True)
        if error is not None:
            error.code = f"http_{resp.status_code}"
            raise error
        return parse_reply(resp.content, rpc_id), resp.content.decode("utf-8", errors="replace")

    # --- messaging.send ------------------------------------------------------------------

    def build_send_params(self, msg: OutboundMessage) -> dict[str, Any]:
        """Every ``messaging.send`` param the SDK sends (§1.7), nulls for unused strings."""
        require_channel(self.channels, msg.channel)
        if not msg.email:
            raise PermanentError("invalid_message", "no recipient email")
        content = msg.content
        try:
            return self._send_params(msg, content)
        except (TypeError, ValueError) as exc:
            raise PermanentError("invalid_message", str(exc)) from None

    @staticmethod
    def _send_params(msg: OutboundMessage, content: Mapping[str, Any]) -> dict[str, Any]:
        flags = message_flags(bool(content.get("allow_dismiss")), bool(content.get("auto_lock")))
        buttons = answers(content.get("buttons") or [])
        if not buttons and not flags & MessageFlag.ALLOW_DISMISS:
            raise ValueError("a message without buttons must allow dismiss")
        alert = check_alert_flags(content.get("alert_flags", int(AlertFlag.VIBRATE)))
        return {
            "parent_message_key": content.get("parent_message_key"),
            "message": msg.text or "",
            "answers": buttons,
            "flags": flags,
            "members": [{"member": msg.email, "app_id": msg.app_id or DEFAULT_APP_ID,
                         "alert_flags": alert}],
            "branding": content.get("branding"),
            "tag": _check_tag(content.get("tag")),
            "service_identity": DEFAULT_SERVICE_IDENTITY,
            "alert_flags": alert,
            "dismiss_button_ui_flags": 0,
            "context": msg.attempt_id,
            "attachments": attachments(content.get("attachments") or []),
            "broadcast_guid": None,
            "step_id": None,
        }

    def summarize(self, msg: OutboundMessage) -> dict[str, Any]:
        """The envelope of ``send`` for the timeline (the API key travels as a header); a
        retry also lists the ids it may walk (``rpc_ids``)."""
        summary = {"url": self.url, "method": "messaging.send", "id": msg.attempt_id,
                   "params": self.build_send_params(msg)}
        retries = _retries(msg)
        if retries:
            summary["ids"] = rpc_ids(msg.attempt_id, retries)
        return summary

    def send(self, message: OutboundMessage) -> SendResult:
        """``messaging.send`` with the attempt id as JSON-RPC id (on a retry, the first id of
        ``rpc_ids`` not spent on a cached 1000); result: the message key. The ``context``
        param stays the attempt id whichever id is used."""
        params = self.build_send_params(message)
        key, raw, _ = self._call_chain("messaging.send", params, message.attempt_id,
                                       _retries(message))
        if not isinstance(key, str) or not key:
            # Accepted without a key: a resend would only replay this answer, and the
            # message may exist, so let the attempt's deadline settle it.
            raise AmbiguousError("no_message_key", short(raw))
        return SendResult(provider_message_ids={message.email or "": key}, code="ok",
                          detail="", raw=echoed(raw))

    # --- other calls -----------------------------------------------------------------------

    def seal(
        self, message_key: str, parent_message_key: str | None = None,
        dirty_behavior: int = DirtyBehavior.CLEAR_DIRTY, *, rpc_id: str, retries: int = 0,
    ) -> None:
        """Lock a message so its answer can no longer change."""
        if isinstance(dirty_behavior, bool) or dirty_behavior not in set(DirtyBehavior):
            raise ValueError(f"dirty_behavior must be 1, 2 or 3, not {dirty_behavior!r}")
        params = {"message_key": message_key, "parent_message_key": parent_message_key,
                  "dirty_behavior": int(dirty_behavior)}
        self.call("messaging.seal", params, rpc_id=rpc_id, retries=retries)

    def invite(
        self, email: str, app_id: str, name: str | None = None, message: str | None = None,
        language: str | None = None, tag: str | None = None, *, rpc_id: str, retries: int = 0,
    ) -> None:
        """Ask a user to connect; the answer arrives later as ``friend.invite_result``, which
        echoes ``tag`` (and, when declined, carries no e-mail: the tag is how it is matched)."""
        params = {"email": email, "name": name, "message": message, "language": language,
                  "tag": tag, "service_identity": DEFAULT_SERVICE_IDENTITY,
                  "app_id": app_id or DEFAULT_APP_ID}
        self.call("friend.invite", params, rpc_id=rpc_id, retries=retries)

    def break_up(self, email: str, app_id: str, *, rpc_id: str, retries: int = 0) -> None:
        """End the friendship (unilateral)."""
        params = {"email": email, "service_identity": DEFAULT_SERVICE_IDENTITY,
                  "app_id": app_id or DEFAULT_APP_ID}
        self.call("friend.break_up", params, rpc_id=rpc_id, retries=retries)

    def start_local_flow(
        self, xml: str, email: str, app_id: str, rpc_id: str, tag: str | None = None,
        retries: int = 0,
    ) -> str:
        """Run a flow (MessageFlowDefinition XML, §1.9) on the member's phone; returns the
        ``message_flow_run_id``. A resend with the same ``rpc_id`` replays the first answer
        (§1.3), so a retried start cannot start the flow twice.

        ``force_language`` is the document's own language: without it the server picks the
        member's language, else the service's, and refuses (40009) if the XML has neither.
        """
        try:
            tag = _check_tag(tag)
        except (TypeError, ValueError) as exc:
            raise PermanentError("invalid_request", str(exc)) from None
        params = {"xml": xml,
                  "members": [{"member": email, "app_id": app_id or DEFAULT_APP_ID,
                               "alert_flags": int(AlertFlag.VIBRATE)}],
                  "service_identity": DEFAULT_SERVICE_IDENTITY, "tag": tag,
                  "parent_message_key": None, "context": None,
                  "force_language": _flow_language(xml), "download_attachments_upfront": False,
                  "push_message": None, "flow": None, "flow_params": None}
        run_id, raw, _ = self._call_chain("messaging.start_local_flow", params, rpc_id, retries)
        if not isinstance(run_id, str) or not run_id:
            raise AmbiguousError("no_flow_run_id", short(raw))  # a resend only replays this
        return run_id

    # --- callbacks -------------------------------------------------------------------------

    def verify_service_key(self, presented: str | None) -> bool:
        """Whether the ``X-Nuntiuz-Service-Key`` header matches, in constant time."""
        if not presented or not self.service_key:
            return False
        return hmac.compare_digest(presented.encode("utf-8"), self.service_key.encode("utf-8"))

    def parse_callback(self, params: Mapping[str, Any]) -> ProviderEvent:
        """See the module-level ``parse_callback``."""
        return parse_callback(params)

    @staticmethod
    def callback_answer(envelope_id: str, result: Any) -> dict[str, Any]:
        """See the module-level ``callback_answer``."""
        return callback_answer(envelope_id, result)

