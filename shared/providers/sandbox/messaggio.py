"""Local simulator of the Messaggio-style ("SMS Online Bulk") Viber + SMS gateway.

Why it exists: ``switchboard up`` and the integration tests need a gateway that behaves like the
real one (wire format, signatures, delivery reports, no dedupe, flaky moments) without
credentials or network. It is written from the wire-format reference (guide ``providers.md``
section 2) and deliberately shares no code with the production adapter
(``shared/providers/messaggio.py``), so a misreading of the protocol in one shows up as a failure
against the other.

Wire format (summary; the guide is authoritative):

* ``GET|POST /``: form or query fields ``user, from, phone`` (repeated), ``txt, sign,
  sending_method, image_id, button_text, button_link, p_transaction_id, dlr, dlr_timeout,
  expiry_txt, charset, delay``. ``sign = md5_hex(user + from + phone_1..phone_n + txt + secret)``
  over the raw UTF-8 text, ``txt`` left out when absent. An empty value counts as absent.
  Answer: HTTP 200, ``text/xml``: ``<response><code>N</code><tech_message>..</tech_message>
  [<msg_id phone="..">uuid4</msg_id>...]</response>``; ``msg_id`` elements only when ``dlr=1``.
  Codes: 0 accepted, -1 ``PARAM ERROR (<field>)``, -2 bad user or sign, -4 temporary error.
  Checks run in this order: presence (user, from, phone, sign, then txt unless image_id), auth,
  then values (sending_method, phone = 7..15 digits, from <= 11 chars, txt <= 2048, dlr 0/1,
  dlr_timeout integer 60..86400, delay 0..10080, charset, image_id issued by ``/upload/``,
  button_text <= 30, button_link <= 2048, sms needs txt). ``sending_method`` absent means sms,
  as in the gateway's SMS document. ``delay`` and ``charset`` are validated and recorded only.
* ``POST /upload/`` (multipart ``login, image, sign``), ``sign = md5_hex(login + md5_hex(file) +
  secret)``: JSON ``{"status": 0, "image_id": <64 hex>}``; errors: 1 missing field (``error``
  names it), 2 ``Invalid sign`` (also an unknown login), 3 larger than 10 MB, 4 not JPG/PNG/GIF
  (checked by magic bytes). Uploaded images survive ``/_sim/reset`` like a real media store.
* Delivery reports (only for ``dlr=1``) go to ``dlr_url`` by POST (form) or GET (query). Viber
  gets extended reports (``msg_id, p_transaction_id, type`` + ``status`` / ``status_extended`` /
  ``text``), SMS the standard numeric one (``msg_id, p_transaction_id, status``). HTTP 200, 400
  and 404 end redelivery (gateway FAQ), anything else, 204 included, and connection errors are
  retried up to ``report_retries`` times, the n-th retry ``max(report_delay, 0.05) * n`` seconds
  after the failure. Like the real gateway, the simulator does NOT dedupe: every accepted request
  gets fresh msg_ids, whatever its ``p_transaction_id``.
* Expiry: a Viber message that is not delivered gets ``status_extended=VIBER_EXPIRED`` when its
  ``dlr_timeout`` passes, rounded down to whole minutes (RU doc), 14 days when absent; a minute
  lasts ``minute_seconds`` (60, tests shrink it).
* The account's SMS fallback (``sms_fallback``, the option the gateway's manager switches on):
  an ``undelivered`` Viber report (``VIBER_EXPIRED`` included, whatever the reason) makes the
  gateway send the SMS itself when that report falls due: ``expiry_txt``, else ``txt``, to the
  same phone, recorded as an ``sms`` message with ``by_gateway: true``. The documents do not say
  which ids its reports carry (providers.md §2.9); here they are the Viber message's ``msg_id``
  and ``p_transaction_id``, with the standard numeric ``status`` of the phone's SMS scenario.
* ``echo_transaction_id: false``: reports carry no ``p_transaction_id`` (``msg_id`` alone).
  ``report_before_answer``: the send's answer waits until the first report of each accepted
  message has been delivered (at most ``report_timeout``), so the report arrives first.

Scenarios, chosen by the LAST 4 DIGITS of each phone. Report ``i`` (0-based) of a message is
due ``report_delay * (i + 1)`` seconds after acceptance, plus the extra shown:

====== ============================================================ ==================
last 4 viber (extended reports)                                      sms (numeric)
====== ============================================================ ==================
other  type=delivery status=delivered, then type=seen                status=0
0001   type=delivery status=undelivered                              status=0
       status_extended=VIBER_USER_NOT_FOUND
0002   no report at all (the fallback deadline must fire)            status=0
0003   delivered, seen, then type=reply text="Yes, confirmed"        status=0
0004   type=delivery status=undelivered                              status=-1
       status_extended=VIBER_BLOCKED_BY_USER
0005   delivered, 3 s late (report_delay + 3 s): a late delivery     status=0
0006   interim type=delivery status=buffered, then VIBER_EXPIRED     status=0
       when the dlr_timeout passes
01NN   type=delivery status=undelivered with the NN-th value of      status=0
       ``STATUS_EXTENDED`` (0101 .. 0112), the document's table;
       0104 VIBER_EXPIRED comes when the dlr_timeout passes
====== ============================================================ ==================

Injected faults (``fail_rate`` chance per send request, kind drawn from ``fail_kinds`` by a
seeded RNG): ``drop`` closes the connection after reading the request (a refused connection
cannot be faked from inside Flask), ``temporary`` answers code -4, ``http500`` HTTP 500,
``http503`` HTTP 503 with ``Retry-After: 1``; none of these accept the message. ``slow`` accepts
the message at once (recorded, reports scheduled) and holds the answer back ``slow_seconds``: the
ambiguous timeout where the message did go out. ``latency`` is added to every send answer.
Refused connections come from ``SimulatorServer.refuse_connections(seconds)``: the listener
closes for a while (the dev server opens a new connection per call, so calls then fail).

Control API (JSON) under ``/_sim/``: ``GET messages``, ``GET stats``, ``GET reports`` (one entry
per delivery attempt with its HTTP result), ``GET images``, ``GET|POST config`` (POST merges
fields into the config), ``POST reset`` (clears records, counters and pending reports; keeps
config and images), ``POST report`` ``{"msg_id", "params", "delay"?}`` pushes any report.
Stats: ``requests == accepted + rejected`` count send requests; ``messages`` and ``by_channel``
count accepted messages (one per phone) and the gateway's own SMS (also ``gateway_sms``).

Run it: ``python -m shared.providers.sandbox.messaggio --port 8025 --dlr-url URL``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import hmac
import itertools
import os
import random
import re
import secrets
import socket
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import requests
from flask import Flask, Response, jsonify, request
from werkzeug.datastructures import MultiDict

from shared.providers.sandbox.server import BackgroundServer, DeliveryThread, serve_until_signal

FailKind = Literal["drop", "temporary", "http500", "http503", "slow"]
FAIL_KINDS: tuple[str, ...] = ("drop", "temporary", "http500", "http503", "slow")
STOP_CODES = frozenset({200, 400, 404})  # gateway FAQ: these end redelivery of a report
MAX_IMAGE_BYTES = 10 * 1024 * 1024
LATE_DELIVERY_EXTRA = 3.0
MIN_RETRY_STEP = 0.05
CHARSETS = frozenset({"UTF8", "UTF-8", "UTF-16BE", "UCS-2", "CP1251"})
PHONE_RE = re.compile(r"[0-9]{7,15}")
INT_RE = re.compile(r"[0-9]+")
IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)
# field -> maximum length, from the parameter table of the gateway docs
MAX_LENGTHS: tuple[tuple[str, int], ...] = (
    ("from", 11),
    ("txt", 2048),
    ("button_text", 30),
    ("button_link", 2048),
)


# --------------------------------------------------------------------------- configuration


@dataclass
class SimulatorConfig:
    """Knobs of one simulated account, replaced whole on change so readers see one snapshot."""

    user: str = "sandbox"
    secret: str = "sandbox-secret"
    dlr_url: str | None = None
    dlr_method: Literal["POST", "GET"] = "POST"
    report_delay: float = 0.2
    latency: float = 0.0
    fail_rate: float = 0.0
    fail_kinds: list[str] = field(default_factory=lambda: ["temporary"])
    slow_seconds: float = 5.0
    seed: int | None = None
    report_retries: int = 5
    report_timeout: float = 5.0
    sms_fallback: bool = False  # the account option: the gateway sends the SMS itself
    minute_seconds: float = 60.0  # how long a minute of dlr_timeout lasts here
    echo_transaction_id: bool = True  # False: reports carry msg_id alone
    report_before_answer: bool = False  # the send's answer waits for its first reports

    def __post_init__(self) -> None:
        """Normalise and reject nonsense early, so a bad /_sim/config call fails loudly."""
        if not isinstance(self.user, str) or not isinstance(self.secret, str):
            raise TypeError("user and secret must be strings")
        if self.dlr_url is not None and not isinstance(self.dlr_url, str):
            raise TypeError("dlr_url must be a string or null")
        self.dlr_method = str(self.dlr_method).upper()  # type: ignore[assignment]
        if self.dlr_method not in ("POST", "GET"):
            raise ValueError("dlr_method must be POST or GET")
        for name in ("report_delay", "latency", "fail_rate", "slow_seconds", "report_timeout",
                     "minute_seconds"):
            setattr(self, name, _non_negative(name, getattr(self, name)))
        for name in ("sms_fallback", "echo_transaction_id", "report_before_answer"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be true or false")
        if self.fail_rate > 1:
            raise ValueError("fail_rate must be within 0..1")
        self.report_retries = int(_non_negative("report_retries", self.report_retries))
        self.fail_kinds = _fail_kinds(self.fail_kinds)
        self.seed = None if self.seed is None else int(self.seed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy for the control API."""
        return dataclasses.asdict(self)


