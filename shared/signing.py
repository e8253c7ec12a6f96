"""Signatures on the status webhooks Switchboard sends to producers.

``Switchboard-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`` with the
timestamp (Unix seconds) in ``Switchboard-Timestamp``. Signing the timestamp with the body lets
a receiver refuse replays older than a few minutes.
"""

from __future__ import annotations

import hashlib
import hmac
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
