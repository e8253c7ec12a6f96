"""Local simulator of the Rogerthat (Mobicage) service API: JSON-RPC calls in, callbacks out.

Why it exists: ``switchboard up`` and the integration tests need a Rogerthat that behaves like
the real one (envelope, auth, validation, dedupe by JSON-RPC id, callbacks with retries) without
credentials or network. It is written from the wire-format reference (guide ``providers.md``
section 1, which cites the 2016 server code) and shares no code with the production adapter
(``shared/providers/rogerthat.py``), so a misreading of the protocol in one shows up as a
failure against the other. Only generic helpers come from the sibling Messaggio simulator, and
the HTTP/CLI/delivery-thread scaffolding from ``server.py``.

Wire format (summary; the guide is authoritative):

* ``POST /api/1`` (``/api/1/`` too). Auth: ``X-Nuntiuz-API-Key`` header (any case), or a
  query/form field of that name. Missing -> HTTP 401 "Missing X-Nuntiuz-API-Key, cannot
  authenticate!"; unknown -> HTTP 401 "Could not match the API key to a service account!" (the
  real server echoes the key; we do not put secrets in status lines). Both have empty bodies.
* Body: JSON when ``Content-Type`` starts with ``application/json-rpc``, else the JSON in form
  field ``data``; a request with neither (e.g. ``application/json``) gets HTTP 500 like the real
  server's KeyError. A body that is not a JSON object: HTTP 200 with an EMPTY body.
* Envelope ``{"id", "method", "params"}``; answer ``{"id", "result", "error"}`` with
  ``Content-Type: application/json-rpc; charset=utf-8``, always HTTP 200. Envelope errors, checked
  in this order and never cached: 1003 id/method/params missing (or null), 1004 id not a string,
  1005 params not an object, 1006 unknown method.
* Dedupe (methods with ``cache_result``, i.e. all but ``friend.get_status``): the answer is stored
  under (API key, id) for 24 h and a repeat gets the stored bytes back without re-executing; a
  repeat while the first call is still running gets 1009. Business errors (3xxxx, 2xxxx) and the
  1000 of a call that blew up inside the method (an injected ``provider_error`` included) are
  cached too, as on the real server: a retry with the same id gets the same 1000 back, and only
  a new id runs the call again.
* Methods: ``messaging.send`` (result: a uuid4 message key), ``messaging.seal`` (null),
  ``friend.invite`` (null), ``friend.break_up`` (null), ``friend.get_status`` (not cached),
  ``messaging.start_local_flow`` (a uuid4 run id; the run is recorded, no member walks it:
  post ``messaging.flow_member_result`` with ``POST /_sim/callback``). It checks 40005 no
  members, 40004 parent key with several members, 30044 tag, 40002 non-friends (with
  ``non_members``), then the XML: 40003 (with ``error``) unless it parses, its root is a
  messageFlowDefinition(Set) in the flow namespace, and startReference and every reference
  name an element id; 40009 for a ``force_language`` the XML lacks.
  ``messaging.send`` validates in the server's order: service identity (60000), parent message
  (30001), flags (30003, 30011 AUTO_LOCK with >1 member), members (30013 duplicates, 30000 not a
  friend with ``member``/``app_id``), alert flags (30017, 30018 several RING_*, 30019 several
  INTERVAL_*), dismiss button ui flags (30034, 30036), tag (30004 > 500 chars, 30044 ``__rt__``),
  attachments (30051), step_id (30056), members vs parent (30033), then answers (30012 ``[]``
  without ALLOW_DISMISS, 30005 type not ``"button"``, 30008 empty id/caption, 30006 action
  scheme, 30035 ui_flags > 3, 30014 duplicate ids). A missing ``members``, ``answers``, ``flags``
  or ``alert_flags`` key, a missing answer ``action`` key, or a value of the wrong JSON type is a
  1000 (the real server raises inside the method). Members are e-mails (app ``rogerthat``) or
  ``{"member", "app_id", "alert_flags"}``.
* Callbacks: ``POST callback_url`` with ``{"method", "params", "id": <uuid1>}`` and headers
  ``Content-Type: application/json-rpc; charset=utf-8`` + ``X-Nuntiuz-Service-Key``, from one
  background thread in due order. Delivered means: HTTP 200 and a non-empty JSON object carrying
  an ``error`` key and the callback's ``id`` (the real server drops a response without these and
  keeps retrying). A JSON-RPC error in the answer ends delivery without retry (the server logs
  1008). Anything else (non-200, not JSON, connection error) is retried with the SAME id up to
  ``callback_retries`` times, the n-th retry ``max(callback_delay, 0.05) * 2**(n-1)`` seconds
  later (the real server waits 30 s * 2**n and never gives up). Retries are counted per callback
  (``GET deliveries``) and in ``stats.callbacks_retried``; a callback still failing after
  ``warn_after_retries`` retries makes the "will soon be disabled" mail the real server sends
  the service's admins (at most one an hour): ``GET warnings``.
* Every callback method the guide lists (``DOCUMENTED_CALLBACKS``: the §1.8 table and the
  callback names of §1.5, with the params of the server's callback signatures) can be sent
  with example params, including the ones a service may not handle: ``POST callback`` without
  ``params``, or ``POST every-callback``.

Friends: pairs (e-mail, app_id). ``config.friends`` (e-mails in app ``rogerthat``) seeds them,
again on reset and whenever that field changes (dropping control-API changes). Any e-mail whose
local part, or one of its dot-separated pieces, starts with ``friend`` is a friend in every app
unless broken up (``friend1@x``, ``dismiss.friend2@x``, ``answer-no.friend3@x``). The control
API adds and removes others.

Scenarios for ``messaging.send``, chosen per member by the local part of the e-mail (case
ignored). "received" is ``messaging.update`` status 1, due ``callback_delay`` after the send;
"acked" is ``messaging.update`` status 7 with ``result_key``, due ``2 * callback_delay``:

==================== ==================================================================
local part starts    callbacks
==================== ==================================================================
(anything else)      received, then acked with the FIRST answer's id (null if no answers)
``dismiss``          received, then acked with ``answer_id`` null (the user dismissed)
``silent``           received only (never answered)
``noreport``         nothing at all (never delivered: fallback deadlines must fire)
``answer-<id>``      received, then acked with ``answer_id`` ``<id>``: the text between
                     ``answer-`` and the next ``.``, e.g. ``answer-no.friend1@x`` -> ``"no"``
                     (sent as given even if no such button exists)
``minimal``          received only, in the getting-started document's own shape:
                     ``received_timestamp``, ``member`` and ``message_key``, no ``status``
==================== ==================================================================

A message sealed (or auto-locked by an earlier answer) before its ack is due is not acked: the
ack is suppressed, as the real server refuses answers to locked messages. ``friend.invite``
schedules ``friend.invite_result`` (origin ``service_invite``): result ``accepted`` (and the
pair becomes a friend), or for a local part starting with ``decline`` result ``decline`` with
``email`` and ``user_details`` null. Inviting a friend is error 20007.

Injected faults (``fail_rate`` chance per authenticated, well-formed call; kind drawn from
``fail_kinds`` by a seeded RNG): ``provider_error`` answers 1000 instead of executing (the
method raised inside and its transaction rolled back) and, like the real server, caches that
1000 under the id: a retry with the same id replays it, a call already answered replays its
own answer instead; ``http500`` answers HTTP 500 without executing or caching; ``slow``
executes, then holds the answer ``slow_seconds`` while the id still counts as running (a retry
meanwhile gets 1009), then caches it. ``latency`` is added to every answer, inside the running
window for executed calls.

Control API (JSON) under ``/_sim/``; list endpoints answer ``{"<name>": [...]}``, oldest first:
``GET messages``, ``GET calls`` (every API call: method, id, params, response, outcome),
``GET callbacks`` (one entry per delivery attempt with the parsed response), ``GET deliveries``
(one entry per callback id: method, attempts, retries, status codes, latest outcome),
``GET warnings`` (the admin mails), ``GET callback-methods`` (each documented method with
example params), ``GET invites`` (``friend.invite`` calls), ``GET flows`` (started local
flows), ``GET stats``, ``GET|POST config`` (POST merges fields),
``POST reset`` (forgets records, counters, the result cache and pending callbacks, re-seeds
friends; keeps config), ``GET|POST friends`` (``{"add": [{"email", "app_id"?, "name"?,
"language"?}], "remove": [{"email", "app_id"?}]}``, plain e-mails allowed), ``POST invited``
(``{"email", "app_id"?, "name"?, "origin"?, "message"?, "language"?, "tag"?}``: a user asks to
connect; ``friend.invited`` goes out at once and, if the service answers ``"accepted"`` or a
JSON-object string, the pair becomes a friend and ``friend.invite_result`` ``established``
follows), ``POST callback`` (``{"method", "params"?, "email"?, "id"?, "delay"?}``: any
callback, a fresh uuid1 id unless given; without ``params`` a documented method gets example
params for ``email``), ``POST every-callback`` (``{"email"?}``: each documented method once),
``POST test`` (``test.test`` with a fresh uuid4 ``value``; the entry records ``echo_ok``).

Run it: ``python -m shared.providers.sandbox.rogerthat --port 8026 --callback-url URL``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import random
import re
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from flask import Flask, Response, jsonify, request

from shared.providers.sandbox.messaggio import MIN_RETRY_STEP, _non_negative
from shared.providers.sandbox.server import BackgroundServer, DeliveryThread, serve_until_signal

log = logging.getLogger(__name__)

FAIL_KINDS: tuple[str, ...] = ("provider_error", "http500", "slow")
JSONRPC_CONTENT_TYPE = "application/json-rpc; charset=utf-8"
API_KEY_HEADER = "X-Nuntiuz-API-Key"
SERVICE_KEY_HEADER = "X-Nuntiuz-Service-Key"
DEFAULT_APP_ID = "rogerthat"
DEFAULT_IDENTITY = "+default+"
RESULT_RETENTION = 24 * 3600.0  # SERVICE_API_RESULT_RETENTION = DAY
MISSING_KEY_REASON = "Missing X-Nuntiuz-API-Key, cannot authenticate!"
UNKNOWN_KEY_REASON = "Could not match the API key to a service account!"
SUPPORT_EMAIL = "support@sandbox.invalid"

# message flags (guide 1.5)
FLAG_ALLOW_DISMISS = 1
FLAG_ALLOW_REPLY = 4
FLAG_ALLOW_REPLY_ALL = 8
FLAG_LOCKED = 32
FLAG_AUTO_LOCK = 64
FLAG_SENT_BY_MFR = 128
ALL_MESSAGE_FLAGS = (1 << 17) - 1  # 1 + 2 + ... + 65536
STRIPPED_FLAGS = (
    FLAG_ALLOW_REPLY
    | FLAG_ALLOW_REPLY_ALL
    | FLAG_SENT_BY_MFR
    | 256  # SENT_BY_JS_MFR
    | 512  # DYNAMIC_CHAT
    | 1024  # NOT_REMOVABLE
    | 4096  # CHAT_STICKY
    | 8192  # ALLOW_CHAT_PICTURE
    | 16384  # ALLOW_CHAT_VIDEO
    | 32768  # ALLOW_CHAT_PRIORITY
    | 65536  # ALLOW_CHAT_STICKY
)
ALERT_VIBRATE = 2
ALERT_RING_FLAGS = (4, 8, 16, 32)
ALERT_INTERVAL_FLAGS = (64, 128, 256, 512, 1024, 2048, 4096)
ALL_ALERT_FLAGS = (1 << 13) - 1
MAX_UI_FLAGS = 3  # EXPECT_NEXT_WAIT_5 | AUTHORIZE_LOCATION
STATUS_RECEIVED, STATUS_ACKED, STATUS_READ = 1, 2, 4
ACTION_SCHEMES = frozenset({"http", "https", "geo", "tel", "mailto", "confirm"})
ATTACHMENT_TYPES = frozenset({"image/png", "image/jpeg", "application/pdf", "video/mp4"})
MAX_TAG_LENGTH = 500
RESERVED_TAG_PREFIX = "__rt__"
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")


# --------------------------------------------------------------------------- configuration


@dataclass
class RogerthatSimConfig:
    """Knobs of one simulated service account, replaced whole on change (readers see a snapshot)."""

    api_key: str = "sandbox-api-key"
    service_key: str = "sandbox-service-key"
    callback_url: str | None = None
    callback_delay: float = 0.1
    latency: float = 0.0
    fail_rate: float = 0.0
    fail_kinds: list[str] = field(default_factory=lambda: ["provider_error"])
    slow_seconds: float = 5.0
    seed: int | None = None
    callback_retries: int = 8  # the real server never gives up; 8 reaches the admin mail
    warn_after_retries: int = 7  # "will soon be disabled" after this many retries
    callback_timeout: float = 5.0
    friends: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Normalise and reject nonsense early, so a bad /_sim/config call fails loudly."""
        if not isinstance(self.api_key, str) or not isinstance(self.service_key, str):
            raise TypeError("api_key and service_key must be strings")
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        if self.callback_url is not None and not isinstance(self.callback_url, str):
            raise TypeError("callback_url must be a string or null")
        for name in ("callback_delay", "latency", "fail_rate", "slow_seconds", "callback_timeout"):
            setattr(self, name, _non_negative(name, getattr(self, name)))
        if self.fail_rate > 1:
            raise ValueError("fail_rate must be within 0..1")
        self.callback_retries = int(_non_negative("callback_retries", self.callback_retries))
        self.warn_after_retries = int(_non_negative("warn_after_retries",
                                                    self.warn_after_retries))
        if isinstance(self.fail_kinds, str) or not isinstance(self.fail_kinds, Sequence):
            raise TypeError("fail_kinds must be a list")
        unknown = [k for k in self.fail_kinds if k not in FAIL_KINDS]
        if unknown:
            raise ValueError(f"unknown fail_kinds {unknown}; known: {list(FAIL_KINDS)}")
        self.fail_kinds = list(self.fail_kinds)
        if isinstance(self.friends, str) or not isinstance(self.friends, Sequence):
            raise TypeError("friends must be a list of e-mails")
        if not all(isinstance(f, str) and EMAIL_RE.fullmatch(f) for f in self.friends):
            raise ValueError("friends must be e-mail addresses")
        self.friends = list(self.friends)
        self.seed = None if self.seed is None else int(self.seed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy for the control API."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- errors


class RpcError(Exception):
    """A JSON-RPC ``error`` object: code, message and any extra fields (``member``, ...)."""

    def __init__(self, code: int, message: str, **fields: Any) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.fields = fields

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.fields}