def _non_negative(name: str, value: Any) -> float:
    """Coerce a numeric knob; a negative delay or rate is a test bug worth surfacing."""
    number = float(value)
    if number < 0:
        raise ValueError(f"{name} must be >= 0")
    return number


def _fail_kinds(kinds: Any) -> list[str]:
    """Check injected fault kinds against the known ones."""
    if isinstance(kinds, str) or not isinstance(kinds, Sequence):
        raise TypeError("fail_kinds must be a list")
    unknown = [k for k in kinds if k not in FAIL_KINDS]
    if unknown:
        raise ValueError(f"unknown fail_kinds {unknown}; known: {list(FAIL_KINDS)}")
    return list(kinds)


# --------------------------------------------------------------------------- signatures


def md5_hex(data: bytes) -> str:
    """Lowercase hex MD5, the gateway's only digest."""
    return hashlib.md5(data).hexdigest()  # MD5 is what the wire format mandates


def compute_sign(
    user: str, sender: str, phones: Sequence[str], txt: str | None, secret: str
) -> str:
    """The send ``sign``: plain concatenation, phones in request order, raw UTF-8 text."""
    return md5_hex((user + sender + "".join(phones) + (txt or "") + secret).encode("utf-8"))


def compute_upload_sign(login: str, data: bytes, secret: str) -> str:
    """The media upload ``sign``: the file enters through its own MD5."""
    return md5_hex((login + md5_hex(data) + secret).encode("utf-8"))


