"""Local simulator of the ContactAtOnce!-style In-App Messaging REST service.

Why it exists: ``switchboard up`` and the integration tests need a CAO that behaves like the
documented one (Basic auth, required fields, VisitIds, transcripts, receipts and agent replies
posted back to us) without credentials or network. It is written from the wire-format copy
(``seeds/contactatonce-inapp-messaging.txt``, guide ``providers.md`` §3) and shares no code with
the production adapter (``shared/providers/contactatonce.py``), so a misreading of the protocol
in one shows up as a failure against the other. Only the HTTP/CLI/delivery-thread scaffolding
comes from ``server.py``.

Provider endpoints (the path after ``/api/`` is matched case-insensitively, like ASP.NET):

* ``POST /api/v1.0/AsyncConversation/Start``: required AdvertiserId, ConsumerId, SessionId,
  ExternalMessageId, Message (strings; numbers accepted); optional Device, OSVersion,
  ConsumerFirstName, ConsumerLastName, ConsumerPhoneNumber, ListingDetails (``name=valueÿ...``).
  Answers ``{"VisitId": <int>, "ConsumerId", "SessionId", "Status": 0, "FailureDescription": ""}``
  with a fresh numeric VisitId.
* ``POST /api/v1.0/AsyncConversation/SendMessage``: required VisitId (int or digit string),
  MessageId, ExternalMessageId, Message, SessionId. An unknown VisitId is HTTP 200 with
  ``Status: 1``. ``MessageId`` is CAO's ("Unique ID assigned to the Message by
  ContactAtOnce"): a non-empty one must be the id of a message of that visit (an agent's or
  the consumer's), else HTTP 200 with ``Status: 1`` naming it, and nothing is stored. The key
  must be there; an empty string is accepted (our reading: the field is present and names no
  message, what a publisher can send before any agent has written). The answer's
  ``SessionId`` is null, as in the doc's sample.
* ``GET /api/v1.0/AsyncConversation/GetConversations/{ConsumerId}``: the consumer's visits
  (numbers as strings, dates like ``6/15/2015 4:13 PM``, as in the sample); none is an empty list.
* ``GET /api/v1.0/AsyncConversation/GetTranscript/{VisitId}``: ``Messages`` (TimeStamp,
  SpeakerName, SpeakerRole ``Consumer``/``Agent``, Message, MediaURL, MessageId,
  ExternalMessageId, Status 0/1/2), NumMessages, TotalUnreadConsumerMessages (consumer messages
  not yet read), VisitId, ConsumerId, SessionId. Unknown visit: ``Status: 1``.

Every call needs ``Authorization: Basic <api_key>`` (the key itself); otherwise HTTP 401 with
``{"Status": 1, "FailureDescription": ...}``. A missing or malformed field is HTTP 400 with
``Status: 1`` and a FailureDescription naming the field. ``Accept`` is recorded, not enforced.
Message ids are numeric and fresh per message; a repeated ExternalMessageId is accepted again
(CAO documents no dedupe) and the new record is flagged ``duplicate_external_id``.

Callbacks go to ``{callback_base_url}/callbacks/contactatonce/status`` (``MessageStatus``
receipts) and ``.../messages`` (``ReceiveMessage``, the agent's messages), JSON with every number
as a string (as in the doc's samples), headers ``Authorization: Basic <api_key>`` (the
document's callback samples carry ``Basic {YOUR_API_KEY}``, the key itself; ``inbound_key``
replaces it for an account set up to present another credential) and
``Accept: version=2;``, from one background thread in due order. A 2xx answer is delivered;
anything else (or no connection) is retried up to ``callback_retries`` times, the n-th retry
``max(callback_delay, 0.05) * 2**(n-1)`` seconds later. Without a ``callback_base_url`` callbacks
are only recorded (outcome ``unsent``).

Scenarios, chosen by the end of the ConsumerId (case ignored), for each consumer message
(``d`` = ``callback_delay``):

=============== =====================================================================
ConsumerId ends callbacks
=============== =====================================================================
(anything else) MessageStatus 1 (delivered) at ``d``
``-read``       MessageStatus 1 at ``d``, then 2 (read) at ``2d``
``-agent``      MessageStatus 1 at ``d``, 2 at ``2d``, then an agent reply at ``3d``:
                "Thanks, <first name or 'there'>! About "<first word>...": ..."
``-silent``     nothing (the message is stored, never delivered)
``-refuse``     the call itself is refused: HTTP 200, ``Status: 1`` (nothing stored)
=============== =====================================================================

Injected faults (``POST /_sim/faults``) apply to the next N authenticated API calls, one each,
in order: ``http503`` (with ``Retry-After`` when ``retry_after`` is given; nothing executed),
``http500`` (executed, then answered 500: the message exists), ``refuse`` (``Status: 1`` with
the given ``description``; nothing executed), ``slow`` (executed, answer held ``seconds``).

Control API (JSON) under ``/_sim/``: ``GET requests`` (every API call: method, path, headers,
body, status, response, fault), ``GET conversations`` (every visit with its messages),
``GET callbacks`` (one entry per delivery attempt), ``GET|POST config`` (POST merges fields),
``GET|POST faults`` (``{"kind", "count"?, "description"?, "seconds"?, "retry_after"?}``),
``POST agent-reply`` (``{"visit_id", "message", "agent_name"?, "media_url"?}``: an agent writes;
ReceiveMessage goes out at once), ``POST receipt`` (``{"external_message_id", "status"}``: a
MessageStatus for our latest message with that id goes out at once), ``POST reset`` (forgets
visits, logs, faults and pending callbacks; keeps config and the id counters).

Run it: ``python -m shared.providers.sandbox.contactatonce --port 8027 --callback-base-url URL``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hmac
import itertools
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from flask import Flask, Response, jsonify, request

from shared.providers.sandbox.server import BackgroundServer, DeliveryThread, serve_until_signal

API_PREFIX = "/api/v1.0/AsyncConversation"
ACCEPT = "version=2;"
SEPARATOR = "\u00ff"
MIN_RETRY_STEP = 0.05
FAULT_KINDS = ("http503", "http500", "refuse", "slow")
SCENARIOS = ("read", "agent", "silent", "refuse")
STATUS_PATH = "/callbacks/contactatonce/status"
MESSAGES_PATH = "/callbacks/contactatonce/messages"
FIRST_VISIT_ID = 12272283  # the doc's sample VisitId; ours count up from it
FIRST_MESSAGE_ID = 52369887
_DIGITS = re.compile(r"[0-9]+")

START_REQUIRED = ("AdvertiserId", "ConsumerId", "SessionId", "ExternalMessageId", "Message")
START_OPTIONAL = ("Device", "OSVersion", "ConsumerFirstName", "ConsumerLastName",
                  "ConsumerPhoneNumber", "ListingDetails")
SEND_REQUIRED = ("ExternalMessageId", "Message", "SessionId")


# --------------------------------------------------------------------------- configuration


@dataclass
class ContactAtOnceSimConfig:
    """Knobs of one simulated publisher account, replaced whole on change."""

    api_key: str = "sandbox-cao-key"
    inbound_key: str | None = None  # what callbacks present; None: the API key, as documented
    callback_base_url: str | None = None
    callback_delay: float = 0.1
    callback_retries: int = 3
    callback_timeout: float = 5.0
    advertiser_name: str = "Sandbox Motors"
    agent_name: str = "Sam Simulator"
    agent_image_url: str = "https://media.contactatonce.invalid/agents/sam.png"

    def __post_init__(self) -> None:
        """Reject nonsense early, so a bad /_sim/config call fails loudly."""
        for name in ("api_key", "advertiser_name", "agent_name", "agent_image_url"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string")
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        if self.inbound_key is not None and not isinstance(self.inbound_key, str):
            raise TypeError("inbound_key must be a string or null")
        if self.callback_base_url is not None and not isinstance(self.callback_base_url, str):
            raise TypeError("callback_base_url must be a string or null")
        if self.callback_base_url:
            self.callback_base_url = self.callback_base_url.rstrip("/")
        for name in ("callback_delay", "callback_timeout"):
            setattr(self, name, _non_negative(name, getattr(self, name)))
        self.callback_retries = int(_non_negative("callback_retries", self.callback_retries))

    @property
    def callback_key(self) -> str:
        """The key callbacks present: the API key unless a separate one is configured."""
        return self.inbound_key or self.api_key

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number")
    if value < 0:
        raise ValueError(f"{name} must be >= 0")
    return float(value)


def scenario(consumer_id: str) -> str:
    """The scenario a ConsumerId picks by its suffix (module docstring), else "default"."""
    lowered = consumer_id.lower()
    return next((name for name in SCENARIOS if lowered.endswith("-" + name)), "default")


def us_time(at: float) -> str:
    """``6/15/2015 4:13 PM`` (UTC), the style of the doc's listing samples."""
    moment = datetime.fromtimestamp(at, UTC)
    hour = moment.hour % 12 or 12
    suffix = "AM" if moment.hour < 12 else "PM"
    return f"{moment.month}/{moment.day}/{moment.year} {hour}:{moment.minute:02d} {suffix}"