def unknown_error() -> RpcError:
    """Error 1000 as the real server words it, with a fresh error id."""
    return RpcError(
        1000,
        f"An unknown error occurred. Please contact {SUPPORT_EMAIL} "
        f"and mention error id {uuid.uuid4()}",
    )


class _BadParam(Exception):
    """A parameter the real server would choke on inside the method: answered as 1000."""


def _envelope_error(rpc_id: Any, method: Any, params: Any) -> RpcError | None:
    """The 1003..1006 checks of ``_execute_service_api_call``, in its order."""
    if rpc_id is None or params is None or method is None:
        return RpcError(1003, "Incomplete call request. id, method, params are required fields!")
    if not isinstance(rpc_id, str):
        return RpcError(1004, "id should be a string (the JSON-RPC id)!")
    if not isinstance(params, dict):
        return RpcError(1005, "Params should be a json object.")
    if not isinstance(method, str) or method not in METHODS:
        return RpcError(1006, "Method not found.")
    return None


# --------------------------------------------------------------------------- scenarios


def local_part(email: str) -> str:
    return email.split("@", 1)[0]


def is_auto_friend(email: str) -> bool:
    """``friend…`` e-mails (also ``x.friend…``) are friends without being added."""
    return any(piece.lower().startswith("friend") for piece in local_part(email).split("."))


def message_scenario(email: str) -> tuple[str, str | None]:
    """(scenario, answer id for ``answer-<id>``) for a member, see the module docstring."""
    local = local_part(email)
    lowered = local.lower()
    for name in ("noreport", "silent", "dismiss", "minimal"):
        if lowered.startswith(name):
            return name, None
    if lowered.startswith("answer-"):
        return "answer", local[len("answer-") :].split(".", 1)[0]
    return "default", None


def display_name(email: str) -> str:
    """A readable name made from the local part: ``jane.doe`` -> ``Jane Doe``."""
    return re.sub(r"[._\-+]+", " ", local_part(email)).strip().title() or email


# --------------------------------------------------------------------------- param helpers


def _int(params: Mapping[str, Any], name: str, default: Any = ...) -> int:
    """An int param (JSON booleans are not ints); missing without default -> 1000."""
    if name not in params:
        if default is ...:
            raise _BadParam(f"missing {name}")
        return default
    value = params[name]
    if value is None and default is not ...:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise _BadParam(f"{name} must be an integer")
    return value