# --------------------------------------------------------------------------- scenarios

# (extra delay in seconds, or AT_EXPIRY: when the message's dlr_timeout passes; report fields)
ReportStep = tuple[float | None, dict[str, str]]
AT_EXPIRY = None
DEFAULT_DLR_TIMEOUT = 14 * 86400  # an absent dlr_timeout (providers.md §2.3, the RU doc)

# Every status_extended value of the documents' table (providers.md §2.5), in its order:
# phone ...01NN gets the NN-th.
STATUS_EXTENDED: tuple[str, ...] = (
    "VIBER_BLOCKED_BY_USER", "VIBER_USER_NOT_FOUND", "VIBER_NO_DEVICE", "VIBER_EXPIRED",
    "VIBER_UNKNOWN_ERROR", "INVALID_SESSION", "PHONE_BLACKLISTED", "SPAM_DETECTED",
    "FROM_NOT_ALLOWED", "BAD_WORDS_FOUND", "PHONE_INCORRECT", "OPERATOR_NOT_ALLOWED",
)
EXPIRED = "VIBER_EXPIRED"

_DELIVERED = {"type": "delivery", "status": "delivered"}
_SEEN = {"type": "seen"}


def _undelivered(reason: str) -> dict[str, str]:
    return {"type": "delivery", "status": "undelivered", "status_extended": reason}


def _undelivered_step(reason: str) -> ReportStep:
    """An undelivered report: at once, but an expiry only when the dlr_timeout passes."""
    return (AT_EXPIRY if reason == EXPIRED else 0.0), _undelivered(reason)


_VIBER_SCENARIOS: dict[str, list[ReportStep]] = {
    "0001": [(0.0, _undelivered("VIBER_USER_NOT_FOUND"))],
    "0002": [],
    "0003": [(0.0, _DELIVERED), (0.0, _SEEN), (0.0, {"type": "reply", "text": "Yes, confirmed"})],
    "0004": [(0.0, _undelivered("VIBER_BLOCKED_BY_USER"))],
    "0005": [(LATE_DELIVERY_EXTRA, _DELIVERED)],
    "0006": [(0.0, {"type": "delivery", "status": "buffered"}), _undelivered_step(EXPIRED)],
    **{f"01{n:02d}": [_undelivered_step(reason)]
       for n, reason in enumerate(STATUS_EXTENDED, start=1)},
}
_VIBER_DEFAULT: list[ReportStep] = [(0.0, _DELIVERED), (0.0, _SEEN)]
_SMS_SCENARIOS: dict[str, list[ReportStep]] = {"0004": [(0.0, {"status": "-1"})]}
_SMS_DEFAULT: list[ReportStep] = [(0.0, {"status": "0"})]


def scenario_reports(phone: str, channel: str) -> list[ReportStep]:
    """The reports a message to ``phone`` will produce (see the table in the module docstring)."""
    if channel == "viber":
        steps = _VIBER_SCENARIOS.get(phone[-4:], _VIBER_DEFAULT)
    else:
        steps = _SMS_SCENARIOS.get(phone[-4:], _SMS_DEFAULT)
    return [(extra, dict(fields)) for extra, fields in steps]


