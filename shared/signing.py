"""Signatures on the status webhooks Switchboard sends to producers.

``Switchboard-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`` with the
timestamp (Unix seconds) in ``Switchboard-Timestamp``. Signing the timestamp with the body lets
a receiver refuse replays older than a few minutes. The Standard Webhooks headers below are
signed too, for receivers that use a standardwebhooks library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "Switchboard-Signature"
TIMESTAMP_HEADER = "Switchboard-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_signature(secret: str, body: bytes, timestamp: str, signature: str,
                     tolerance_seconds: int = 300, now: float | None = None) -> bool:
    """True when ``signature`` is ours over this exact body and the timestamp is recent.

    Receivers call it with the raw request body (before any JSON parsing) and the two headers.
    """
    try:
        age = abs((now if now is not None else time.time()) - int(timestamp))
    except ValueError:
        return False
    if age > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


# --- Standard Webhooks (https://www.standardwebhooks.com) -----------------------------------
# Beside Switchboard-Signature, every webhook carries the three headers of the specification,
# so receivers can verify it with any standardwebhooks library:
#   webhook-id:        evt_<event id>, the same on every retry and replay of one event
#   webhook-timestamp: Unix seconds of this send
#   webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<raw body>")>, one per
#                      secret in force, space-separated (the old one too during a rotation)

WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the specification asks for 24 to 64 random bytes


def new_secret() -> str:
    """A signing secret in the specification's form: ``whsec_`` + base64 of random key bytes,
    which is what ``standardwebhooks.Webhook(secret)`` decodes to its HMAC key."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def hmac_key(secret: str) -> bytes:
    """The Standard Webhooks HMAC key of a secret.

    ``whsec_`` followed by valid, padded standard base64 is decoded, as every standardwebhooks
    library does. Anything else is a secret from before this form (older ``whsec_`` +
    URL-safe tokens, or an operator's own string): its key is the secret's UTF-8 bytes, whole,
    prefix included, so a receiver passes ``secret.encode()`` to the library as raw bytes.
    """
    if secret.startswith(SECRET_PREFIX):
        encoded = secret[len(SECRET_PREFIX):]
        if encoded and len(encoded) % 4 == 0:
            try:
                return base64.b64decode(encoded, validate=True)
            except binascii.Error:
                pass
    return secret.encode("utf-8")


def webhook_id(event_id: int) -> str:
    """The ``webhook-id`` of an event: derived from the event alone, so a retry and a replay
    carry the same id and receivers can drop the duplicate."""
    return f"evt_{event_id}"


def standard_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """One ``v1,<base64>`` signature of the specification for ``secret``."""
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    mac = hmac.new(hmac_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def standard_headers(signing_secrets: list[str], msg_id: str, timestamp: str,
                     body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every secret in force (current first),
    space-separated as the specification allows for key rotation."""
    signatures = " ".join(standard_signature(s, msg_id, timestamp, body)
                          for s in signing_secrets)
    return {WEBHOOK_ID_HEADER: msg_id, WEBHOOK_TIMESTAMP_HEADER: timestamp,
            WEBHOOK_SIGNATURE_HEADER: signatures}
