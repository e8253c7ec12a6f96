"""The Messaggio-style ("SMS Online Bulk") Viber + SMS gateway: signing, sending, uploads, reports.

Everything specific to this gateway lives here (wire format in ``guide/providers.md`` §2), so
the worker only ever sees ``SendResult``, ``ProviderEvent`` and the three ``ProviderError``
classes. The adapter is stateless apart from its configuration and is safe to share.

The subtle part is failure classification (its HTTP part is shared: ``shared.providers.http``).
The gateway has no idempotency (§2.7): sending the same request twice sends two messages. So
a failure is only ``RetryableError`` when the request surely did not take effect (no
connection was made, code -4, 429/502/503/504), and ``AmbiguousError`` when it may have
arrived (read timeout, connection dropped after sending, HTTP 500, an unreadable reply).

The account's own SMS fallback (§2.3: an option the gateway's manager switches on; it sends
``expiry_txt``, else ``txt``, by SMS after a Viber message is not delivered) and Switchboard's
route must not both send the SMS. ``SWITCHBOARD_MESSAGGIO_GATEWAY_FALLBACK`` says which one
does: ``off`` (the default) is ours, with the account option kept off; ``on`` is the
gateway's, so ``carried_hop`` tells the route not to send the SMS hop after a Viber message
the gateway accepted, and the gateway's standard (numeric) reports on that message are
marked as the SMS hop's (``ProviderEvent.channel``).
"""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import requests