def expiry_delay(dlr_timeout: int | None, minute_seconds: float) -> float:
    """Seconds after acceptance at which a Viber message expires: its ``dlr_timeout`` rounded
    down to whole minutes (90 s expires with 60 s), each minute ``minute_seconds`` long."""
    seconds = DEFAULT_DLR_TIMEOUT if dlr_timeout is None else dlr_timeout
    return (seconds // 60) * minute_seconds


def report_plan(record: Mapping[str, Any], report_delay: float,
                minute_seconds: float) -> list[tuple[float, dict[str, str]]]:
    """(seconds after acceptance, fields) of each report of one message, in order: report
    ``i`` is due ``report_delay * (i + 1)`` plus its extra; an expiry when the dlr_timeout
    passes, never before the report ahead of it."""
    plan: list[tuple[float, dict[str, str]]] = []
    for index, (extra, fields) in enumerate(scenario_reports(record["phone"],
                                                             record["channel"])):
        if extra is AT_EXPIRY:
            due = expiry_delay(record["dlr_timeout"], minute_seconds)
            due = max(due, plan[-1][0] if plan else 0.0)
        else:
            due = report_delay * (index + 1) + extra
        plan.append((due, fields))
    return plan


def falls_back(fields: Mapping[str, str]) -> bool:
    """Whether this report says the Viber message was not delivered (expiry included):
    what makes the account's SMS fallback send the SMS."""
    return fields.get("type") == "delivery" and fields.get("status") == "undelivered"


# --------------------------------------------------------------------------- send parsing


class SendError(Exception):
    """A request the gateway answers with a negative code (HTTP 200 all the same)."""

    def __init__(self, code: int, tech_message: str) -> None:
        super().__init__(f"{code} {tech_message}")
        self.code = code
        self.tech_message = tech_message


def _param_error(name: str) -> SendError:
    return SendError(-1, f"PARAM ERROR ({name})")


@dataclass
class SendRequest:
    """A validated send request, in the gateway's own field names."""

    user: str
    sender: str
    phones: list[str]
    channel: str
    txt: str | None
    image_id: str | None
    button_text: str | None
    button_link: str | None
    expiry_txt: str | None
    p_transaction_id: str | None
    dlr: bool
    dlr_timeout: int | None
    delay: int | None
    charset: str | None


def _value(values: MultiDict[str, str], name: str) -> str | None:
    """A single field; the gateway treats an empty value as not sent."""
    value = values.get(name)
    return value if value else None


def parse_send(
    values: MultiDict[str, str], config: SimulatorConfig, images: Mapping[str, Any]
) -> SendRequest:
    """Validate a send request in the gateway's order: presence, then auth, then values."""
    _check_presence(values)
    _check_auth(values, config)
    return _check_values(values, images)


def _check_presence(values: MultiDict[str, str]) -> None:
    """Missing mandatory fields are -1 errors naming the field."""
    for name in ("user", "from", "phone", "sign"):
        if not any(values.getlist(name)):
            raise _param_error(name)
    if _value(values, "txt") is None and _value(values, "image_id") is None:
        raise _param_error("txt")


def _check_auth(values: MultiDict[str, str], config: SimulatorConfig) -> None:
    """-2 for an unknown user or a sign that does not match; compared in constant time."""
    user = values.get("user", "")
    expected = compute_sign(
        user, values.get("from", ""), values.getlist("phone"), _value(values, "txt"), config.secret
    )
    user_ok = hmac.compare_digest(user.encode(), config.user.encode())
    sign_ok = hmac.compare_digest(values.get("sign", "").encode(), expected.encode())
    if not (user_ok and sign_ok):
        raise SendError(-2, "AUTHENTICATION ERROR")


def _check_values(values: MultiDict[str, str], images: Mapping[str, Any]) -> SendRequest:
    """Field formats and limits; each failure names its field like the real gateway."""
    channel = _value(values, "sending_method") or "sms"
    if channel not in ("viber", "sms"):
        raise _param_error("sending_method")
    phones = values.getlist("phone")
    if not all(PHONE_RE.fullmatch(p) for p in phones):
        raise _param_error("phone")
    for name, limit in MAX_LENGTHS:
        if len(values.get(name, "")) > limit:
            raise _param_error(name)
    image_id = _value(values, "image_id")
    if image_id is not None and image_id not in images:
        raise _param_error("image_id")
    if channel == "sms" and _value(values, "txt") is None:
        raise _param_error("txt")
    return _build_request(values, channel, phones, image_id)


def _build_request(
    values: MultiDict[str, str], channel: str, phones: list[str], image_id: str | None
) -> SendRequest:
    """Parse the optional numeric/enum fields and assemble the request."""
    dlr = _value(values, "dlr") or "0"
    if dlr not in ("0", "1"):
        raise _param_error("dlr")
    charset = _value(values, "charset")
    if charset is not None and charset.upper() not in CHARSETS:
        raise _param_error("charset")
    return SendRequest(
        user=values["user"],
        sender=values["from"],
        phones=phones,
        channel=channel,
        txt=_value(values, "txt"),
        image_id=image_id,
        button_text=_value(values, "button_text"),
        button_link=_value(values, "button_link"),
        expiry_txt=_value(values, "expiry_txt"),
        p_transaction_id=_value(values, "p_transaction_id"),
        dlr=dlr == "1",
        dlr_timeout=_bounded_int(values, "dlr_timeout", 60, 86400),
        delay=_bounded_int(values, "delay", 0, 10080),
        charset=charset,
    )


def _bounded_int(values: MultiDict[str, str], name: str, low: int, high: int) -> int | None:
    """An optional integer field; anything but plain digits within bounds is a -1."""
    raw = _value(values, name)
    if raw is None:
        return None
    if not INT_RE.fullmatch(raw) or not low <= int(raw) <= high:
        raise _param_error(name)
    return int(raw)


# --------------------------------------------------------------------------- state


def _zero_stats() -> dict[str, Any]:
    return {
        "requests": 0,
        "accepted": 0,
        "rejected": 0,
        "messages": 0,
        "by_channel": {"viber": 0, "sms": 0},
        "injected": {k: 0 for k in FAIL_KINDS},
        "reports_sent": 0,
        "reports_failed": 0,
        "reports_abandoned": 0,
        "reports_unsent": 0,
        "gateway_sms": 0,
        "uploads": 0,
        "uploads_rejected": 0,
    }


class SimulatorState:
    """Everything the simulator remembers; one re-entrant lock guards all of it (threaded server).

    Tests reach it through ``SimulatorServer.state``; ``wait_until`` lets them block on a
    condition (e.g. "3 reports recorded") instead of sleeping.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.lock = threading.RLock()
        self._changed = threading.Condition(self.lock)
        self._rng = random.Random(self.config.seed)
        self._messages: list[dict[str, Any]] = []
        self._reports: list[dict[str, Any]] = []
        self._images: dict[str, dict[str, Any]] = {}
        self._stats = _zero_stats()
        self.generation = 0  # bumped by reset(); stale pending reports are dropped
        self.dispatcher = ReportDispatcher(self)

    # ---- reading

    def messages(self) -> list[dict[str, Any]]:
        """Copies of the accepted messages, oldest first."""
        with self.lock:
            return [dict(m) for m in self._messages]

    def reports(self) -> list[dict[str, Any]]:
        """Copies of the report delivery attempts, oldest first."""
        with self.lock:
            return [{**r, "params": dict(r["params"])} for r in self._reports]

    def stats(self) -> dict[str, Any]:
        """A deep copy of the counters."""
        with self.lock:
            return {k: dict(v) if isinstance(v, dict) else v for k, v in self._stats.items()}

    def images(self) -> dict[str, dict[str, Any]]:
        """Uploaded images by image_id (metadata only)."""
        with self.lock:
            return {k: dict(v) for k, v in self._images.items()}

    def find_message(self, msg_id: str) -> dict[str, Any] | None:
        """The accepted message with this msg_id, if any."""
        with self.lock:
            return next((dict(m) for m in self._messages if m["msg_id"] == msg_id), None)

    def wait_until(self, predicate: Callable[[SimulatorState], bool], timeout: float = 5.0) -> bool:
        """Block until ``predicate(self)`` holds (re-checked on every change) or time runs out."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    # ---- writing

    def _touch(self) -> None:
        self._changed.notify_all()

    def count_request(self) -> None:
        with self.lock:
            self._stats["requests"] += 1
            self._touch()

    def count_rejected(self, injected: str | None = None) -> None:
        """A send request that was not accepted, by validation or by an injected fault."""
        with self.lock:
            self._stats["rejected"] += 1
            if injected:
                self._stats["injected"][injected] += 1
            self._touch()

    def count_injected_slow(self) -> None:
        """A "slow" fault accepts the message, so it counts as injected but not as rejected."""
        with self.lock:
            self._stats["injected"]["slow"] += 1
            self._touch()

    def roll_fault(self) -> str | None:
        """Decide, with the seeded RNG, whether this request gets an injected fault."""
        with self.lock:
            cfg = self.config
            if cfg.fail_rate <= 0 or not cfg.fail_kinds or self._rng.random() >= cfg.fail_rate:
                return None
            return self._rng.choice(cfg.fail_kinds)

    def accept(self, req: SendRequest) -> list[dict[str, Any]]:
        """Record one message per phone (fresh uuid4 msg_ids: no dedupe) and schedule reports."""
        now = time.time()
        with self.lock:
            records = [_message_record(req, phone, now) for phone in req.phones]
            self._messages.extend(records)
            self._stats["accepted"] += 1
            self._stats["messages"] += len(records)
            self._stats["by_channel"][req.channel] += len(records)
            generation, config = self.generation, self.config
            self._touch()
        if req.dlr:
            for record in records:
                self._schedule_scenario(record, config, generation)
        return records

    def _schedule_scenario(self, record: dict[str, Any], config: SimulatorConfig,
                           generation: int) -> None:
        """Queue the scenario's reports for one message (``report_plan``). A Viber
        "undelivered" carries the message along, for the account's SMS fallback."""
        for due, fields in report_plan(record, config.report_delay, config.minute_seconds):
            params = _report_params(record["msg_id"], record["p_transaction_id"], fields,
                                    echo=config.echo_transaction_id)
            fallback = dict(record) if record["channel"] == "viber" and falls_back(fields) \
                else None
            self.dispatcher.schedule(params, due, generation, fallback_of=fallback)

    def send_gateway_sms(self, viber: Mapping[str, Any], generation: int) -> None:
        """The account's SMS fallback, when a Viber "undelivered" falls due and the option is
        on: the gateway itself sends ``expiry_txt`` (else ``txt``) by SMS to the same phone,
        under the Viber message's ids, and reports it like any SMS. Nothing without a text
        (an image-only message)."""
        with self.lock:
            config = self.config
            text = viber["expiry_txt"] or viber["txt"]
            if not config.sms_fallback or generation != self.generation or not text:
                return
            record = {**_message_record_fields(viber), "channel": "sms", "txt": text,
                      "received_at": time.time(), "by_gateway": True}
            self._messages.append(record)
            self._stats["messages"] += 1
            self._stats["by_channel"]["sms"] += 1
            self._stats["gateway_sms"] += 1
            self._touch()
        self._schedule_scenario(record, config, generation)

    def mark_answered(self, records: Sequence[dict[str, Any]]) -> None:
        """Note when the send's answer left (``answered_at``), e.g. to see a report come first."""
        with self.lock:
            answered = time.time()
            for record in records:
                record["answered_at"] = answered
            self._touch()

    def wait_for_first_reports(self, records: Sequence[Mapping[str, Any]],
                               timeout: float) -> bool:
        """Block until each of ``records`` had its first report delivered (recorded with an
        outcome other than unsent), or ``timeout`` passes. Messages whose first report is an
        expiry, or that get none, are not waited for."""
        expected = {r["msg_id"] for r in records
                    if (steps := scenario_reports(r["phone"], r["channel"]))
                    and steps[0][0] is not AT_EXPIRY}

        def delivered(state: SimulatorState) -> bool:
            seen = {r["msg_id"] for r in state._reports if r["outcome"] != "unsent"}
            return expected <= seen

        return self.wait_until(delivered, timeout)

    def add_image(self, login: str, data: bytes, kind: str) -> str:
        """Store an uploaded image's metadata and issue its 64-char id."""
        image_id = secrets.token_hex(32)
        with self.lock:
            self._images[image_id] = {
                "image_id": image_id,
                "login": login,
                "format": kind,
                "size": len(data),
                "md5": md5_hex(data),
                "uploaded_at": time.time(),
            }
            self._stats["uploads"] += 1
            self._touch()
        return image_id

    def count_upload_rejected(self) -> None:
        with self.lock:
            self._stats["uploads_rejected"] += 1
            self._touch()

    def record_report(self, entry: dict[str, Any], generation: int) -> None:
        """Log one delivery attempt (unless a reset happened meanwhile) and bump counters."""
        counter = {
            "done": "reports_sent",
            "retry": "reports_failed",
            "abandoned": "reports_abandoned",
            "unsent": "reports_unsent",
        }[entry["outcome"]]
        with self.lock:
            if generation != self.generation:
                return
            self._reports.append(entry)
            self._stats[counter] += 1
            if entry["outcome"] == "abandoned":
                self._stats["reports_failed"] += 1
            self._touch()

    def update_config(self, changes: Mapping[str, Any]) -> SimulatorConfig:
        """Merge fields into the config (validated); a new ``seed`` reseeds the RNG."""
        known = {f.name for f in dataclasses.fields(SimulatorConfig)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        with self.lock:
            self.config = dataclasses.replace(self.config, **changes)
            if "seed" in changes:
                self._rng = random.Random(self.config.seed)
            self._touch()
            return self.config

    def reset(self) -> None:
        """Forget messages, reports, counters and pending reports; keep config and images."""
        with self.lock:
            self.generation += 1
            self._messages.clear()
            self._reports.clear()
            self._stats = _zero_stats()
            self._rng = random.Random(self.config.seed)
            self.dispatcher.clear()
            self._touch()


def _message_record_fields(viber: Mapping[str, Any]) -> dict[str, Any]:
    """The Viber message's record without its Viber-only content: what its SMS shares."""
    return {**viber, "image_id": None, "button_text": None, "button_link": None,
            "expiry_txt": None, "dlr_timeout": None, "answered_at": None}


def _message_record(req: SendRequest, phone: str, now: float) -> dict[str, Any]:
    """What the control API shows for one accepted message."""
    return {
        "msg_id": str(uuid.uuid4()),
        "phone": phone,
        "channel": req.channel,
        "p_transaction_id": req.p_transaction_id,
        "txt": req.txt,
        "image_id": req.image_id,
        "button_text": req.button_text,
        "button_link": req.button_link,
        "expiry_txt": req.expiry_txt,
        "dlr_timeout": req.dlr_timeout,
        "from": req.sender,
        "user": req.user,
        "dlr": req.dlr,
        "delay": req.delay,
        "charset": req.charset,
        "received_at": now,
        "answered_at": None,
        "by_gateway": False,
    }


def _report_params(
    msg_id: str, p_transaction_id: str | None, fields: Mapping[str, str], echo: bool = True
) -> dict[str, str]:
    """Every report carries msg_id and p_transaction_id (empty when none was sent), unless
    the account does not echo it (``echo_transaction_id: false``): msg_id alone."""
    if not echo:
        return {"msg_id": msg_id, **fields}
    return {"msg_id": msg_id, "p_transaction_id": p_transaction_id or "", **fields}


# --------------------------------------------------------------------------- report delivery


@dataclass
class _Job:
    report_id: int
    attempt: int
    generation: int
    params: dict[str, str]
    fallback_of: dict[str, Any] | None = None  # a Viber message the account may send by SMS


class ReportDispatcher(DeliveryThread[_Job]):
    """Delivers reports in due order from one thread (see ``DeliveryThread`` for why).

    Reports of one message keep their order (delivered before seen) unless a retry
    intervenes, as at the real gateway.
    """

    def __init__(self, state: SimulatorState) -> None:
        super().__init__(self._deliver, name="messaggio-sim-reports")
        self._state = state
        self._report_ids = itertools.count(1)
        self._session = requests.Session()
        self._session.trust_env = False  # reports go where dlr_url says, never via env proxies

    def schedule(self, params: dict[str, str], delay: float, generation: int,
                 fallback_of: dict[str, Any] | None = None) -> int:
        """Queue a new report ``delay`` seconds from now; returns its report_id. When it
        falls due, ``fallback_of`` (an undelivered Viber message) goes to the account's SMS
        fallback first."""
        report_id = next(self._report_ids)
        self.push(_Job(report_id, 1, generation, params, fallback_of), delay)
        return report_id

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; an in-flight delivery finishes first (bounded by report_timeout)."""
        super().stop(timeout)
        self._session.close()

    def _deliver(self, job: _Job) -> None:
        """Send one attempt, decide retry or not, then log it.

        The config is read now, not at scheduling, so a dlr_url set later still gets the report.
        """
        cfg = self._state.config
        if job.generation != self._state.generation:
            return
        if job.attempt == 1 and job.fallback_of is not None:
            self._state.send_gateway_sms(job.fallback_of, job.generation)
        entry = {
            "report_id": job.report_id,
            "attempt": job.attempt,
            "msg_id": job.params.get("msg_id"),
            "params": dict(job.params),
            "url": cfg.dlr_url,
            "method": cfg.dlr_method,
            "status_code": None,
            "error": None,
            "at": time.time(),
        }
        if cfg.dlr_url is None:
            self._state.record_report({**entry, "outcome": "unsent"}, job.generation)
            return
        status, error = self._transmit(cfg, job.params)
        entry.update(status_code=status, error=error, outcome=self._outcome(cfg, job, status))
        self._state.record_report(entry, job.generation)

    def _outcome(self, cfg: SimulatorConfig, job: _Job, status: int | None) -> str:
        """200/400/404 end redelivery; anything else is retried with a linear backoff."""
        if status in STOP_CODES:
            return "done"
        if job.attempt > cfg.report_retries:
            return "abandoned"
        step = max(cfg.report_delay, MIN_RETRY_STEP) * job.attempt
        self.push(dataclasses.replace(job, attempt=job.attempt + 1), step)
        return "retry"

    def _transmit(
        self, cfg: SimulatorConfig, params: dict[str, str]
    ) -> tuple[int | None, str | None]:
        """POST the fields form-encoded, or GET them as a query; returns (status, error)."""
        assert cfg.dlr_url is not None
        try:
            if cfg.dlr_method == "GET":
                resp = self._session.get(cfg.dlr_url, params=params, timeout=cfg.report_timeout)
            else:
                resp = self._session.post(cfg.dlr_url, data=params, timeout=cfg.report_timeout)
        except requests.RequestException as exc:
            return None, f"{type(exc).__name__}: {exc}"
        resp.close()
        return resp.status_code, None


# --------------------------------------------------------------------------- HTTP answers


def xml_response(code: int, tech_message: str, msg_ids: Sequence[tuple[str, str]] = ()) -> Response:
    """The gateway's XML envelope, served as HTTP 200 whatever the code."""
    root = ET.Element("response")
    ET.SubElement(root, "code").text = str(code)
    ET.SubElement(root, "tech_message").text = tech_message
    for phone, msg_id in msg_ids:
        ET.SubElement(root, "msg_id", phone=phone).text = msg_id
    body = ET.tostring(root, encoding="unicode")
    return Response(body, status=200, content_type="text/xml; charset=utf-8")


def _fault_response(kind: str) -> Response:
    """What the client sees for an injected fault that does not accept the message."""
    if kind == "drop":
        _drop_connection()
    if kind == "http500":
        return Response("Internal Server Error", status=500, content_type="text/plain")
    if kind == "http503":
        return Response(
            "Service Unavailable",
            status=503,
            content_type="text/plain",
            headers={"Retry-After": "1"},
        )
    return xml_response(-4, "TEMPORARY ERROR")


def _drop_connection() -> None:
    """Cut the TCP connection so the client gets no answer at all (werkzeug dev server only)."""
    sock = request.environ.get("werkzeug.socket")
    if sock is None:
        raise RuntimeError("drop fault needs the werkzeug server (no werkzeug.socket)")
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _image_kind(data: bytes) -> str | None:
    """JPG, PNG or GIF by magic bytes; the extension or content type is not trusted."""
    return next((kind for magic, kind in IMAGE_MAGIC if data.startswith(magic)), None)


# --------------------------------------------------------------------------- Flask app


def create_app(state: SimulatorState | None = None) -> Flask:
    """Build the simulator app around ``state`` (a fresh default one if not given)."""
    state = state or SimulatorState()
    app = Flask(__name__)
    app.extensions["messaggio_simulator"] = state

    @app.route("/", methods=["GET", "POST"])
    def send() -> Response:
        return handle_send(state)

    @app.post("/upload/")
    def upload() -> Response:
        return handle_upload(state)

    _register_control_api(app, state)
    return app


def handle_send(state: SimulatorState) -> Response:
    """One send request: count it, maybe inject a fault, else validate and accept."""
    values = request.values  # reads the body, also before a "drop"
    state.count_request()
    fault = state.roll_fault()
    if fault is not None and fault != "slow":
        state.count_rejected(injected=fault)
        response = _fault_response(fault)
    else:
        response = _process_send(state, values)
        if fault == "slow":
            state.count_injected_slow()
            time.sleep(state.config.slow_seconds)
    if state.config.latency:
        time.sleep(state.config.latency)
    return response


def _process_send(state: SimulatorState, values: MultiDict[str, str]) -> Response:
    """Validate, then accept or answer the negative code."""
    try:
        req = parse_send(values, state.config, state.images())
    except SendError as err:
        state.count_rejected()
        return xml_response(err.code, err.tech_message)
    records = state.accept(req)
    if req.dlr and state.config.report_before_answer:
        state.wait_for_first_reports(records, state.config.report_timeout)
    state.mark_answered(records)
    msg_ids = [(r["phone"], r["msg_id"]) for r in records] if req.dlr else []
    return xml_response(0, "OK", msg_ids)


def handle_upload(state: SimulatorState) -> Response:
    """Media upload: presence (1), sign (2), size (3), format (4), then issue an image_id."""
    form, image = request.form, request.files.get("image")
    login, sign = form.get("login", ""), form.get("sign", "")
    missing = next(
        (n for n, v in (("login", login), ("image", image), ("sign", sign)) if not v), None
    )
    if missing or image is None:
        return _reject_upload(state, 1, f"Incorrect data ({missing})")
    data = image.read()
    if not _upload_auth_ok(state.config, login, sign, data):
        return _reject_upload(state, 2, "Invalid sign")
    if len(data) > MAX_IMAGE_BYTES:
        return _reject_upload(state, 3, "File is too large (max 10 MB)")
    kind = _image_kind(data)
    if kind is None:
        return _reject_upload(state, 4, "Format not allowed (JPG, PNG, GIF)")
    return jsonify({"status": 0, "image_id": state.add_image(login, data, kind)})


def _upload_auth_ok(cfg: SimulatorConfig, login: str, sign: str, data: bytes) -> bool:
    """Known login and matching sign, compared in constant time."""
    expected = compute_upload_sign(login, data, cfg.secret)
    sign_ok = hmac.compare_digest(sign.encode(), expected.encode())
    return hmac.compare_digest(login.encode(), cfg.user.encode()) and sign_ok


def _reject_upload(state: SimulatorState, status: int, error: str) -> Response:
    """Count and answer a failed upload (HTTP 200, JSON status like the real media host)."""
    state.count_upload_rejected()
    return jsonify({"status": status, "error": error})


def _register_control_api(app: Flask, state: SimulatorState) -> None:
    """The /_sim/ JSON endpoints tests and developers use to look inside and steer."""

    @app.get("/_sim/messages")
    def sim_messages() -> Response:
        return jsonify(state.messages())

    @app.get("/_sim/stats")
    def sim_stats() -> Response:
        return jsonify(state.stats())

    @app.get("/_sim/reports")
    def sim_reports() -> Response:
        return jsonify(state.reports())

    @app.get("/_sim/images")
    def sim_images() -> Response:
        return jsonify(state.images())

    @app.route("/_sim/config", methods=["GET", "POST"])
    def sim_config() -> Response | tuple[Response, int]:
        if request.method == "GET":
            return jsonify(state.config.to_dict())
        return _update_config(state)

    @app.post("/_sim/reset")
    def sim_reset() -> Response:
        state.reset()
        return jsonify({"ok": True})

    @app.post("/_sim/report")
    def sim_report() -> Response | tuple[Response, int]:
        return _push_report(state)


def _update_config(state: SimulatorState) -> Response | tuple[Response, int]:
    """POST /_sim/config: merge a JSON object into the config, 400 on anything invalid."""
    changes = request.get_json(silent=True)
    if not isinstance(changes, dict):
        return jsonify({"error": "expected a JSON object"}), 400
    try:
        config = state.update_config(changes)
    except (TypeError, ValueError) as exc:
        return jsonify({"error": str(exc)}), 400
    return jsonify(config.to_dict())


def _push_report(state: SimulatorState) -> Response | tuple[Response, int]:
    """POST /_sim/report: queue any report for a msg_id (known or not), now or after ``delay``."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not body.get("msg_id"):
        return jsonify({"error": 'expected {"msg_id": ..., "params": {...}}'}), 400
    extra = body.get("params") or {}
    if not isinstance(extra, dict):
        return jsonify({"error": "params must be an object"}), 400
    message = state.find_message(str(body["msg_id"]))
    ptid = message["p_transaction_id"] if message else None
    params = _report_params(str(body["msg_id"]), ptid, {k: str(v) for k, v in extra.items()},
                            echo=state.config.echo_transaction_id)
    try:
        delay = _non_negative("delay", body.get("delay", 0))
    except (TypeError, ValueError) as exc:
        return jsonify({"error": str(exc)}), 400
    report_id = state.dispatcher.schedule(params, delay, state.generation)
    return jsonify({"report_id": report_id, "params": params}), 202


# --------------------------------------------------------------------------- server


class SimulatorServer(BackgroundServer):
    """The simulator on a real socket, served from a daemon thread; usable as a context manager."""

    def __init__(
        self, config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.state = SimulatorState(config)
        super().__init__(create_app(self.state), host, port, thread_name="messaggio-sim-http")

    def _stop_background(self) -> None:
        """The report thread goes down after the HTTP server, so no new report is queued."""
        self.state.dispatcher.stop()

    @property
    def url(self) -> str:
        """The send endpoint, e.g. ``http://127.0.0.1:8025/``."""
        return f"{self.base_url}/"

    @property
    def media_url(self) -> str:
        """The media upload endpoint, e.g. ``http://127.0.0.1:8025/upload/``."""
        return f"{self.url}upload/"


# --------------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; defaults come from the same env vars as the app settings."""
    env = os.environ
    parser = argparse.ArgumentParser(
        description="Local Messaggio-style Viber+SMS gateway simulator"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=int(env.get("SWITCHBOARD_SIMULATOR_PORT", 8025))
    )
    parser.add_argument("--dlr-url", default=env.get("SWITCHBOARD_SIMULATOR_DLR_URL") or None)
    parser.add_argument("--dlr-method", choices=["POST", "GET"], default="POST")
    parser.add_argument("--user", default=env.get("SWITCHBOARD_MESSAGGIO_USER", "sandbox"))
    parser.add_argument(
        "--secret", default=env.get("SWITCHBOARD_MESSAGGIO_SECRET", "sandbox-secret")
    )
    parser.add_argument("--report-delay", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM, then stop cleanly and return 0."""
    args = _parse_args(argv)
    config = SimulatorConfig(
        user=args.user,
        secret=args.secret,
        dlr_url=args.dlr_url,
        dlr_method=args.dlr_method,
        report_delay=args.report_delay,
        seed=args.seed,
    )
    server = SimulatorServer(config, host=args.host, port=args.port)
    return serve_until_signal(
        server,
        lambda s: (
            f"Messaggio simulator listening on {s.url} (media {s.media_url}, "
            f"reports -> {args.dlr_url or 'nowhere, recorded only'})"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