def iso_time(at: float) -> str:
    """``2015-01-01T00:00:00`` (UTC, no zone), the style of the ReceiveMessage sample."""
    return datetime.fromtimestamp(at, UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def parse_listing(text: str | None) -> dict[str, str]:
    """``name=valueÿname=value`` back into a dict (pairs without ``=`` keep an empty value)."""
    pairs = (part.partition("=") for part in (text or "").split(SEPARATOR) if part)
    return {name: value for name, _, value in pairs}


# --------------------------------------------------------------------------- errors


class SimError(Exception):
    """An answer with ``Status: 1``: ``http_status`` 400 for bad input, 200 for refusals."""

    def __init__(self, description: str, http_status: int = 400) -> None:
        super().__init__(description)
        self.description = description
        self.http_status = http_status


def _text(body: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    """A string field (ints accepted, as the .NET binder does); SimError naming it."""
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise SimError(f"{name} is required")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise SimError(f"{name} must be a string")
    if required and not value.strip():
        raise SimError(f"{name} is required")
    return value


def _message_id(body: Mapping[str, Any]) -> str:
    """SendMessage's ``MessageId`` as a stripped string ("" allowed, see the module
    docstring); SimError when the key is missing, null or not a string or integer."""
    value = body.get("MessageId")
    if value is None:
        raise SimError("MessageId is required")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise SimError("MessageId must be a string")
    return value.strip()


def _visit_id(value: Any) -> int:
    """VisitId as an int (JSON number or digit string); SimError naming the field."""
    if value is None or value == "":
        raise SimError("VisitId is required")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value.strip())
    raise SimError("VisitId must be an integer")


# --------------------------------------------------------------------------- state


class ContactAtOnceSimState:
    """Everything the simulator remembers; one re-entrant lock guards all of it.

    Tests reach it through ``ContactAtOnceSimServer.state``; ``wait_until`` blocks on a
    condition ("2 callbacks delivered") instead of sleeping.
    """

    def __init__(self, config: ContactAtOnceSimConfig | None = None) -> None:
        self.config = config or ContactAtOnceSimConfig()
        self.lock = threading.RLock()
        self._changed = threading.Condition(self.lock)
        self._visits: dict[int, dict[str, Any]] = {}
        self._requests: list[dict[str, Any]] = []
        self._callbacks: list[dict[str, Any]] = []
        self._faults: list[dict[str, Any]] = []
        self._visit_ids = itertools.count(FIRST_VISIT_ID)
        self._message_ids = itertools.count(FIRST_MESSAGE_ID)
        self.generation = 0  # bumped by reset(); stale pending callbacks are dropped
        self.dispatcher = CallbackDispatcher(self)

    # ---- reading

    def requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._requests)

    def conversations(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._visits.values()))

    def visit(self, visit_id: int | str) -> dict[str, Any] | None:
        with self.lock:
            found = self._visits.get(int(visit_id))
            return copy.deepcopy(found) if found is not None else None

    def callbacks(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._callbacks)

    def delivered(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Bodies of callbacks our side accepted (``kind``: "status" or "message")."""
        with self.lock:
            return [copy.deepcopy(c["body"]) for c in self._callbacks
                    if c["outcome"] == "delivered" and kind in (None, c["kind"])]

    def faults(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._faults)

    def wait_until(
        self, predicate: Callable[[ContactAtOnceSimState], bool], timeout: float = 5.0
    ) -> bool:
        """Block until ``predicate(self)`` holds (re-checked on every change) or time runs out."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def _touch(self) -> None:
        self._changed.notify_all()

    # ---- API operations (each returns the reply object, or raises SimError)

    def start(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``Start``: validate, open a visit, store the first message, schedule its scenario."""
        fields = {name: _text(body, name, required=True) for name in START_REQUIRED}
        optional = {name: _text(body, name, required=False) for name in START_OPTIONAL}
        consumer_id = fields["ConsumerId"] or ""
        if scenario(consumer_id) == "refuse":
            raise SimError(f"Consumer {consumer_id} may not message this advertiser", 200)
        with self.lock:
            visit = self._new_visit(fields, optional)
            message = self._add_consumer_message(visit, fields)
            self._schedule_scenario(visit, message)
            self._touch()
            return {"VisitId": visit["visit_id"], "ConsumerId": consumer_id,
                    "SessionId": visit["session_id"], "Status": 0, "FailureDescription": ""}

    def send_message(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``SendMessage``: a consumer message into an existing visit, naming (``MessageId``)
        one of that visit's messages or none."""
        visit_id = _visit_id(body.get("VisitId"))
        reply_to = _message_id(body)
        fields = {name: _text(body, name, required=True) for name in SEND_REQUIRED}
        with self.lock:
            visit = self._visits.get(visit_id)
            if visit is None:
                raise SimError(f"VisitId {visit_id} not found", 200)
            if scenario(visit["consumer_id"]) == "refuse":
                raise SimError(f"Consumer {visit['consumer_id']} may not message", 200)
            if reply_to and reply_to not in {str(m["message_id"]) for m in visit["messages"]}:
                raise SimError(f"MessageId {reply_to} is not a message of VisitId {visit_id}",
                               200)
            message = self._add_consumer_message(visit, fields)
            message["reply_to"] = reply_to or None
            self._schedule_scenario(visit, message)
            self._touch()
            return {"VisitId": visit_id, "ConsumerId": visit["consumer_id"], "SessionId": None,
                    "Status": 0, "FailureDescription": ""}

    def get_conversations(self, consumer_id: str) -> dict[str, Any]:
        """``GetConversations``: the consumer's visits, numbers as strings like the sample."""
        with self.lock:
            items = [self._conversation_item(v) for v in self._visits.values()
                     if v["consumer_id"] == consumer_id]
        return {"Conversations": items, "ConsumerId": consumer_id, "Status": 0,
                "FailureDescription": None}

    def get_transcript(self, raw_visit_id: str) -> dict[str, Any]:
        """``GetTranscript``: every message of one visit."""
        visit_id = _visit_id(raw_visit_id)
        with self.lock:
            visit = self._visits.get(visit_id)
            if visit is None:
                raise SimError(f"VisitId {visit_id} not found", 200)
            messages = [self._transcript_item(m) for m in visit["messages"]]
            unread = sum(1 for m in visit["messages"]
                         if m["speaker_role"] == "Consumer" and m["status"] < 2)
            return {"Messages": messages, "NumMessages": len(messages),
                    "TotalUnreadConsumerMessages": unread, "VisitId": visit_id,
                    "ConsumerId": visit["consumer_id"], "SessionId": visit["session_id"],
                    "Status": 0, "FailureDescription": None}

    # ---- records

    def _new_visit(self, fields: Mapping[str, Any], optional: Mapping[str, Any]) -> dict[str, Any]:
        visit_id = next(self._visit_ids)
        visit = {
            "visit_id": visit_id, "advertiser_id": fields["AdvertiserId"],
            "consumer_id": fields["ConsumerId"], "session_id": fields["SessionId"],
            "scenario": scenario(fields["ConsumerId"]), "status": 0,
            "consumer": {name: optional[name] for name in START_OPTIONAL[:5]},
            "listing_details": optional["ListingDetails"],
            "listing": parse_listing(optional["ListingDetails"]),
            "agent_name": None, "started_at": time.time(), "messages": [],
        }
        self._visits[visit_id] = visit
        return visit

    def _add_consumer_message(self, visit: dict[str, Any],
                              fields: Mapping[str, Any]) -> dict[str, Any]:
        external_id = fields["ExternalMessageId"]
        duplicate = any(m["external_message_id"] == external_id
                        for v in self._visits.values() for m in v["messages"])
        first = visit["consumer"].get("ConsumerFirstName")
        last = visit["consumer"].get("ConsumerLastName")
        message = {
            "message_id": next(self._message_ids), "external_message_id": external_id,
            "speaker_role": "Consumer",
            "speaker_name": " ".join(n for n in (first, last) if n) or "Customer",
            "message": fields["Message"], "media_url": "", "at": time.time(), "status": 0,
            "duplicate_external_id": duplicate,
        }
        visit["messages"].append(message)
        return message

    def add_agent_message(self, visit_id: int, text: str, agent_name: str | None = None,
                          media_url: str | None = None, delay: float = 0.0) -> int:
        """An agent writes into a visit: stored now, ReceiveMessage posted after ``delay``."""
        with self.lock:
            visit = self._visits.get(visit_id)
            if visit is None:
                raise KeyError(visit_id)
            name = agent_name or self.config.agent_name
            message = {
                "message_id": next(self._message_ids), "external_message_id": None,
                "speaker_role": "Agent", "speaker_name": name, "message": text,
                "media_url": media_url or "", "at": time.time(), "status": 0,
                "agent_image_url": self.config.agent_image_url,
            }
            visit["messages"].append(message)
            visit["agent_name"] = name
            params = self._receive_params(visit, message)
            self.dispatcher.schedule("message", params, delay=delay, generation=self.generation,
                                     on_delivered=lambda: self._set_status(message, 1))
            self._touch()
            return message["message_id"]

    def _set_status(self, message: dict[str, Any], status: int) -> None:
        with self.lock:
            message["status"] = max(message["status"], status)
            self._touch()

    # ---- scenarios and receipts

    def _schedule_scenario(self, visit: dict[str, Any], message: dict[str, Any]) -> None:
        """Receipts (and an agent reply) for one consumer message; see the module docstring."""
        kind, delay = visit["scenario"], self.config.callback_delay
        if kind == "silent":
            return
        self.schedule_receipt(visit, message, 1, delay)
        if kind in ("read", "agent"):
            self.schedule_receipt(visit, message, 2, 2 * delay)
        if kind == "agent":
            first = visit["consumer"].get("ConsumerFirstName") or "there"
            word = (message["message"].split() or ["..."])[0]
            reply = f'Thanks, {first}! About "{word}...": an agent will follow up shortly.'
            visit_id = visit["visit_id"]
            self.dispatcher.push_call(
                lambda: self.add_agent_message(visit_id, reply), 3 * delay, self.generation)

    def schedule_receipt(self, visit: dict[str, Any], message: dict[str, Any], status: int,
                         delay: float = 0.0) -> None:
        """Post MessageStatus ``status`` for a consumer message; the transcript follows on
        the attempt (the provider changed its mind whether or not we listened)."""
        params = {
            "VisitId": str(visit["visit_id"]), "SessionId": visit["session_id"],
            "ConsumerId": visit["consumer_id"],
            "ExternalMessageId": message["external_message_id"],
            "MessageId": str(message["message_id"]), "MessageStatus": str(status),
        }
        self.dispatcher.schedule("status", params, delay=delay, generation=self.generation,
                                 before=lambda: self._set_status(message, status))

    def receipt_for(self, external_message_id: str, status: int) -> int:
        """``/_sim/receipt``: MessageStatus now for the latest consumer message with that id."""
        with self.lock:
            found = [(v, m) for v in self._visits.values() for m in v["messages"]
                     if m["external_message_id"] == external_message_id]
            if not found:
                raise KeyError(external_message_id)
            visit, message = found[-1]
            self.schedule_receipt(visit, message, status)
            return message["message_id"]

    @staticmethod
    def _receive_params(visit: Mapping[str, Any], message: Mapping[str, Any]) -> dict[str, Any]:
        """The ReceiveMessage body, numbers as strings, spelled like the doc's sample."""
        return {
            "VisitId": str(visit["visit_id"]), "SessionId": visit["session_id"],
            "ConsumerId": visit["consumer_id"], "DateTime": iso_time(message["at"]),
            "MessageId": str(message["message_id"]), "Message": message["message"],
            "MediaURL": message["media_url"], "AgentName": message["speaker_name"],
            "AgentImageURL": message["agent_image_url"],
        }

    # ---- listings

    def _conversation_item(self, visit: Mapping[str, Any]) -> dict[str, Any]:
        last = visit["messages"][-1] if visit["messages"] else None
        return {
            "AdvertiserId": visit["advertiser_id"],
            "AdvertiserName": self.config.advertiser_name,
            "AgentName": visit["agent_name"] or "", "SessionId": visit["session_id"],
            "VisitId": str(visit["visit_id"]),
            "LastMessageDateTime": us_time(last["at"]) if last else "",
            "LastMessage": last["message"] if last else "", "Status": str(visit["status"]),
        }

    @staticmethod
    def _transcript_item(message: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "TimeStamp": us_time(message["at"]), "SpeakerName": message["speaker_name"],
            "SpeakerRole": message["speaker_role"], "Message": message["message"],
            "MediaURL": message["media_url"], "MessageId": str(message["message_id"]),
            "ExternalMessageId": message["external_message_id"], "Status": message["status"],
        }

    # ---- logs, faults, control

    def record_request(self, entry: dict[str, Any]) -> None:
        with self.lock:
            entry["seq"] = len(self._requests) + 1
            self._requests.append(entry)
            self._touch()

    def record_callback(self, entry: dict[str, Any], generation: int) -> None:
        with self.lock:
            if generation != self.generation:
                return
            entry["seq"] = len(self._callbacks) + 1
            self._callbacks.append(entry)
            self._touch()

    def add_faults(self, fault: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Queue ``count`` copies of a validated fault for the next API calls."""
        item = _validate_fault(fault)
        count = int(_non_negative("count", fault.get("count", 1)))
        with self.lock:
            self._faults.extend(dict(item) for _ in range(count))
            self._touch()
            return copy.deepcopy(self._faults)

    def take_fault(self) -> dict[str, Any] | None:
        with self.lock:
            return self._faults.pop(0) if self._faults else None

    def update_config(self, changes: Mapping[str, Any]) -> ContactAtOnceSimConfig:
        known = {f.name for f in dataclasses.fields(ContactAtOnceSimConfig)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        with self.lock:
            self.config = dataclasses.replace(self.config, **changes)
            self._touch()
            return self.config

    def reset(self) -> None:
        """Forget visits, logs, faults and pending callbacks; keep config and id counters
        (so an id from before the reset never means a new message)."""
        with self.lock:
            self.generation += 1
            self._visits.clear()
            self._requests.clear()
            self._callbacks.clear()
            self._faults.clear()
            self.dispatcher.clear()
            self._touch()


def _validate_fault(fault: Mapping[str, Any]) -> dict[str, Any]:
    kind = fault.get("kind")
    if kind not in FAULT_KINDS:
        raise ValueError(f"kind must be one of {list(FAULT_KINDS)}")
    item: dict[str, Any] = {"kind": kind}
    if kind == "refuse":
        description = fault.get("description", "Simulated failure")
        if not isinstance(description, str):
            raise TypeError("description must be a string")
        item["description"] = description
    if kind == "slow":
        item["seconds"] = _non_negative("seconds", fault.get("seconds", 5.0))
    if kind == "http503" and fault.get("retry_after") is not None:
        item["retry_after"] = _non_negative("retry_after", fault["retry_after"])
    return item


# --------------------------------------------------------------------------- callback delivery


@dataclass
class _Job:
    kind: str  # "status" | "message" | "call"
    params: dict[str, Any] | None
    generation: int
    attempt: int = 1
    before: Callable[[], None] | None = None  # at the first attempt (e.g. mark as read)
    on_delivered: Callable[[], None] | None = None
    call: Callable[[], Any] | None = None  # kind "call": run in the delivery thread


class CallbackDispatcher(DeliveryThread[_Job]):
    """Posts receipts and agent messages in due order from one thread, with retries.

    Scheduled agent replies are queued as "call" jobs on the same heap, so they come after
    the receipts that precede them and are dropped by a reset like everything else.
    """

    def __init__(self, state: ContactAtOnceSimState) -> None:
        super().__init__(self._deliver, name="contactatonce-sim-callbacks")
        self._state = state
        self._session = requests.Session()
        self._session.trust_env = False  # callbacks go where configured, never via proxies

    def schedule(self, kind: str, params: dict[str, Any], *, delay: float = 0.0,
                 generation: int, before: Callable[[], None] | None = None,
                 on_delivered: Callable[[], None] | None = None) -> None:
        self.push(_Job(kind, params, generation, before=before, on_delivered=on_delivered),
                  delay)

    def push_call(self, call: Callable[[], Any], delay: float, generation: int) -> None:
        self.push(_Job("call", None, generation, call=call), delay)

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        self._session.close()

    def _deliver(self, job: _Job) -> None:
        """One attempt: POST, record, retry on failure."""
        state = self._state
        if job.generation != state.generation:
            return
        if job.call is not None:
            job.call()
            return
        if job.attempt == 1 and job.before is not None:
            job.before()
        cfg = state.config
        entry = self._transmit(cfg, job)
        if entry["outcome"] == "delivered" and job.on_delivered is not None:
            job.on_delivered()
        if entry["outcome"] == "failed":
            entry["outcome"] = self._retry(cfg, job)
        state.record_callback(entry, job.generation)

    def _retry(self, cfg: ContactAtOnceSimConfig, job: _Job) -> str:
        if job.attempt > cfg.callback_retries:
            return "abandoned"
        step = max(cfg.callback_delay, MIN_RETRY_STEP) * 2 ** (job.attempt - 1)
        self.push(dataclasses.replace(job, attempt=job.attempt + 1), step)
        return "retry"

    def _transmit(self, cfg: ContactAtOnceSimConfig, job: _Job) -> dict[str, Any]:
        """POST the JSON body; the log entry with status, parsed answer and outcome."""
        path = STATUS_PATH if job.kind == "status" else MESSAGES_PATH
        url = f"{cfg.callback_base_url}{path}" if cfg.callback_base_url else None
        entry: dict[str, Any] = {"kind": job.kind, "url": url, "body": copy.deepcopy(job.params),
                                 "attempt": job.attempt, "status_code": None,
                                 "response": None, "error": None, "at": time.time()}
        if url is None:
            return {**entry, "outcome": "unsent"}
        headers = {"Authorization": f"Basic {cfg.callback_key}", "Accept": ACCEPT,
                   "Content-Type": "application/json; charset=utf-8"}
        try:
            resp = self._session.post(url, data=json.dumps(job.params).encode("utf-8"),
                                      headers=headers, timeout=cfg.callback_timeout)
        except requests.RequestException as exc:
            return {**entry, "error": f"{type(exc).__name__}: {exc}", "outcome": "failed"}
        with resp:
            entry.update(status_code=resp.status_code, response=_json_or_text(resp.text))
        entry["outcome"] = "delivered" if 200 <= resp.status_code < 300 else "failed"
        return entry


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text[:2000] or None


# --------------------------------------------------------------------------- API endpoints


def _answer(payload: Mapping[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


def _failure(description: str, status: int) -> Response:
    return _answer({"Status": 1, "FailureDescription": description}, status)


def _authorized(cfg: ContactAtOnceSimConfig) -> bool:
    """``Authorization: Basic <api_key>``: the key itself, as CAO's samples show."""
    scheme, _, credentials = (request.headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    return hmac.compare_digest(credentials.strip().encode(), cfg.api_key.encode())


def _operation(state: ContactAtOnceSimState, action: str, rest: str) -> dict[str, Any]:
    """Run one provider operation; raises SimError (or LookupError for an unknown route)."""
    method = request.method
    if method == "POST" and action in ("start", "sendmessage") and not rest:
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            raise SimError("The request body must be a JSON object")
        return state.start(body) if action == "start" else state.send_message(body)
    if method == "GET" and action == "getconversations" and rest:
        return state.get_conversations(rest)
    if method == "GET" and action == "gettranscript" and rest:
        return state.get_transcript(rest)
    raise LookupError(f"{method} {action}")


def _apply_fault(fault: dict[str, Any] | None) -> Response | None:
    """The answer an injected fault gives before executing anything, if any."""
    if fault is None:
        return None
    if fault["kind"] == "http503":
        resp = _failure("Service Unavailable", 503)
        if "retry_after" in fault:
            resp.headers["Retry-After"] = str(int(fault["retry_after"]))
        return resp
    if fault["kind"] == "refuse":
        return _failure(fault["description"], 200)
    return None


def handle_api(state: ContactAtOnceSimState, full_path: str) -> Response:
    """One provider call under ``/api/``: auth, fault, operation, log."""
    prefix = API_PREFIX.removeprefix("/api/").lower() + "/"
    path = full_path[len(prefix):] if full_path.lower().startswith(prefix) else ""
    action, _, rest = path.partition("/")
    entry: dict[str, Any] = {
        "received_at": time.time(), "method": request.method,
        "path": f"/api/{full_path}", "action": action,
        "headers": {k: v for k, v in request.headers.items()
                    if k.lower() in ("authorization", "accept", "content-type")},
        "body": request.get_json(force=True, silent=True), "fault": None,
    }
    if not _authorized(state.config):
        return _log(state, entry, _failure("Authorization has been denied for this request.",
                                           401))
    fault = entry["fault"] = state.take_fault()
    early = _apply_fault(fault)
    if early is not None:
        return _log(state, entry, early)
    try:
        response = _answer(_operation(state, action.lower(), rest))
    except SimError as err:
        response = _failure(err.description, err.http_status)
    except LookupError:
        response = _failure(f"No such operation: {request.method} /api/{full_path}", 404)
    if fault is not None and fault["kind"] == "http500":
        response = _failure("An error has occurred.", 500)
    if fault is not None and fault["kind"] == "slow":
        time.sleep(fault["seconds"])
    return _log(state, entry, response)


def _log(state: ContactAtOnceSimState, entry: dict[str, Any], response: Response) -> Response:
    entry.update(http_status=response.status_code,
                 response=_json_or_text(response.get_data(as_text=True)),
                 answered_at=time.time())
    state.record_request(entry)
    return response


# --------------------------------------------------------------------------- Flask app


def create_app(state: ContactAtOnceSimState | None = None) -> Flask:
    """Build the simulator app around ``state`` (a fresh default one if not given)."""
    state = state or ContactAtOnceSimState()
    app = Flask(__name__)
    app.extensions["contactatonce_simulator"] = state

    def api(path: str) -> Response:
        return handle_api(state, path)

    app.add_url_rule("/api/<path:path>", "api", api, methods=["GET", "POST"])
    _register_control_api(app, state)
    return app


def _bad(message: str, status: int = 400) -> tuple[Response, int]:
    return jsonify({"error": message}), status


def _json_body() -> dict[str, Any] | None:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else None


def _register_control_api(app: Flask, state: ContactAtOnceSimState) -> None:
    """The /_sim/ JSON endpoints tests and developers use to look inside and steer."""

    @app.get("/_sim/requests")
    def sim_requests() -> Response:
        return jsonify({"requests": state.requests()})

    @app.get("/_sim/conversations")
    def sim_conversations() -> Response:
        return jsonify({"conversations": state.conversations()})

    @app.get("/_sim/callbacks")
    def sim_callbacks() -> Response:
        return jsonify({"callbacks": state.callbacks()})

    @app.route("/_sim/config", methods=["GET", "POST"])
    def sim_config() -> Response | tuple[Response, int]:
        if request.method == "GET":
            return jsonify(state.config.to_dict())
        changes = _json_body()
        if changes is None:
            return _bad("expected a JSON object")
        try:
            return jsonify(state.update_config(changes).to_dict())
        except (TypeError, ValueError) as exc:
            return _bad(str(exc))

    @app.route("/_sim/faults", methods=["GET", "POST"])
    def sim_faults() -> Response | tuple[Response, int]:
        if request.method == "GET":
            return jsonify({"faults": state.faults()})
        body = _json_body()
        if body is None:
            return _bad('expected {"kind": ..., "count"?, "description"?, "seconds"?}')
        try:
            return jsonify({"faults": state.add_faults(body)})
        except (TypeError, ValueError) as exc:
            return _bad(str(exc))

    @app.post("/_sim/agent-reply")
    def sim_agent_reply() -> Response | tuple[Response, int]:
        return _agent_reply(state, _json_body())

    @app.post("/_sim/receipt")
    def sim_receipt() -> Response | tuple[Response, int]:
        return _receipt(state, _json_body())

    @app.post("/_sim/reset")
    def sim_reset() -> Response:
        state.reset()
        return jsonify({"ok": True})


def _agent_reply(state: ContactAtOnceSimState, body: dict[str, Any] | None
                 ) -> Response | tuple[Response, int]:
    """POST /_sim/agent-reply: an agent writes into a visit; ReceiveMessage goes out now."""
    if body is None or not isinstance(body.get("message"), str):
        return _bad('expected {"visit_id": ..., "message": ..., "agent_name"?, "media_url"?}')
    for name in ("agent_name", "media_url"):
        if body.get(name) is not None and not isinstance(body[name], str):
            return _bad(f"{name} must be a string")
    try:
        visit_id = _visit_id(body.get("visit_id"))
        message_id = state.add_agent_message(visit_id, body["message"], body.get("agent_name"),
                                             body.get("media_url"))
    except SimError as err:
        return _bad(err.description)
    except KeyError:
        return _bad(f"unknown visit_id {body.get('visit_id')!r}", 404)
    return jsonify({"message_id": message_id}), 202


def _receipt(state: ContactAtOnceSimState, body: dict[str, Any] | None
             ) -> Response | tuple[Response, int]:
    """POST /_sim/receipt: MessageStatus for the latest message with an ExternalMessageId."""
    status = body.get("status") if body else None
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if body is None or not isinstance(body.get("external_message_id"), str) or (
            status not in (0, 1, 2) or isinstance(status, bool)):
        return _bad('expected {"external_message_id": ..., "status": 0|1|2}')
    try:
        message_id = state.receipt_for(body["external_message_id"], status)
    except KeyError:
        return _bad(f"unknown external_message_id {body['external_message_id']!r}", 404)
    return jsonify({"message_id": message_id}), 202


# --------------------------------------------------------------------------- server


class ContactAtOnceSimServer(BackgroundServer):
    """The simulator on a real socket, served from a daemon thread; usable as a context manager."""

    def __init__(self, config: ContactAtOnceSimConfig | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.state = ContactAtOnceSimState(config)
        super().__init__(create_app(self.state), host, port, thread_name="contactatonce-sim-http")

    def _stop_background(self) -> None:
        """The callback thread goes down after the HTTP server, so no new callback is queued."""
        self.state.dispatcher.stop()

    @property
    def url(self) -> str:
        """The base URL the adapter takes (``contactatonce_url``), with its trailing slash."""
        return f"{self.base_url}/"


# --------------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; defaults come from the app settings (``SWITCHBOARD_*`` env)."""
    from shared.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(description="Local ContactAtOnce in-app messaging simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=settings.contactatonce_simulator_port)
    parser.add_argument(
        "--callback-base-url",
        default=os.environ.get("SWITCHBOARD_SIMULATOR_CONTACTATONCE_CALLBACK_BASE_URL") or None,
        help="where our webhooks listen, e.g. http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=settings.contactatonce_api_key.get_secret_value())
    parser.add_argument("--inbound-key",
                        default=settings.effective_contactatonce_inbound_key.get_secret_value(),
                        help="the key callbacks present (default: the in-app inbound key "
                             "setting, which defaults to the API key)")
    parser.add_argument("--callback-delay", type=float, default=0.1)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM, then stop cleanly and return 0."""
    args = _parse_args(argv)
    config = ContactAtOnceSimConfig(api_key=args.api_key, inbound_key=args.inbound_key,
                                    callback_base_url=args.callback_base_url,
                                    callback_delay=args.callback_delay)
    server = ContactAtOnceSimServer(config, host=args.host, port=args.port)
    return serve_until_signal(
        server,
        lambda s: (f"ContactAtOnce simulator listening on {s.url} (control {s.base_url}/_sim/, "
                   f"callbacks -> {args.callback_base_url or 'nowhere, recorded only'})"),
    )


if __name__ == "__main__":
    sys.exit(main())