def _opt_str(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is not None and not isinstance(value, str):
        raise _BadParam(f"{name} must be a string or null")
    return value


def _list(params: Mapping[str, Any], name: str) -> list[Any]:
    if name not in params:
        raise _BadParam(f"missing {name}")
    value = params[name]
    if not isinstance(value, list):
        raise _BadParam(f"{name} must be a list")
    return value


def _service_identity(params: Mapping[str, Any]) -> str:
    """The simulated service has one identity, ``+default+`` (null/empty mean it too)."""
    identity = _opt_str(params, "service_identity")
    if identity in (None, "", DEFAULT_IDENTITY):
        return DEFAULT_IDENTITY
    raise RpcError(60000, "Service identity does not exist.", service_identity=identity)


def _app_id(value: Any) -> str:
    if value in (None, ""):
        return DEFAULT_APP_ID
    if not isinstance(value, str):
        raise _BadParam("app_id must be a string")
    return value


def _parse_members(raw: list[Any], alert_flags: int) -> list[dict[str, Any]]:
    """Plain e-mails or MemberTO objects -> ``{member, app_id, alert_flags}``."""
    members = []
    for item in raw:
        if isinstance(item, str):
            members.append({"member": item, "app_id": DEFAULT_APP_ID, "alert_flags": alert_flags})
        elif isinstance(item, dict) and isinstance(item.get("member"), str):
            members.append(
                {
                    "member": item["member"],
                    "app_id": _app_id(item.get("app_id")),
                    "alert_flags": _int(item, "alert_flags", alert_flags),
                }
            )
        else:
            raise _BadParam("members must be e-mails or member objects")
    return members


def _validate_flags(flags: int, members: list[dict[str, Any]]) -> None:
    if flags < 0 or flags > ALL_MESSAGE_FLAGS:
        raise RpcError(30003, "Invalid flags.")
    if flags & FLAG_AUTO_LOCK and len(members) > 1:
        raise RpcError(30011, "Autoseal flag implies maximum one member.")


def _validate_alert_flags(members: list[dict[str, Any]]) -> None:
    for member in members:
        value = member["alert_flags"]
        if value < 0 or value > ALL_ALERT_FLAGS:
            raise RpcError(30017, "Invalid alert flags.")
        if sum(1 for f in ALERT_RING_FLAGS if value & f) > 1:
            raise RpcError(30018, "You cannot combine multiple ring flags.")
        if sum(1 for f in ALERT_INTERVAL_FLAGS if value & f) > 1:
            raise RpcError(30019, "You cannot combine multiple interval flags.")


def _validate_tag(tag: str | None) -> None:
    if tag is None:
        return
    if len(tag) > MAX_TAG_LENGTH:
        raise RpcError(30004, "Tag too large.")
    if tag.startswith(RESERVED_TAG_PREFIX):
        raise RpcError(30044, f"Tag should not start with {RESERVED_TAG_PREFIX}")


def _validate_attachments(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
        raise _BadParam("attachments must be a list of objects")
    for attachment in raw:
        if attachment.get("content_type") not in ATTACHMENT_TYPES:
            raise RpcError(30051, "Invalid attachment", reason="Invalid content type")
        url = attachment.get("download_url")
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise RpcError(30051, "Invalid attachment", reason="download_url must be http(s)")
    return copy.deepcopy(raw)


def _validate_answers(raw: list[Any], flags: int) -> list[dict[str, Any]]:
    """AnswerTO checks; returns normalised copies (``mailto:x`` -> ``mailto://x``)."""
    if not raw and not flags & FLAG_ALLOW_DISMISS:
        raise RpcError(30012, "Undismissable messages need at least one answer.")
    answers, seen = [], set()
    for item in raw:
        if not isinstance(item, dict):
            raise _BadParam("answers must be objects")
        if item.get("type") != "button":
            raise RpcError(30005, "Unknown answer widget type", widget_type=item.get("type"))
        answer_id, caption = item.get("id"), item.get("caption")
        if not isinstance(answer_id, str) or not answer_id:
            raise RpcError(30008, "Incomplete button.")
        if not isinstance(caption, str) or not caption:
            raise RpcError(30008, "Incomplete button.")
        if "action" not in item:
            raise _BadParam("answer without action key")  # MISSING is truthy on the server
        action = _button_action(item["action"])
        ui_flags = _int(item, "ui_flags", 0)
        if ui_flags < 0 or ui_flags > MAX_UI_FLAGS:
            raise RpcError(30035, "Invalid button ui flags.", button=answer_id)
        if answer_id in seen:
            raise RpcError(30014, "Duplicate button ids.")
        seen.add(answer_id)
        answers.append(
            {
                "id": answer_id,
                "caption": caption,
                "action": action,
                "ui_flags": ui_flags,
                "type": "button",
            }
        )
    return answers


def _button_action(action: Any) -> str | None:
    if action in (None, ""):
        return None
    if not isinstance(action, str):
        raise _BadParam("action must be a string or null")
    scheme = action.split(":", 1)[0].lower() if ":" in action else ""
    if scheme not in ACTION_SCHEMES:
        raise RpcError(30006, "Unsupported answer action type.", scheme=scheme)
    if scheme == "mailto" and not action[len("mailto:") :].startswith("//"):
        return "mailto://" + action[len("mailto:") :]
    return action


# --------------------------------------------------------------------------- API methods
# Each runs under the state lock and returns the JSON-RPC result or raises RpcError/_BadParam.


def _messaging_send(state: RogerthatSimState, params: dict[str, Any], rpc_id: str) -> Any:
    """``messaging.send``: validate in the server's order, record, schedule the scenario."""
    raw_members, raw_answers = _list(params, "members"), _list(params, "answers")
    raw_flags = _int(params, "flags")
    flags = raw_flags & ~STRIPPED_FLAGS if raw_flags >= 0 else raw_flags  # server strips these
    alert_flags = _int(params, "alert_flags")
    dismiss_ui_flags = _int(params, "dismiss_button_ui_flags", 0)
    message, tag = _opt_str(params, "message") or "", _opt_str(params, "tag")
    parent_key = (
        params["parent_key"] if "parent_key" in params else params.get("parent_message_key")
    )
    if parent_key is not None and not isinstance(parent_key, str):
        raise _BadParam("parent_key must be a string or null")
    step_id = _opt_str(params, "step_id")
    identity = _service_identity(params)
    members = _parse_members(raw_members, alert_flags)

    parent = None
    if parent_key:
        parent = state.find_root_message(parent_key)
        if parent is None:
            raise RpcError(30001, "Parent message not found.")
    else:
        _validate_flags(flags, members)
        state.validate_members(members)
    _validate_alert_flags(members)
    if dismiss_ui_flags and not flags & FLAG_ALLOW_DISMISS:
        raise RpcError(30034, "Undismissable messages can not have dismiss button ui flags.")
    if dismiss_ui_flags < 0 or dismiss_ui_flags > MAX_UI_FLAGS:
        raise RpcError(30036, "Invalid dismiss button ui flags.")
    _validate_tag(tag)
    attachments = _validate_attachments(params.get("attachments"))
    if step_id and not (flags & FLAG_AUTO_LOCK and len(members) == 1):
        raise RpcError(
            30056, "step_id is only allowed in combination with 1 recipient and flag AUTO_LOCK."
        )
    if parent is not None:
        parent_members = {(m["member"].lower(), m["app_id"]) for m in parent["members"]}
        if members and {(m["member"].lower(), m["app_id"]) for m in members} != parent_members:
            raise RpcError(30033, "Members do not reflect parent message members.")
        members = members or [
            {"member": m["member"], "app_id": m["app_id"], "alert_flags": alert_flags}
            for m in parent["members"]
        ]
    answers = _validate_answers(raw_answers, flags)
    return state.add_message(
        {
            "member": members[0]["member"] if members else None,
            "app_id": members[0]["app_id"] if members else None,
            "members": members,
            "message": message,
            "answers": answers,
            "flags": flags,
            "alert_flags": alert_flags,
            "dismiss_button_ui_flags": dismiss_ui_flags,
            "tag": tag,
            "parent_message_key": parent["key"] if parent is not None else None,
            "context": _opt_str(params, "context"),
            "branding": _opt_str(params, "branding"),
            "attachments": attachments,
            "service_identity": identity,
            "step_id": step_id,
            "broadcast_guid": _opt_str(params, "broadcast_guid"),
            "rpc_id": rpc_id,
        }
    )


def _messaging_seal(state: RogerthatSimState, params: dict[str, Any], rpc_id: str) -> Any:
    """``messaging.seal``: dirty_behavior 1..3 (30016), known key (30009), not locked (30010)."""
    dirty = params.get("dirty_behavior")
    if not isinstance(dirty, int) or isinstance(dirty, bool) or dirty not in (1, 2, 3):
        raise RpcError(30016, "Invalid dirty_behavior.")
    key = params.get("message_key")
    parent = (
        params["message_parent_key"]
        if "message_parent_key" in params
        else params.get("parent_message_key")
    )
    state.seal(key, parent, dirty)
    return None


def _friend_invite(state: RogerthatSimState, params: dict[str, Any], rpc_id: str) -> Any:
    """``friend.invite``: 20000 bad e-mail, 20007 already a friend, else invite_result later."""
    email = params.get("email")
    if not isinstance(email, str) or not EMAIL_RE.fullmatch(email):
        raise RpcError(20000, "Invalid email address.", email=email)
    app_id = _app_id(params.get("app_id"))
    identity = _service_identity(params)
    if state.is_friend(email, app_id):
        raise RpcError(20007, "This person is already your friend")
    state.add_invite(
        {
            "email": email,
            "app_id": app_id,
            "name": _opt_str(params, "name"),
            "message": _opt_str(params, "message"),
            "language": _opt_str(params, "language"),
            "tag": _opt_str(params, "tag"),
            "service_identity": identity,
            "rpc_id": rpc_id,
        }
    )
    return None


def _friend_break_up(state: RogerthatSimState, params: dict[str, Any], rpc_id: str) -> Any:
    """``friend.break_up``: unilateral, no callback to the service that did it."""
    email = params.get("email")
    if not isinstance(email, str):
        raise _BadParam("email must be a string")
    _service_identity(params)
    state.remove_friend(email, _app_id(params.get("app_id")))
    return None


def _friend_get_status(state: RogerthatSimState, params: dict[str, Any], rpc_id: str) -> Any:
    """``friend.get_status``: ServiceFriendStatusTO (not cached by the real server)."""
    email = params.get("email")
    if not isinstance(email, str):
        raise _BadParam("email must be a string")
    _service_identity(params)
    app_id = _app_id(params.get("app_id"))
    friend = state.is_friend(email, app_id)
    details = state.user_details(email, app_id) if friend else None
    return {
        "email": email,
        "app_id": app_id,
        "is_friend": friend,
        "name": details["name"] if details else None,
        "avatar": details["avatar_url"] if details else None,
        "language": details["language"] if details else None,
        "app_name": "Rogerthat" if friend else None,
        "last_heartbeat": 0,
        "devices": [],
    }


# ---- messaging.start_local_flow (guide 1.7, 1.9)

FLOW_NS = "{https://rogerth.at/api/1/MessageFlow.xsd}"
FLOW_ELEMENTS = ("end", "message", "formMessage", "resultsFlush", "resultsEmail", "flowCode")
# (element, attribute) pairs that name the next element; "?" marks optional ones.
FLOW_REFERENCES = (
    ("message/answer", "reference"),
    ("message", "dismissReference?"),
    ("formMessage", "positiveReference"),
    ("formMessage", "negativeReference"),
    ("resultsFlush", "reference"),
    ("resultsEmail", "reference"),
    ("flowCode", "exceptionReference"),
    ("flowCode/outlet", "reference"),
)


def _invalid_flow(error: str) -> RpcError:
    """40003 with the reason in ``error``, as the server reports a flow it cannot run."""
    return RpcError(
        40003,
        "Message flow is not valid and cannot be executed in its current state!",
        error=error,
    )


def _flow_definitions(xml: str) -> list[ET.Element]:
    """The definitions of a MessageFlowDefinition(Set) document, each checked; else 40003."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise _invalid_flow(f"XML is not well-formed: {exc}") from None
    if root.tag == FLOW_NS + "messageFlowDefinition":
        definitions = [root]
    elif root.tag == FLOW_NS + "messageFlowDefinitionSet":
        definitions = root.findall(FLOW_NS + "definition")
    else:
        raise _invalid_flow(f"root {root.tag} is not a messageFlowDefinition(Set) of {FLOW_NS}")
    if not definitions:
        raise _invalid_flow("a messageFlowDefinitionSet needs at least one definition")
    for definition in definitions:
        _check_flow_definition(definition)
    return definitions


def _check_flow_definition(definition: ET.Element) -> None:
    """What ``validate_message_flow_definition`` checks of an XML-only flow, in short."""
    for attribute in ("name", "language"):
        if not definition.get(attribute):
            raise _invalid_flow(f"the definition has no {attribute}")
    ids = [e.get("id") for tag in FLOW_ELEMENTS for e in definition.findall(FLOW_NS + tag)]
    if None in ids or "" in ids:
        raise _invalid_flow("a flow element has no id")
    if len(set(ids)) != len(ids):
        raise _invalid_flow("duplicate flow element ids")
    if definition.find(FLOW_NS + "end") is None:
        raise _invalid_flow("An 'End' exit is missing!")
    if definition.get("startReference") not in ids:
        raise _invalid_flow(f"startReference {definition.get('startReference')!r} names no element")
    for path, attribute in FLOW_REFERENCES:
        optional, name = attribute.endswith("?"), attribute.rstrip("?")
        for element in definition.findall("/".join(FLOW_NS + part for part in path.split("/"))):
            target = element.get(name)
            if not (optional and target is None) and target not in ids:
                raise _invalid_flow(f"{path}@{name} {target!r} names no element")


def _messaging_start_local_flow(
    state: RogerthatSimState, params: dict[str, Any], rpc_id: str
) -> Any:
    """``messaging.start_local_flow``: the start checks in the server's order (40005 no members,
    40004 a parent key with several members, 30044 reserved tag, 40002 non-friends), then the
    XML (40003) and ``force_language`` (40009); records the run. Result: a uuid4 run id."""
    xml = params.get("xml")
    if not isinstance(xml, str):
        raise _BadParam("xml must be a string")
    members = _parse_members(_list(params, "members"), ALERT_VIBRATE)
    tag, parent = _opt_str(params, "tag"), _opt_str(params, "parent_message_key")
    force_language = _opt_str(params, "force_language")
    identity = _service_identity(params)
    if not members:
        raise RpcError(40005, "No members supplied!")
    if parent and len(members) > 1:
        raise RpcError(40004, "You can not use the message parent key with multiple members.")
    if tag and tag.startswith(RESERVED_TAG_PREFIX):
        raise RpcError(30044, f"Tag should not start with {RESERVED_TAG_PREFIX}")
    state.validate_flow_members(members)
    definitions = _flow_definitions(xml)
    languages = [d.get("language") for d in definitions]
    if force_language and force_language not in languages:
        raise RpcError(
            40009,
            f"Unexpected language specified in message flow design XML. Expected language "
            f"'{json.dumps(languages)}', got language '{force_language}'.",
            expected_language=json.dumps(languages),
            current_language=force_language,
        )
    return state.add_flow(
        {
            "name": definitions[0].get("name"),
            "languages": languages,
            "start_reference": definitions[0].get("startReference"),
            "members": members,
            "tag": tag,
            "parent_message_key": parent,
            "context": _opt_str(params, "context"),
            "force_language": force_language,
            "service_identity": identity,
            "xml": xml,
            "rpc_id": rpc_id,
        }
    )


Method = Callable[["RogerthatSimState", dict[str, Any], str], Any]
# method -> (implementation, cache_result)
METHODS: dict[str, tuple[Method, bool]] = {
    "messaging.send": (_messaging_send, True),
    "messaging.seal": (_messaging_seal, True),
    "friend.invite": (_friend_invite, True),
    "friend.break_up": (_friend_break_up, True),
    "friend.get_status": (_friend_get_status, False),
    "messaging.start_local_flow": (_messaging_start_local_flow, True),
}


# --------------------------------------------------------------------------- state


def _zero_stats() -> dict[str, Any]:
    return {
        "requests": 0,
        "unauthorized": 0,
        "unparseable": 0,
        "executed": 0,
        "replayed": 0,
        "in_flight_rejected": 0,
        "by_method": {},
        "errors": {},
        "messages": 0,
        "invites": 0,
        "flows": 0,
        "injected": {k: 0 for k in FAIL_KINDS},
        "callbacks_delivered": 0,
        "callbacks_rpc_error": 0,
        "callbacks_failed": 0,
        "callbacks_abandoned": 0,
        "callbacks_unsent": 0,
        "callbacks_suppressed": 0,
        "callbacks_retried": 0,
        "admin_warnings": 0,
        "tests_passed": 0,
        "tests_failed": 0,
    }


@dataclass
class _CachedResult:
    running: bool
    at: float
    body: str | None = None


class RogerthatSimState:
    """Everything the simulator remembers; one re-entrant lock guards all of it.

    Tests reach it through ``RogerthatSimServer.state``; ``wait_until`` blocks on a condition
    ("2 callbacks recorded", "a call is in flight") instead of sleeping.
    """

    def __init__(self, config: RogerthatSimConfig | None = None) -> None:
        self.config = config or RogerthatSimConfig()
        self.lock = threading.RLock()
        self._changed = threading.Condition(self.lock)
        self._rng = random.Random(self.config.seed)
        self._messages: list[dict[str, Any]] = []
        self._by_key: dict[str, dict[str, Any]] = {}
        self._calls: list[dict[str, Any]] = []
        self._callbacks: list[dict[str, Any]] = []
        self._invites: list[dict[str, Any]] = []
        self._flows: list[dict[str, Any]] = []
        self._deliveries: dict[str, dict[str, Any]] = {}  # callback id -> its sends so far
        self._warnings: list[dict[str, Any]] = []
        self._results: dict[tuple[str, str], _CachedResult] = {}
        self._friends: dict[tuple[str, str], dict[str, Any]] = {}
        self._unfriended: set[tuple[str, str]] = set()
        self._stats = _zero_stats()
        self.generation = 0  # bumped by reset(); stale pending callbacks are dropped
        self._seed_friends()
        self.dispatcher = CallbackDispatcher(self)

    # ---- reading

    def messages(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._messages)

    def find_message(self, key: str) -> dict[str, Any] | None:
        with self.lock:
            message = self._by_key.get(key)
            return copy.deepcopy(message) if message is not None else None

    def calls(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._calls)

    def callbacks(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._callbacks)

    def invites(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._invites)

    def deliveries(self) -> list[dict[str, Any]]:
        """One entry per callback id, oldest first: how often it was sent and how it fared."""
        with self.lock:
            return copy.deepcopy(list(self._deliveries.values()))

    def warnings(self) -> list[dict[str, Any]]:
        """The "will soon be disabled" mails the service's admins got, oldest first."""
        with self.lock:
            return copy.deepcopy(self._warnings)

    def flows(self) -> list[dict[str, Any]]:
        """Local flows started with ``messaging.start_local_flow``, oldest first."""
        with self.lock:
            return copy.deepcopy(self._flows)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self._stats)

    def friends(self) -> list[dict[str, Any]]:
        """Explicit friends (auto ``friend…`` e-mails are not listed unless added)."""
        with self.lock:
            return [dict(f) for f in self._friends.values()]

    def in_flight(self) -> int:
        """Cached-method calls currently running (a repeat of one gets 1009)."""
        with self.lock:
            return sum(1 for r in self._results.values() if r.running)

    def wait_until(
        self, predicate: Callable[[RogerthatSimState], bool], timeout: float = 5.0
    ) -> bool:
        """Block until ``predicate(self)`` holds (re-checked on every change) or time runs out."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    # ---- friends

    def _seed_friends(self) -> None:
        self._friends.clear()
        self._unfriended.clear()
        for email in self.config.friends:
            self._put_friend(email, DEFAULT_APP_ID, None, None)

    def _put_friend(
        self, email: str, app_id: str, name: str | None, language: str | None, **extra: Any
    ) -> None:
        pair = (email.lower(), app_id)
        self._unfriended.discard(pair)
        self._friends[pair] = {
            "email": email,
            "app_id": app_id,
            "name": name or display_name(email),
            "language": language or "en",
            **extra,
        }

    def is_friend(self, email: str, app_id: str = DEFAULT_APP_ID) -> bool:
        pair = (email.lower(), app_id)
        with self.lock:
            if pair in self._friends:
                return True
            return is_auto_friend(email) and pair not in self._unfriended

    def add_friend(
        self,
        email: str,
        app_id: str = DEFAULT_APP_ID,
        name: str | None = None,
        language: str | None = None,
        **extra: Any,
    ) -> None:
        with self.lock:
            self._put_friend(email, app_id, name, language, **extra)
            self._touch()

    def remove_friend(self, email: str, app_id: str = DEFAULT_APP_ID) -> None:
        pair = (email.lower(), app_id)
        with self.lock:
            self._friends.pop(pair, None)
            self._unfriended.add(pair)
            self._touch()

    def user_details(self, email: str, app_id: str) -> dict[str, Any]:
        """UserDetailsTO for a member: stored name/language, or ones made from the e-mail."""
        with self.lock:
            known = self._friends.get((email.lower(), app_id), {})
        digest = hashlib.sha1(email.lower().encode()).hexdigest()[:16]
        return {
            "email": email,
            "name": known.get("name") or display_name(email),
            "language": known.get("language") or "en",
            "avatar_url": f"https://rogerth.at/unauthenticated/mobi/cached/avatar/{digest}",
            "app_id": app_id,
        }

    def validate_members(self, members: list[dict[str, Any]]) -> None:
        """30013 on duplicates, then 30000 for the first member that is not a friend."""
        pairs = [(m["member"].lower(), m["app_id"]) for m in members]
        if len(set(pairs)) != len(pairs):
            raise RpcError(30013, "Duplicate members.")
        for member in members:
            if not self.is_friend(member["member"], member["app_id"]):
                raise RpcError(
                    30000,
                    "Member is not in your friends list.",
                    member=member["member"],
                    app_id=member["app_id"],
                )

    # ---- local flows

    def validate_flow_members(self, members: list[dict[str, Any]]) -> None:
        """40002 listing every member that is not a friend (``_validate_start_flow``)."""
        strangers = [
            {"member": m["member"], "app_id": m["app_id"]}
            for m in members
            if not self.is_friend(m["member"], m["app_id"])
        ]
        if strangers:
            raise RpcError(40002, "Non-friend members supplied!", non_members=strangers)

    def add_flow(self, fields: dict[str, Any]) -> str:
        """Record a started local flow; returns its ``message_flow_run_id`` (uuid4)."""
        run_id = str(uuid.uuid4())
        with self.lock:
            self._flows.append({"run_id": run_id, **copy.deepcopy(fields), "at": time.time()})
            self._stats["flows"] += 1
            self._touch()
        return run_id

    # ---- calls and the result cache

    def _touch(self) -> None:
        self._changed.notify_all()

    def roll_fault(self) -> str | None:
        """Decide, with the seeded RNG, whether this call gets an injected fault."""
        with self.lock:
            cfg = self.config
            if cfg.fail_rate <= 0 or not cfg.fail_kinds or self._rng.random() >= cfg.fail_rate:
                return None
            kind = self._rng.choice(cfg.fail_kinds)
            self._stats["injected"][kind] += 1
            return kind

    def begin_call(self, key: tuple[str, str]) -> tuple[str, str | None]:
        """("run", None) after marking ``key`` running, ("running", None) or ("replay", body)."""
        now = time.time()
        with self.lock:
            entry = self._results.get(key)
            if entry is not None and not entry.running and now - entry.at > RESULT_RETENTION:
                entry = None
            if entry is None:
                self._results[key] = _CachedResult(running=True, at=now)
                self._touch()
                return "run", None
            if entry.running:
                return "running", None
            return "replay", entry.body

    def finish_call(self, key: tuple[str, str], body: str) -> None:
        with self.lock:
            self._results[key] = _CachedResult(running=False, at=time.time(), body=body)
            self._touch()

    def abandon_call(self, key: tuple[str, str]) -> None:
        """Drop the running marker of a call that will not store a result."""
        with self.lock:
            entry = self._results.get(key)
            if entry is not None and entry.running:
                del self._results[key]
            self._touch()

    def execute(self, method: str, params: dict[str, Any], rpc_id: str) -> str:
        """Run one API method and serialise the JSON-RPC answer like the server."""
        impl, _ = METHODS[method]
        with self.lock:
            self._stats["executed"] += 1
            by_method = self._stats["by_method"]
            by_method[method] = by_method.get(method, 0) + 1
            try:
                answer = {"id": rpc_id, "result": impl(self, params, rpc_id), "error": None}
            except RpcError as err:
                answer = {"id": rpc_id, "result": None, "error": err.to_dict()}
            except _BadParam as exc:
                log.info("rogerthat sim: %s raised inside the method (%s): 1000", method, exc)
                answer = {"id": rpc_id, "result": None, "error": unknown_error().to_dict()}
            self._touch()
        return json.dumps(answer)

    def record_call(self, entry: dict[str, Any]) -> None:
        """Log one API call (whatever its outcome) and update the counters."""
        with self.lock:
            entry["seq"] = len(self._calls) + 1
            self._calls.append(entry)
            stats = self._stats
            stats["requests"] += 1
            outcome = entry["outcome"]
            if outcome == "unauthorized":
                stats["unauthorized"] += 1
            elif outcome in ("unparseable", "no_data"):
                stats["unparseable"] += 1
            elif outcome == "replayed":
                stats["replayed"] += 1
            elif outcome == "in_flight":
                stats["in_flight_rejected"] += 1
            error = (entry.get("response") or {}).get("error")
            if isinstance(error, dict) and "code" in error:
                code = str(error["code"])
                stats["errors"][code] = stats["errors"].get(code, 0) + 1
            self._touch()

    # ---- messages

    def find_root_message(self, key: str) -> dict[str, Any] | None:
        """A thread root this service sent (children cannot be parents)."""
        message = self._by_key.get(key)
        if message is None or message["parent_message_key"] is not None:
            return None
        return message

    def add_message(self, fields: dict[str, Any]) -> str:
        """Record an accepted message and schedule each member's scenario; returns the key."""
        key = str(uuid.uuid4())
        with self.lock:
            members = [
                {
                    **m,
                    "scenario": message_scenario(m["member"])[0],
                    "status": 0,
                    "received_timestamp": 0,
                    "acked_timestamp": 0,
                    "answer_id": None,
                }
                for m in fields["members"]
            ]
            record = {
                "key": key,
                **copy.deepcopy(fields),
                "members": members,
                "sealed": False,
                "dirty_behavior": None,
                "received_at": time.time(),
            }
            self._messages.append(record)
            self._by_key[key] = record
            self._stats["messages"] += 1
            for index, member in enumerate(members):
                self._schedule_scenario(record, index, member)
            self._touch()
        return key

    def _schedule_scenario(
        self, record: dict[str, Any], index: int, member: dict[str, Any]
    ) -> None:
        scenario, answer_id = message_scenario(member["member"])
        if scenario == "noreport":
            return
        key, delay = record["key"], self.config.callback_delay
        received = self._minimal_params if scenario == "minimal" else self._received_params
        self.dispatcher.schedule(
            "messaging.update",
            delay=delay,
            generation=self.generation,
            prepare=lambda: received(key, index),
        )
        if scenario in ("silent", "minimal"):
            return
        if scenario == "default":
            answer_id = record["answers"][0]["id"] if record["answers"] else None
        self.dispatcher.schedule(
            "messaging.update",
            delay=2 * delay,
            generation=self.generation,
            prepare=lambda: self._acked_params(key, index, answer_id),
        )

    def _update_params(self, record: dict[str, Any], member: dict[str, Any]) -> dict[str, Any]:
        """The fields every ``messaging.update`` carries (guide 1.8)."""
        return {
            "status": member["status"],
            "answer_id": member["answer_id"],
            "received_timestamp": member["received_timestamp"],
            "acked_timestamp": member["acked_timestamp"],
            "member": member["member"],
            "message_key": record["key"],
            "parent_message_key": record["parent_message_key"] or record["key"],
            "tag": record["tag"],
            "service_identity": record["service_identity"],
            "user_details": [self.user_details(member["member"], member["app_id"])],
        }

    def _received_params(self, key: str, index: int) -> dict[str, Any] | None:
        """At due time: the member's device got the message."""
        with self.lock:
            record = self._by_key.get(key)
            if record is None:
                return None
            member = record["members"][index]
            member["status"] |= STATUS_RECEIVED
            member["received_timestamp"] = member["received_timestamp"] or int(time.time())
            self._touch()
            params = self._update_params(record, member)
            params["status"] = STATUS_RECEIVED
            return params

    def _minimal_params(self, key: str, index: int) -> dict[str, Any] | None:
        """Received, as the getting-started document's example shows it: three fields only."""
        params = self._received_params(key, index)
        if params is None:
            return None
        return {name: params[name] for name in ("received_timestamp", "member", "message_key")}

    def _acked_params(self, key: str, index: int, answer_id: str | None) -> dict[str, Any] | None:
        """At due time: the member pressed a button (or dismissed), unless the message is locked."""
        with self.lock:
            record = self._by_key.get(key)
            if record is None or record["flags"] & FLAG_LOCKED:
                return None
            member = record["members"][index]
            now = int(time.time())
            member["status"] |= STATUS_RECEIVED | STATUS_ACKED | STATUS_READ
            member["received_timestamp"] = member["received_timestamp"] or now
            member["acked_timestamp"] = now
            member["answer_id"] = answer_id
            if record["flags"] & FLAG_AUTO_LOCK:
                record["flags"] |= FLAG_LOCKED
            self._touch()
            return {**self._update_params(record, member), "result_key": str(uuid.uuid4())}

    def seal(self, key: Any, parent: Any, dirty_behavior: int) -> None:
        """Lock a message: 30009 unknown (or wrong parent), 30010 already locked."""
        with self.lock:
            record = self._by_key.get(key) if isinstance(key, str) else None
            if record is None:
                raise RpcError(30009, "Message not found.")
            root = record["parent_message_key"]
            if root is None:
                parent_ok = parent in (None, "", record["key"])
            else:
                parent_ok = parent == root
            if not parent_ok:
                raise RpcError(30009, "Message not found.")
            if record["flags"] & FLAG_LOCKED:
                raise RpcError(30010, "Message is already locked.")
            record["flags"] |= FLAG_LOCKED
            record["sealed"] = True
            record["dirty_behavior"] = dirty_behavior
            self._touch()

    # ---- friendship callbacks

    def add_invite(self, invite: dict[str, Any]) -> None:
        """Record a service invite and schedule the human's answer (friend.invite_result)."""
        with self.lock:
            invite = {**invite, "at": time.time()}
            self._invites.append(invite)
            self._stats["invites"] += 1
            self.dispatcher.schedule(
                "friend.invite_result",
                delay=self.config.callback_delay,
                generation=self.generation,
                prepare=lambda: self._invite_result_params(invite),
            )
            self._touch()

    def _invite_result_params(self, invite: dict[str, Any]) -> dict[str, Any]:
        email, app_id = invite["email"], invite["app_id"]
        declined = local_part(email).lower().startswith("decline")
        if not declined:
            self.add_friend(email, app_id, invite.get("name"), invite.get("language"))
        return {
            "email": None if declined else email,
            "result": "decline" if declined else "accepted",
            "tag": invite["tag"],
            "origin": "service_invite",
            "service_identity": invite["service_identity"],
            "user_details": None if declined else [self.user_details(email, app_id)],
        }

    def user_invited(self, body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """A user asks to connect: send friend.invited now, act on the service's answer."""
        email = body["email"]
        app_id = _app_id(body.get("app_id"))
        origin = body.get("origin") or "user_invite"
        name = body.get("name") or display_name(email)
        language = body.get("language") or "en"
        details = {**self.user_details(email, app_id), "name": name, "language": language}
        params = {
            "email": email,
            "name": name,
            "message": body.get("message"),
            "language": language,
            "tag": body.get("tag"),
            "origin": origin,
            "service_identity": DEFAULT_IDENTITY,
            "user_details": [details],
        }

        def on_result(result: Any) -> dict[str, Any]:
            accepted = result == "accepted" or (isinstance(result, str) and result.startswith("{"))
            if accepted:
                extra = {"user_data": result} if result != "accepted" else {}
                self.add_friend(email, app_id, name, language, **extra)
                self.dispatcher.schedule(
                    "friend.invite_result",
                    params={
                        "email": email,
                        "result": "established",
                        "tag": params["tag"],
                        "origin": origin,
                        "service_identity": DEFAULT_IDENTITY,
                        "user_details": [details],
                    },
                    generation=self.generation,
                )
            return {"accepted": accepted}

        callback_id = self.dispatcher.schedule(
            "friend.invited", params=params, generation=self.generation, on_result=on_result
        )
        return callback_id, params

    def send_test(self) -> tuple[str, str]:
        """``test.test`` with a fresh value; the delivery entry records ``echo_ok``."""
        value = str(uuid.uuid4())

        def on_result(result: Any) -> dict[str, Any]:
            ok = result == value
            with self.lock:
                self._stats["tests_passed" if ok else "tests_failed"] += 1
            return {"echo_ok": ok}

        callback_id = self.dispatcher.schedule(
            "test.test", params={"value": value}, generation=self.generation, on_result=on_result
        )
        return callback_id, value

    # ---- callback log

    def record_callback(self, entry: dict[str, Any], generation: int) -> None:
        """Log one delivery attempt (unless a reset happened meanwhile) and bump counters."""
        counter = {
            "delivered": "callbacks_delivered",
            "rpc_error": "callbacks_rpc_error",
            "retry": "callbacks_failed",
            "abandoned": "callbacks_abandoned",
            "unsent": "callbacks_unsent",
        }[entry["outcome"]]
        with self.lock:
            if generation != self.generation:
                return
            entry["seq"] = len(self._callbacks) + 1
            self._callbacks.append(entry)
            self._stats[counter] += 1
            if entry["outcome"] == "abandoned":
                self._stats["callbacks_failed"] += 1
            self._track_delivery(entry)
            self._touch()

    def _track_delivery(self, entry: dict[str, Any]) -> None:
        """Count one send of a callback id (a re-send of an id is a retry, as the service sees
        it) and, when it keeps failing, warn the admins as the real server does."""
        delivery = self._deliveries.setdefault(entry["callback_id"], {
            "callback_id": entry["callback_id"], "method": entry["method"], "attempts": 0,
            "retries": 0, "status_codes": [], "outcome": None, "admin_warned": False})
        delivery["attempts"] += 1
        delivery["retries"] = delivery["attempts"] - 1
        delivery["status_codes"].append(entry["status_code"])
        delivery["outcome"] = entry["outcome"]
        if delivery["retries"]:
            self._stats["callbacks_retried"] += 1
        failing = entry["outcome"] in ("retry", "abandoned")
        if failing and delivery["retries"] >= self.config.warn_after_retries:
            self._warn_admins(delivery)

    def _warn_admins(self, delivery: dict[str, Any]) -> None:
        """The mail after ``warn_after_retries`` failed retries, at most one an hour."""
        if self._warnings and time.time() - self._warnings[-1]["at"] < 3600:
            return
        delivery["admin_warned"] = True
        self._stats["admin_warnings"] += 1
        self._warnings.append({
            "at": time.time(), "callback_id": delivery["callback_id"],
            "method": delivery["method"], "retries": delivery["retries"],
            "subject": "Rogerthat service will soon be disabled",
            "text": f"Callback {delivery['method']} ({delivery['callback_id']}) failed after "
                    f"{delivery['retries']} retries; the service will soon be disabled."})

    def count_suppressed(self) -> None:
        with self.lock:
            self._stats["callbacks_suppressed"] += 1
            self._touch()

    # ---- control

    def update_config(self, changes: Mapping[str, Any]) -> RogerthatSimConfig:
        """Merge fields into the config (validated); ``seed`` reseeds, ``friends`` re-seeds."""
        known = {f.name for f in dataclasses.fields(RogerthatSimConfig)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        with self.lock:
            self.config = dataclasses.replace(self.config, **changes)
            if "seed" in changes:
                self._rng = random.Random(self.config.seed)
            if "friends" in changes:
                self._seed_friends()
            self._touch()
            return self.config

    def reset(self) -> None:
        """Forget records, counters, cached results and pending callbacks; keep the config."""
        with self.lock:
            self.generation += 1
            self._messages.clear()
            self._by_key.clear()
            self._calls.clear()
            self._callbacks.clear()
            self._invites.clear()
            self._flows.clear()
            self._deliveries.clear()
            self._warnings.clear()
            self._results.clear()
            self._stats = _zero_stats()
            self._rng = random.Random(self.config.seed)
            self._seed_friends()
            self.dispatcher.clear()
            self._touch()


# --------------------------------------------------------------------------- documented callbacks

# Every callback method the guide names (providers.md §1.8's table, then the callback names of
# §1.5) with the params of its server signature, in order: what a service must expect, whether
# it handles the method or not.
DOCUMENTED_CALLBACKS: dict[str, tuple[str, ...]] = {
    "test.test": ("value",),
    "messaging.update": ("status", "answer_id", "received_timestamp", "acked_timestamp", "member",
                         "message_key", "parent_message_key", "tag", "service_identity",
                         "user_details"),
    "messaging.form_update": ("status", "form_result", "answer_id", "member", "message_key",
                              "tag", "received_timestamp", "acked_timestamp",
                              "parent_message_key", "result_key", "service_identity",
                              "user_details"),
    "messaging.poke": ("email", "tag", "result_key", "context", "service_identity",
                       "user_details", "timestamp"),
    "messaging.flow_member_result": ("message_flow_run_id", "member", "steps", "end_id",
                                     "end_message_flow_id", "flush_id", "flush_message_flow_id",
                                     "parent_message_key", "tag", "result_key",
                                     "service_identity", "user_details"),
    "friend.invited": ("email", "name", "message", "language", "tag", "origin",
                       "service_identity", "user_details"),
    "friend.invite_result": ("email", "result", "tag", "origin", "service_identity",
                             "user_details"),
    "friend.broke_up": ("email", "service_identity", "user_details"),
    "friend.update": ("user_details",),
    "system.api_call": ("email", "method", "params", "tag", "service_identity", "user_details"),
    "friend.in_reach": ("service_identity", "user_details", "beacon", "proximity", "timestamp"),
    "friend.out_of_reach": ("service_identity", "user_details", "beacon", "timestamp"),
    "friend.is_in_roles": ("service_identity", "user_details", "roles"),
    "messaging.new_chat_message": ("parent_message_key", "message_key", "sender", "message",
                                   "answers", "timestamp", "tag", "service_identity",
                                   "attachments"),
    "system.service_deleted": ("email", "success"),
    "messaging.chat_deleted": ("parent_message_key", "member", "timestamp", "service_identity",
                               "tag"),
    "friend.location_fix": ("service_identity", "user_details", "location", "tracker_key"),
    "friend.register": ("service_identity", "user_details", "origin"),
    "friend.register_result": ("service_identity", "user_details", "origin"),
    "system.brandings_updated": ("brandings", "reason"),
}
SAMPLE_EMAIL = "friend.sample@example.com"
# Values that differ by method; every other name takes its value from _sample_values.
_EXAMPLE_OVERRIDES: dict[str, dict[str, Any]] = {
    "messaging.form_update": {"status": STATUS_RECEIVED | STATUS_ACKED | STATUS_READ,
                              "answer_id": "positive"},
    "friend.invite_result": {"origin": "service_invite"},
    "friend.register": {"origin": "qr"},
    "friend.register_result": {"origin": "qr"},
}


def example_callback_params(
    state: RogerthatSimState, method: str, email: str = SAMPLE_EMAIL
) -> dict[str, Any]:
    """Example params of a documented callback about ``email`` (KeyError for another method):
    the names of its signature with plausible values, fresh keys and timestamps."""
    values = {**_sample_values(state, email), **_EXAMPLE_OVERRIDES.get(method, {})}
    if method == "friend.update":
        values["user_details"] = values["sender"]  # a single object here, not a list (§1.8)
    if method == "messaging.chat_deleted":
        values["member"] = values["sender"]  # a UserDetailsTO in this one
    return {name: values[name] for name in DOCUMENTED_CALLBACKS[method]}


def _sample_values(state: RogerthatSimState, email: str) -> dict[str, Any]:
    """One value per param name of ``DOCUMENTED_CALLBACKS``."""
    now, key = int(time.time()), str(uuid.uuid4())
    details = state.user_details(email, DEFAULT_APP_ID)
    step = {"step_type": "message_step", "step_id": "day", "message_flow_id": None,
            "received_timestamp": now, "acknowledged_timestamp": now, "answer_id": "mon",
            "message": "Which day?", "button": "Monday"}
    return {
        "value": str(uuid.uuid4()), "status": STATUS_RECEIVED, "answer_id": None,
        "received_timestamp": now, "acked_timestamp": 0, "member": email, "email": email,
        "message_key": key, "parent_message_key": key, "tag": None,
        "service_identity": DEFAULT_IDENTITY, "user_details": [details], "sender": details,
        "form_result": {"type": "unicode_result", "result": {"value": "blue"}},
        "result_key": str(uuid.uuid4()), "context": None, "timestamp": now,
        "message_flow_run_id": str(uuid.uuid4()), "steps": [step], "end_id": "done",
        "end_message_flow_id": None, "flush_id": None, "flush_message_flow_id": None,
        "name": details["name"], "message": "Hello", "language": details["language"],
        "origin": "user_invite", "result": "accepted", "method": "sample.method",
        "params": "{}", "beacon": {"uuid": str(uuid.uuid4()), "major": 1, "minor": 2},
        "proximity": "near", "roles": [{"id": 1, "name": "staff", "type": "managed"}],
        "answers": [], "attachments": [], "success": True, "tracker_key": str(uuid.uuid4()),
        "location": {"latitude": 51.05, "longitude": 3.72, "accuracy": 10, "timestamp": now},
        "brandings": [{"id": "b" * 64, "description": "sample"}], "reason": "sample",
    }


# --------------------------------------------------------------------------- callback delivery


@dataclass
class _Callback:
    callback_id: str
    method: str
    params: dict[str, Any] | None
    generation: int
    attempt: int = 1
    prepare: Callable[[], dict[str, Any] | None] | None = None
    on_result: Callable[[Any], dict[str, Any] | None] | None = None


class CallbackDispatcher(DeliveryThread[_Callback]):
    """Posts callbacks in due order from one thread (see ``DeliveryThread`` for why), with retries.

    Callbacks of one message keep their order (received before acked) unless a retry
    intervenes, as on the real server. Params may be built lazily (``prepare``) at the first
    attempt, so timestamps are real and a sealed message is not acked. Neither ``prepare`` nor
    ``on_result`` runs under the heap's lock (they take the state lock).
    """

    def __init__(self, state: RogerthatSimState) -> None:
        super().__init__(self._deliver, name="rogerthat-sim-callbacks")
        self._state = state
        self._session = requests.Session()
        self._session.trust_env = False  # callbacks go where callback_url says, never via proxies

    def schedule(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        delay: float = 0.0,
        generation: int,
        callback_id: str | None = None,
        prepare: Callable[[], dict[str, Any] | None] | None = None,
        on_result: Callable[[Any], dict[str, Any] | None] | None = None,
    ) -> str:
        """Queue a callback ``delay`` seconds from now; returns its JSON-RPC id (uuid1)."""
        callback_id = callback_id or str(uuid.uuid1())
        job = _Callback(
            callback_id=callback_id,
            method=method,
            params=params,
            generation=generation,
            prepare=prepare,
            on_result=on_result,
        )
        self.push(job, delay)
        return callback_id

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; an in-flight delivery finishes first (bounded by callback_timeout)."""
        super().stop(timeout)
        self._session.close()

    def _deliver(self, job: _Callback) -> None:
        """One attempt: build params if needed, POST, judge the answer, retry or log."""
        state = self._state
        if job.generation != state.generation:
            return
        if job.params is None:
            job.params = job.prepare() if job.prepare is not None else {}
            if job.params is None:
                state.count_suppressed()
                return
        cfg = state.config  # read now: a callback_url set later still gets the callback
        entry: dict[str, Any] = {
            "callback_id": job.callback_id,
            "method": job.method,
            "params": copy.deepcopy(job.params),
            "attempt": job.attempt,
            "url": cfg.callback_url,
            "status_code": None,
            "response": None,
            "body": None,
            "error": None,
            "at": time.time(),
        }
        if cfg.callback_url is None:
            state.record_callback({**entry, "outcome": "unsent"}, job.generation)
            return
        status, text, error = self._transmit(cfg, job)
        parsed = _json_or_none(text)
        entry.update(status_code=status, error=error, response=parsed)
        if parsed is None and text:
            entry["body"] = text[:2000]
        verdict = _judge(job.callback_id, status, parsed)
        if verdict == "delivered" and job.on_result is not None:
            entry.update(job.on_result(parsed["result"]) or {})
        if verdict == "failed":
            verdict = self._retry(cfg, job)
        entry["outcome"] = verdict
        state.record_callback(entry, job.generation)

    def _retry(self, cfg: RogerthatSimConfig, job: _Callback) -> str:
        if job.attempt > cfg.callback_retries:
            return "abandoned"
        step = max(cfg.callback_delay, MIN_RETRY_STEP) * 2 ** (job.attempt - 1)
        self.push(dataclasses.replace(job, attempt=job.attempt + 1), step)
        return "retry"

    def _transmit(
        self, cfg: RogerthatSimConfig, job: _Callback
    ) -> tuple[int | None, str | None, str | None]:
        """POST the JSON-RPC call; returns (status, body text, connection error)."""
        assert cfg.callback_url is not None
        body = json.dumps({"method": job.method, "params": job.params, "id": job.callback_id})
        headers = {"Content-Type": JSONRPC_CONTENT_TYPE, SERVICE_KEY_HEADER: cfg.service_key}
        try:
            resp = self._session.post(
                cfg.callback_url,
                data=body.encode("utf-8"),
                headers=headers,
                timeout=cfg.callback_timeout,
            )
        except requests.RequestException as exc:
            return None, None, f"{type(exc).__name__}: {exc}"
        with resp:
            return resp.status_code, resp.text, None


def _json_or_none(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _judge(callback_id: str, status: int | None, parsed: Any) -> str:
    """delivered / rpc_error (logged as 1008, not retried) / failed (to be retried)."""
    if status != 200 or not isinstance(parsed, dict) or not parsed:
        return "failed"
    if "error" not in parsed or parsed.get("id") != callback_id:
        return "failed"  # the server cannot match or read this answer and keeps the callback
    return "rpc_error" if parsed["error"] else "delivered"


# --------------------------------------------------------------------------- API endpoint


def _jsonrpc(body: str) -> Response:
    return Response(body, status=200, content_type=JSONRPC_CONTENT_TYPE)


def _error_body(rpc_id: Any, err: RpcError) -> str:
    return json.dumps({"id": rpc_id, "result": None, "error": err.to_dict()})


def handle_api(state: RogerthatSimState) -> Response:
    """One ``POST /api/1`` call, in the order of ``ServiceApiHandler.post``."""
    cfg = state.config
    entry: dict[str, Any] = {
        "received_at": time.time(),
        "id": None,
        "method": None,
        "params": None,
        "fault": None,
    }
    raw = request.get_data(cache=True)  # before request.values, so the form parser can reuse it
    api_key = request.headers.get(API_KEY_HEADER) or request.values.get(API_KEY_HEADER)
    if not api_key:
        return _finish(state, entry, "unauthorized", Response(b"", f"401 {MISSING_KEY_REASON}"))
    if not hmac.compare_digest(api_key.encode(), cfg.api_key.encode()):
        return _finish(state, entry, "unauthorized", Response(b"", f"401 {UNKNOWN_KEY_REASON}"))
    if (request.content_type or "").startswith("application/json-rpc"):
        text: str | None = raw.decode("utf-8", errors="replace")
    else:
        text = request.form.get("data")
    if text is None:  # the real server's request.POST['data'] raises: HTTP 500
        body = "KeyError: 'data' (send Content-Type: application/json-rpc)"
        return _finish(state, entry, "no_data", Response(body, 500, content_type="text/plain"))
    call = _json_or_none(text)
    if not isinstance(call, dict):
        return _finish(state, entry, "unparseable", Response(b"", 200))
    rpc_id, method, params = call.get("id"), call.get("method"), call.get("params")
    entry.update(id=rpc_id, method=method, params=params)
    envelope = _envelope_error(rpc_id, method, params)
    if envelope is not None:
        _sleep(cfg.latency)
        return _finish(state, entry, "envelope_error", _jsonrpc(_error_body(rpc_id, envelope)))
    return _answer_call(state, entry, api_key, rpc_id, method, params)


def _answer_call(
    state: RogerthatSimState, entry: dict[str, Any], api_key: str, rpc_id: str, method: str,
    params: dict[str, Any],
) -> Response:
    """Faults, dedupe and execution of a well-formed, authenticated call."""
    cfg = state.config
    fault = entry["fault"] = state.roll_fault()
    if fault == "http500":
        _sleep(cfg.latency)
        resp = Response("Internal Server Error", 500, content_type="text/plain")
        return _finish(state, entry, "injected", resp)
    slow = cfg.slow_seconds if fault == "slow" else 0.0
    outcome = "injected" if fault == "provider_error" else "executed"
    if not METHODS[method][1]:  # not cached: always executes
        _sleep(cfg.latency)
        body = _run(state, method, params, rpc_id, fault)
        _sleep(slow)
        return _finish(state, entry, outcome, _jsonrpc(body))
    key = (api_key, rpc_id)
    status, stored = state.begin_call(key)
    if status == "running":
        _sleep(cfg.latency)
        err = RpcError(1009, "Previous request attempt still running")
        return _finish(state, entry, "in_flight", _jsonrpc(_error_body(rpc_id, err)))
    if status == "replay":
        assert stored is not None
        _sleep(cfg.latency + slow)
        return _finish(state, entry, "replayed", _jsonrpc(stored))
    try:
        _sleep(cfg.latency)
        body = _run(state, method, params, rpc_id, fault)
        _sleep(slow)
    except BaseException:
        state.abandon_call(key)
        raise
    state.finish_call(key, body)  # a result, a refusal or a 1000: cached alike
    return _finish(state, entry, outcome, _jsonrpc(body))


def _run(
    state: RogerthatSimState, method: str, params: dict[str, Any], rpc_id: str, fault: str | None
) -> str:
    """The answer of a call that runs: executed, or for an injected ``provider_error`` the 1000
    of a method that raised inside (nothing happened; the server caches that 1000 too)."""
    if fault == "provider_error":
        return _error_body(rpc_id, unknown_error())
    return state.execute(method, params, rpc_id)


def _sleep(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


def _finish(
    state: RogerthatSimState, entry: dict[str, Any], outcome: str, response: Response
) -> Response:
    """Log the call with its answer (parsed when JSON) and hand the answer back."""
    text = response.get_data(as_text=True)
    entry.update(
        outcome=outcome,
        http_status=response.status_code,
        response=_json_or_none(text),
        answered_at=time.time(),
    )
    state.record_call(entry)
    return response


# --------------------------------------------------------------------------- Flask app


def create_app(state: RogerthatSimState | None = None) -> Flask:
    """Build the simulator app around ``state`` (a fresh default one if not given)."""
    state = state or RogerthatSimState()
    app = Flask(__name__)
    app.extensions["rogerthat_simulator"] = state

    def api() -> Response:
        return handle_api(state)

    app.add_url_rule("/api/1", "api", api, methods=["POST"])
    app.add_url_rule("/api/1/", "api_slash", api, methods=["POST"])
    _register_control_api(app, state)
    return app


def _bad(message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), 400


def _register_control_api(app: Flask, state: RogerthatSimState) -> None:
    """The /_sim/ JSON endpoints tests and developers use to look inside and steer."""

    @app.get("/_sim/messages")
    def sim_messages() -> Response:
        return jsonify({"messages": state.messages()})

    @app.get("/_sim/calls")
    def sim_calls() -> Response:
        return jsonify({"calls": state.calls()})

    @app.get("/_sim/callbacks")
    def sim_callbacks() -> Response:
        return jsonify({"callbacks": state.callbacks()})

    @app.get("/_sim/stats")
    def sim_stats() -> Response:
        return jsonify(state.stats())

    @app.get("/_sim/invites")
    def sim_invites() -> Response:
        return jsonify({"invites": state.invites()})

    @app.get("/_sim/flows")
    def sim_flows() -> Response:
        return jsonify({"flows": state.flows()})

    @app.route("/_sim/config", methods=["GET", "POST"])
    def sim_config() -> Response | tuple[Response, int]:
        if request.method == "GET":
            return jsonify(state.config.to_dict())
        changes = request.get_json(silent=True)
        if not isinstance(changes, dict):
            return _bad("expected a JSON object")
        try:
            return jsonify(state.update_config(changes).to_dict())
        except (TypeError, ValueError) as exc:
            return _bad(str(exc))

    @app.post("/_sim/reset")
    def sim_reset() -> Response:
        state.reset()
        return jsonify({"ok": True})

    @app.route("/_sim/friends", methods=["GET", "POST"])
    def sim_friends() -> Response | tuple[Response, int]:
        if request.method == "POST":
            error = _change_friends(state, request.get_json(silent=True))
            if error:
                return _bad(error)
        return jsonify({"friends": state.friends()})

    @app.post("/_sim/invited")
    def sim_invited() -> Response | tuple[Response, int]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("email"), str):
            return _bad('expected {"email": ..., "app_id"?, "name"?, "origin"?}')
        callback_id, params = state.user_invited(body)
        return jsonify({"callback_id": callback_id, "params": params}), 202

    @app.post("/_sim/test")
    def sim_test() -> tuple[Response, int]:
        callback_id, value = state.send_test()
        return jsonify({"callback_id": callback_id, "value": value}), 202

    _register_callback_api(app, state)


def _register_callback_api(app: Flask, state: RogerthatSimState) -> None:
    """The /_sim/ endpoints that send callbacks and show how their delivery went."""

    @app.post("/_sim/callback")
    def sim_callback() -> Response | tuple[Response, int]:
        return _schedule_callback(state, request.get_json(silent=True))

    @app.post("/_sim/every-callback")
    def sim_every_callback() -> Response | tuple[Response, int]:
        email = (request.get_json(silent=True) or {}).get("email") or SAMPLE_EMAIL
        if not isinstance(email, str) or not EMAIL_RE.fullmatch(email):
            return _bad("email must be an e-mail address")
        sent = [{"method": method, "callback_id": state.dispatcher.schedule(
            method, params=example_callback_params(state, method, email),
            generation=state.generation)} for method in DOCUMENTED_CALLBACKS]
        return jsonify({"callbacks": sent}), 202

    @app.get("/_sim/callback-methods")
    def sim_callback_methods() -> Response:
        return jsonify({"callback-methods": [
            {"method": method, "params": example_callback_params(state, method)}
            for method in DOCUMENTED_CALLBACKS]})

    @app.get("/_sim/deliveries")
    def sim_deliveries() -> Response:
        return jsonify({"deliveries": state.deliveries()})

    @app.get("/_sim/warnings")
    def sim_warnings() -> Response:
        return jsonify({"warnings": state.warnings()})


def _schedule_callback(state: RogerthatSimState, body: Any) -> Response | tuple[Response, int]:
    """POST /_sim/callback: any method; a documented one without ``params`` gets examples."""
    if not isinstance(body, dict) or not isinstance(body.get("method"), str):
        return _bad('expected {"method": ..., "params"?: {...}, "email"?, "id"?, "delay"?}')
    method, params, callback_id = body["method"], body.get("params"), body.get("id")
    if callback_id is not None and not isinstance(callback_id, str):
        return _bad("id must be a string")
    email = body.get("email") or SAMPLE_EMAIL
    if not isinstance(email, str) or not EMAIL_RE.fullmatch(email):
        return _bad("email must be an e-mail address")
    if params is None:
        known = method in DOCUMENTED_CALLBACKS
        params = example_callback_params(state, method, email) if known else {}
    try:
        delay = _non_negative("delay", body.get("delay", 0))
    except (TypeError, ValueError) as exc:
        return _bad(str(exc))
    callback_id = state.dispatcher.schedule(
        method, params=params, delay=delay, generation=state.generation, callback_id=callback_id
    )
    return jsonify({"callback_id": callback_id, "params": params}), 202


def _change_friends(state: RogerthatSimState, body: Any) -> str | None:
    """POST /_sim/friends: apply ``add`` then ``remove``; returns an error text or None."""
    if not isinstance(body, dict):
        return 'expected {"add": [...], "remove": [...]}'
    changes: dict[str, list[dict[str, Any]]] = {}
    for action in ("add", "remove"):
        items = body.get(action) or []
        if not isinstance(items, list):
            return f"{action} must be a list"
        parsed = []
        for item in items:
            item = {"email": item} if isinstance(item, str) else item
            if not isinstance(item, dict) or not isinstance(item.get("email"), str):
                return f"{action} entries must be e-mails or objects with an email"
            parsed.append(item)
        changes[action] = parsed
    for item in changes["add"]:
        state.add_friend(
            item["email"],
            _app_id(item.get("app_id")),
            item.get("name"),
            item.get("language"),
        )
    for item in changes["remove"]:
        state.remove_friend(item["email"], _app_id(item.get("app_id")))
    return None


# --------------------------------------------------------------------------- server


class RogerthatSimServer(BackgroundServer):
    """The simulator on a real socket, served from a daemon thread; usable as a context manager."""

    def __init__(
        self, config: RogerthatSimConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.state = RogerthatSimState(config)
        super().__init__(create_app(self.state), host, port, thread_name="rogerthat-sim-http")

    def _stop_background(self) -> None:
        """The callback thread goes down after the HTTP server, so no new callback is queued."""
        self.state.dispatcher.stop()

    @property
    def url(self) -> str:
        """The API endpoint, e.g. ``http://127.0.0.1:8026/api/1``."""
        return f"{self.base_url}/api/1"


# --------------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; defaults come from the same env vars as the app settings."""
    env = os.environ
    parser = argparse.ArgumentParser(description="Local Rogerthat service API simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=int(env.get("SWITCHBOARD_ROGERTHAT_SIMULATOR_PORT") or 8026)
    )
    parser.add_argument(
        "--callback-url", default=env.get("SWITCHBOARD_SIMULATOR_ROGERTHAT_CALLBACK_URL") or None
    )
    parser.add_argument(
        "--api-key", default=env.get("SWITCHBOARD_ROGERTHAT_API_KEY") or "sandbox-api-key"
    )
    parser.add_argument(
        "--service-key",
        default=env.get("SWITCHBOARD_ROGERTHAT_SERVICE_KEY") or "sandbox-service-key",
    )
    parser.add_argument("--callback-delay", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--friend", action="append", default=[], help="an e-mail that is a friend (repeatable)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM, then stop cleanly and return 0."""
    args = _parse_args(argv)
    config = RogerthatSimConfig(
        api_key=args.api_key,
        service_key=args.service_key,
        callback_url=args.callback_url,
        callback_delay=args.callback_delay,
        seed=args.seed,
        friends=args.friend,
    )
    server = RogerthatSimServer(config, host=args.host, port=args.port)
    return serve_until_signal(
        server,
        lambda s: (
            f"Rogerthat simulator listening on {s.url} (control {s.base_url}/_sim/, "
            f"callbacks -> {args.callback_url or 'nowhere, recorded only'})"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