from shared import egress
from shared.providers.base import (
    AccountRefusal,
    REDACTED,
    AmbiguousError,
    CallbackError,
    EndedHop,
    EventKind,
    ImageCache,
    KeyValueCache,
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
from shared.providers.http import (
    classify_http_status,
    classify_transport_error,
    echoed,
    http_request,
    short,
    timeouts,
)
from shared.windows import provider_window

if TYPE_CHECKING:
    from shared.schemas import SendRequest
    from shared.settings import Settings

MAX_IMAGE_BYTES = 10 * 1024 * 1024  # §2.6: the media server refuses files over 10 MB
DEFAULT_DLR_TIMEOUT = 86400  # a day: the settings' default_dlr_timeout

# Gateway response codes (§2.4) other than 0 and the retryable -4.
_PERMANENT_CODES = {"-1": "invalid_request", "-2": "auth_error", "-3": "rejected",
                    "-5": "balance_exhausted"}
# Codes that refuse the account, not the message: every send would be refused alike.
_ACCOUNT_CODES = frozenset({"-2", "-5"})

# Media upload statuses (§2.6).
_UPLOAD_ERRORS = {1: "image_invalid", 2: "auth_error", 3: "image_too_large", 4: "image_format"}

# Standard numeric delivery reports (§2.5): status -> (kind, reason).
_NUMERIC_STATUS: dict[int, tuple[EventKind, str | None]] = {
    0: ("delivered", None),
    1: ("interim", None),  # buffered
    4: ("interim", None),  # process
    -1: ("undelivered", "not_delivered"),
    -2: ("expired", "sms_expired"),
    -3: ("undelivered", "rejected"),
    -11: ("undelivered", "route_not_found"),
    -12: ("undelivered", "http_req_error"),
}

# How a Viber hop that the gateway accepted can end for the gateway to send its own SMS:
# undelivered (any status_extended) or expired (its dlr_timeout, which ours equals). One
# that it refused ("failed") never reached it.
_GATEWAY_FALLBACK_ENDS = frozenset({"undelivered", "expired"})

# After any of these the subscriber can never get this Viber message: fall back at once.
PERMANENT_VIBER_REASONS: frozenset[str] = frozenset({
    "viber_user_not_found", "viber_no_device", "viber_blocked_by_user",
    "invalid_session", "phone_blacklisted", "spam_detected", "from_not_allowed",
    "bad_words_found", "phone_incorrect", "operator_not_allowed",
})


# The person chose not to hear from us: the report is also an opt-out of that channel.
OPT_OUT_REASONS: frozenset[str] = frozenset({"viber_blocked_by_user"})


# --------------------------------------------------------------------------------------
# Signatures (§2.2, §2.6)
# --------------------------------------------------------------------------------------

def _md5_hex(data: bytes) -> str:
    # MD5 because the gateway's protocol says so; it is not our own security choice.
    return hashlib.md5(data).hexdigest()


def sign(user: str, sender: str, phones: Iterable[str], txt: str | None, secret: str) -> str:
    """The request ``sign``: md5 of user+from+phones+txt+secret, no separators (§2.2).

    ``txt`` is the raw UTF-8 text (not percent-encoded) and is left out entirely for an
    image-only message; phones must be in the order they are sent.
    """
    parts = [user, sender, *phones, txt or "", secret]
    return _md5_hex("".join(parts).encode("utf-8"))


def media_sign(login: str, content: bytes, secret: str) -> str:
    """The upload ``sign``: md5(login + md5(file bytes) + secret) (§2.6)."""
    return _md5_hex(f"{login}{_md5_hex(content)}{secret}".encode())


# --------------------------------------------------------------------------------------
# Send response (§2.1, §2.4)
# --------------------------------------------------------------------------------------

def parse_send_response(body: bytes, phones: tuple[str, ...]) -> SendResult:
    """Read the XML reply to a send; raise the error its ``code`` means.

    A ``msg_id`` without a ``phone`` attribute is matched to the phones by position, so a
    single-recipient reply is still usable.
    """
    raw = body.decode("utf-8", errors="replace")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise AmbiguousError("unreadable_response", short(f"{exc}: {raw}")) from None
    code = (root.findtext("code") or "").strip()
    if root.tag != "response" or not code:
        raise AmbiguousError("unreadable_response", short(raw))
    detail = (root.findtext("tech_message") or "").strip()
    if code != "0":
        raise _code_error(code, detail)
    ids: dict[str, str] = {}
    for index, element in enumerate(root.findall("msg_id")):
        phone = element.get("phone") or (phones[index] if index < len(phones) else str(index))
        ids[phone.strip()] = (element.text or "").strip()
    return SendResult(provider_message_ids=ids, code=code, detail=echoed(detail), raw=echoed(raw))


def _code_error(code: str, detail: str) -> ProviderError:
    """The error for a non-zero gateway code; only -4 ("temporary error") is safe to resend,
    and -2 (authorization) and -5 (insufficient balance) refuse the whole account."""
    if code == "-4":
        return RetryableError("temporary_error", detail, code=code)
    if code in _ACCOUNT_CODES:
        return AccountRefusal(_PERMANENT_CODES[code], detail, code=code)
    return PermanentError(_PERMANENT_CODES.get(code, "unknown_code"), detail, code=code)


# --------------------------------------------------------------------------------------
# Media upload reply (§2.6)
# --------------------------------------------------------------------------------------

_JSON_TOKEN = re.compile(r'("(?:[^"\\]|\\.)*")|([A-Za-z_]\w*)(\s*:)')


def loads_tolerant(text: str) -> Any:
    """JSON, also accepting the bare keys of the documented error example (``{status: 2}``)."""
    try:
        return json.loads(text)
    except ValueError:
        pass

    def quote(match: re.Match[str]) -> str:
        return match.group(1) or f'"{match.group(2)}"{match.group(3)}'

    return json.loads(_JSON_TOKEN.sub(quote, text))


def parse_upload_response(text: str) -> str:
    """The ``image_id`` from an upload reply, or the error its ``status`` means.

    An unreadable reply is retryable: uploading the same file again is harmless.
    """
    try:
        data = loads_tolerant(text)
        status = int(data["status"])
    except (ValueError, TypeError, KeyError):
        raise RetryableError("unreadable_response", short(text)) from None
    error = str(data.get("error") or "")
    if status == 0 and data.get("image_id"):
        return str(data["image_id"])
    if status == 0:
        raise RetryableError("unreadable_response", short(text), code="0")
    reason = _UPLOAD_ERRORS.get(status, "unknown_code")
    raise PermanentError(reason, error, code=str(status))


# --------------------------------------------------------------------------------------
# Delivery reports (§2.5)
# --------------------------------------------------------------------------------------

def _field(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _numeric_event(status: str | None) -> tuple[EventKind, str | None]:
    """A standard (SMS) report: integer status codes."""
    if status is None:
        raise CallbackError("status", "missing")
    try:
        code = int(status)
    except ValueError:
        raise CallbackError("status", f"not an integer: {status!r}") from None
    return _NUMERIC_STATUS.get(code, ("interim", "unknown_status"))


def _viber_delivery_event(
    status: str | None, extended: str | None,
) -> tuple[EventKind, str | None]:
    """An extended Viber ``type=delivery`` report; ``status_extended`` says why it failed."""
    value = (status or "").lower()
    if value == "delivered":
        return "delivered", None
    if value == "buffered":
        return "interim", None
    if value != "undelivered":
        raise CallbackError("status", f"unknown delivery status: {status!r}")
    reason = extended.lower() if extended else "viber_undelivered"
    if reason == "viber_expired":
        return "expired", reason
    return "undelivered", reason


def _event_kind(params: Mapping[str, str], kind_type: str | None) -> tuple[EventKind, str | None]:
    """(kind, reason) for either report format."""
    status = _field(params, "status")
    if kind_type is None:
        return _numeric_event(status)
    if kind_type == "delivery":
        return _viber_delivery_event(status, _field(params, "status_extended"))
    if kind_type == "seen":
        return "seen", None
    if kind_type == "reply":
        return "replied", None
    raise CallbackError("type", f"unknown report type: {kind_type!r}")


def _dedupe_key(ref: str, kind_type: str | None, status: str | None, text: str | None) -> str:
    """Redelivered reports (retried for 24 h) share a key; two different replies do not."""
    key = f"messaggio:{ref}:{kind_type or 'status'}:{status or ''}"
    if kind_type == "reply":
        key += ":" + hashlib.sha256((text or "").encode("utf-8")).hexdigest()[:16]
    return key


def parse_callback(params: Mapping[str, str]) -> ProviderEvent:
    """Normalise one delivery report (standard numeric, or extended Viber ``type=``)."""
    msg_id = _field(params, "msg_id")
    attempt_ref = _field(params, "p_transaction_id")
    if not msg_id and not attempt_ref:
        raise CallbackError("msg_id", "neither msg_id nor p_transaction_id present")
    raw_type = _field(params, "type")
    kind_type = raw_type.lower() if raw_type else None
    kind, reason = _event_kind(params, kind_type)
    status = _field(params, "status")
    text = params.get("text") if kind == "replied" else None
    ref = msg_id or attempt_ref or ""
    return ProviderEvent(
        kind=kind, dedupe_key=_dedupe_key(ref, kind_type, status, text),
        provider_message_id=msg_id, attempt_ref=attempt_ref, reason=reason, text=text,
        status=status, raw=dict(params),
        # The user blocked the sender: an opt-out of Viber (shared.consent).
        data={"opt_out": True} if reason in OPT_OUT_REASONS else {},
        channel="viber" if kind_type is not None else None,  # only Viber reports have a type
    )


# --------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------

class MessaggioGateway:
    """One Messaggio account: sends Viber and SMS, uploads images, reads reports."""

    name = "messaggio"
    channels = ("viber", "sms")
    uses_conversations = False

    def __init__(
        self, url: str, media_url: str, user: str, secret: str, sender: str,
        timeout: float = 10.0, session: requests.Session | None = None, *,
        default_dlr_timeout: int = DEFAULT_DLR_TIMEOUT, gateway_fallback: bool = False,
    ) -> None:
        self.url = url
        self.media_url = media_url
        self.user = user
        self.secret = secret
        self.sender = sender
        self.timeout = timeout
        self.session = session or requests.Session()
        self.image_session = egress.session()  # producers' image URLs: checked dialling
        self.default_dlr_timeout = default_dlr_timeout  # a Viber window the request left open
        self.gateway_fallback = gateway_fallback  # the account sends the SMS after Viber

    @classmethod
    def from_settings(cls, settings: Settings) -> MessaggioGateway:
        """The gateway the settings describe (the local simulator by default)."""
        return cls(
            url=settings.effective_messaggio_url,
            media_url=settings.effective_messaggio_media_url,
            user=settings.messaggio_user,
            secret=settings.messaggio_secret.get_secret_value(),
            sender=settings.messaggio_sender,
            timeout=settings.messaggio_timeout_seconds,
            default_dlr_timeout=settings.default_dlr_timeout,
            gateway_fallback=settings.messaggio_gateway_fallback == "on",
        )

    # --- from a send request -----------------------------------------------------------

    def recipient(self, request: SendRequest, channel: str) -> Recipient:
        """The phone as the consent registry keys it (digits, no "+"); the gateway has no
        app scope, so the scope is ""."""
        require_channel(self.channels, channel)
        return Recipient(address=_phone(request), scope="")

    def outbound(self, request: SendRequest, context: SendContext) -> OutboundMessage:
        """The channel's text; for Viber also the SMS expiry text, the image (uploaded once
        per URL through ``context.images``), the button and the delivery window in whole
        minutes (the gateway rounds it down; ``shared.windows`` keeps our deadline alike),
        none of which an SMS can carry."""
        channel = context.channel
        require_channel(self.channels, channel)
        common: dict[str, Any] = {
            "attempt_id": context.attempt_id, "channel": channel, "phones": (_phone(request),),
            "text": request.text_for(channel), "sender": request.sender}
        if channel == "sms":
            return OutboundMessage(**common)
        button = request.button
        return OutboundMessage(
            **common, sms_text=self._expiry_txt(request),
            image_id=self._image_id(request, context.images),
            button_text=button.text if button else None,
            button_url=str(button.url) if button else None,
            dlr_timeout=provider_window(channel, request, self.default_dlr_timeout))

    def _expiry_txt(self, request: SendRequest) -> str | None:
        """``expiry_txt``: the request's ``sms_text``. When the gateway sends the route's SMS
        itself, its SMS carries this text, so it is then the SMS hop's own text (``texts``'
        SMS one, else ``sms_text``, else ``text``): the person gets the same SMS either way."""
        if self.gateway_fallback and "sms" in request.route:
            return request.text_for("sms")
        return request.sms_text

    # --- the account's own SMS fallback --------------------------------------------------

    def carried_hop(self, ended: EndedHop, request: SendRequest,
                    channel: str) -> dict[str, Any] | None:
        """With the account's SMS fallback on, the SMS hop after a Viber message the gateway
        accepted (it has a ``msg_id``) and that ended undelivered or expired is the
        gateway's to send: what it sends, for the timeline. Else None: the route sends it."""
        if not self.gateway_fallback or (ended.channel, channel) != ("viber", "sms"):
            return None
        if ended.status not in _GATEWAY_FALLBACK_ENDS or not ended.provider_message_id:
            return None
        return {"sent_by": "gateway", "fallback_of": ended.provider_message_id,
                "sending_method": "sms", "phone": [_phone(request)],
                "txt": self._expiry_txt(request) or request.text_for("viber")}

    def _image_id(self, request: SendRequest, images: ImageCache | None) -> str | None:
        """The request's ``image_id``, else its ``image_url`` uploaded once: holding the
        image's lock around look-up, upload and remember makes a campaign's racing sends
        upload it once."""
        if request.image_id or not request.image_url:
            return request.image_id
        if images is None:
            raise ValueError("this Viber hop's image_url must be uploaded, but the "
                             "SendContext has no images cache")
        url = str(request.image_url)
        with images.lock(image_key(url)):
            return self.ensure_image_id(url, images)

    # --- sending -----------------------------------------------------------------------

    def build_params(self, msg: OutboundMessage) -> list[tuple[str, str]]:
        """The form fields for one send; empty values are dropped (the gateway ignores them)."""
        require_channel(self.channels, msg.channel)
        sender = msg.sender or self.sender
        params: list[tuple[str, str | None]] = [
            ("user", self.user), ("from", sender),
            *(("phone", phone) for phone in msg.phones),
            ("sign", sign(self.user, sender, msg.phones, msg.text, self.secret)),
            ("sending_method", msg.channel), ("txt", msg.text),
            ("p_transaction_id", msg.attempt_id), ("dlr", "1"), ("charset", "UTF-8"),
        ]
        if msg.channel == "viber":
            params += self._viber_params(msg)
        return [(key, value) for key, value in params if value]

    @staticmethod
    def _viber_params(msg: OutboundMessage) -> list[tuple[str, str | None]]:
        """Image, button (only with both text and link), delivery window, SMS/iOS expiry text."""
        params: list[tuple[str, str | None]] = [("image_id", msg.image_id)]
        if msg.button_text and msg.button_url:
            params += [("button_text", msg.button_text), ("button_link", msg.button_url)]
        if msg.dlr_timeout is not None:
            params.append(("dlr_timeout", str(msg.dlr_timeout)))
        params.append(("expiry_txt", msg.sms_text))
        return params

    def summarize(self, msg: OutboundMessage) -> dict[str, Any]:
        """The form fields of ``send`` for the timeline; the signature is redacted (the
        secret itself never appears in a request)."""
        summary: dict[str, Any] = {"url": self.url}
        for key, value in self.build_params(msg):
            if key == "sign":
                value = REDACTED
            if key == "phone":
                summary.setdefault("phone", []).append(value)
            else:
                summary[key] = value
        return summary

    def send(self, message: OutboundMessage) -> SendResult:
        """One POST, never retried here: see the module docstring for the classification."""
        params = self.build_params(message)
        resp = http_request(self.session, "POST", self.url, data=params, timeout=self.timeout,
                            idempotent=False)
        error = classify_http_status(resp, idempotent=False)
        if error is not None:
            raise error
        return parse_send_response(resp.content, message.phones)

    # --- images ------------------------------------------------------------------------

    def upload_image(self, content: bytes, filename: str = "image") -> str:
        """Upload one image to the media server; returns its ``image_id``. Safe to retry."""
        data = {"login": self.user, "sign": media_sign(self.user, content, self.secret)}
        resp = http_request(self.session, "POST", self.media_url, data=data,
                            files={"image": (filename, content)}, timeout=self.timeout,
                            idempotent=True)
        error = classify_http_status(resp, idempotent=True)
        if error is not None:
            raise error
        return parse_upload_response(resp.text)

    def fetch_image(self, url: str) -> bytes:
        """Download a producer's ``image_url`` (≤ 10 MB, the gateway's own limit).

        A 4xx or an oversize file is permanent; timeouts and 5xx are retryable, since the
        download is harmless to repeat and image hosts have bad minutes too.
        The URL is the producer's, so it goes through the egress policy (``shared.egress``):
        redirects are followed (at most 5) only to addresses the policy allows, checked on
        the address dialled; a refused one is permanent (``image_refused``).
        """
        try:
            with self.image_session.get(url, stream=True, timeout=timeouts(self.timeout)) as resp:
                self._check_image_response(resp)
                return _read_capped(resp)
        except requests.RequestException as exc:
            if reason := egress.refused_reason(exc):
                raise PermanentError("image_refused", reason) from exc
            raise _image_unreachable(classify_transport_error(exc, idempotent=True)) from exc

    @staticmethod
    def _check_image_response(resp: requests.Response) -> None:
        """Refuse failed downloads, and oversize ones before reading the body."""
        if resp.status_code != 200:
            error = classify_http_status(resp, idempotent=True) or PermanentError("")
            raise _image_unreachable(error, f"HTTP {resp.status_code}")
        length = resp.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_IMAGE_BYTES:
            raise PermanentError("image_too_large", f"{length} bytes")

    def ensure_image_id(self, image_url: str, cache: KeyValueCache) -> str:
        """The gateway ``image_id`` for a URL, uploading it only the first time (no lock:
        ``outbound`` holds the image's lock around this).

        The key hashes the URL (bounded length, no odd characters) and names the account,
        as an image id is only valid for the login that uploaded it.
        """
        key = f"messaggio:image:{self.user}:{image_key(image_url)}"
        cached = cache.get(key)
        if cached:
            return cached.decode() if isinstance(cached, bytes) else str(cached)
        image_id = self.upload_image(self.fetch_image(image_url), _filename(image_url))
        cache.set(key, image_id)
        return image_id

    # --- reports -----------------------------------------------------------------------

    def parse_callback(self, params: Mapping[str, str]) -> ProviderEvent:
        """See the module-level ``parse_callback``. With the account's SMS fallback on, a
        standard (numeric) report is the SMS's: the gateway's own SMS comes under the Viber
        message's ids, so it names the hop it belongs to (extended Viber reports must be
        enabled on the account, as they are for ``off`` too)."""
        event = parse_callback(params)
        if self.gateway_fallback and event.channel is None:
            return replace(event, channel="sms")
        return event


def image_key(image_url: str) -> str:
    """The sha256 hex of an image URL: bounded length and no odd characters, for cache keys
    and the image's upload lock."""
    return hashlib.sha256(image_url.encode("utf-8")).hexdigest()


def _phone(request: SendRequest) -> str:
    """The recipient's international digits without "+", as the gateway and the consent
    registry key a phone."""
    if request.to.phone is None:
        raise ValueError("a phone hop needs request.to.phone (the schema requires it)")
    return request.to.phone.lstrip("+")


def _image_unreachable(error: ProviderError, detail: str | None = None) -> ProviderError:
    """The same error class (and Retry-After), renamed: the image host failed, not the gateway."""
    detail = error.detail if detail is None else detail
    if isinstance(error, RetryableError):
        return RetryableError("image_unreachable", detail, retry_after=error.retry_after)
    return type(error)("image_unreachable", detail)


def _read_capped(resp: requests.Response) -> bytes:
    """The body, refusing more than MAX_IMAGE_BYTES even if Content-Length lied or was absent."""
    chunks, total = [], 0
    for chunk in resp.iter_content(chunk_size=64 * 1024):
        total += len(chunk)
        if total > MAX_IMAGE_BYTES:
            raise PermanentError("image_too_large", f"more than {MAX_IMAGE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _filename(url: str) -> str:
    """A file name for the multipart upload: the URL's last path segment, else "image"."""
    name = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return name[:100] if name and "." in name else "image"
