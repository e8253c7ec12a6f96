"""The HTTP transport every adapter shares (in the spirit of django-anymail's ``base_requests``).

An adapter knows its provider's wire format; what an HTTP failure *means* for a resend is
the same for all of them, so it is decided here, once:

* a connection that was never made (refused, DNS, unreachable, a certificate refused in the
  handshake) and 429/502/503/504 from a front end: nothing was processed, ``RetryableError``;
* a request that may have arrived (read timeout, a connection dropped after sending, a 500):
  ``AmbiguousError``, unless the call is harmless to repeat (``idempotent``), then retryable;
* anything else 4xx or 3xx (we never follow redirects to a provider): ``PermanentError``.

Configured secrets are redacted from error details by ``ProviderError`` itself
(``shared.providers.base``); ``echoed`` does the same for what a provider sent back on success.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from urllib3.exceptions import ClosedPoolError, NewConnectionError

from shared.providers.base import (
    AmbiguousError,
    PermanentError,
    ProviderError,
    RetryableError,
    redact,
)

CONNECT_TIMEOUT_CAP = 3.0  # a healthy provider accepts a TCP connection in well under 3 s
RETRYABLE_HTTP = frozenset({429, 502, 503, 504})  # the front end refused: nothing was processed
DETAIL_LIMIT = 300  # characters of a provider's text kept in an error detail


def timeouts(read_timeout: float) -> tuple[float, float]:
    """(connect, read) for requests: a short connect timeout, since a connect failure is
    always safe to retry and waiting the full read timeout for it only delays the retry."""
    return (min(CONNECT_TIMEOUT_CAP, read_timeout), read_timeout)


def short(value: object, limit: int = DETAIL_LIMIT) -> str:
    """``value`` as text, cut to ``limit`` characters: error details reach the timeline,
    webhooks and logs, and a provider's error page can be megabytes."""
    return str(value)[:limit]


def echoed(text: str, limit: int | None = None) -> str:
    """What a provider sent back (a reply body, a success description), with configured
    secrets redacted and then cut to ``limit``: it is stored and shown like an error detail,
    and a provider may echo our credentials. Redacting first never leaves half a secret."""
    cleaned = redact(text) if text else text
    return cleaned if limit is None else cleaned[:limit]


def http_request(
    session: requests.Session, method: str, url: str, *, timeout: float, idempotent: bool,
    **kwargs: Any,
) -> requests.Response:
    """One HTTP call, never retried and never redirected; a transport failure is raised as
    the ``ProviderError`` it means (see ``classify_transport_error``)."""
    try:
        return session.request(method, url, timeout=timeouts(timeout), allow_redirects=False,
                               **kwargs)
    except requests.RequestException as exc:
        raise classify_transport_error(exc, idempotent=idempotent) from exc


# --------------------------------------------------------------------------------------
# Retry-After
# --------------------------------------------------------------------------------------

def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), else None."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        return _retry_after_date(text, now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _retry_after_date(text: str, now: datetime | None) -> float | None:
    """The HTTP-date form of Retry-After, as seconds from now (never negative)."""
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


# --------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------

def _causes(exc: BaseException) -> Iterable[BaseException]:
    """The exception and everything it wraps (requests/urllib3 nest via args and ``reason``)."""
    stack, seen = [exc], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [getattr(current, "reason", None), current.__cause__, *current.args]
        stack.extend(e for e in nested if isinstance(e, BaseException))


def _never_connected(exc: requests.ConnectionError) -> bool:
    """True when no connection was made (refused, DNS, unreachable), so nothing was sent.

    urllib3 raises ``NewConnectionError`` (``NameResolutionError`` is a subclass) only
    while opening the socket, ``ClosedPoolError`` before taking a connection at all, and a
    certificate is only verified in the TLS handshake, before any request byte is written.
    """
    connect_failures = (NewConnectionError, ClosedPoolError, ConnectionRefusedError,
                        ssl.SSLCertVerificationError)
    return any(isinstance(e, connect_failures) for e in _causes(exc))


def classify_transport_error(exc: requests.RequestException, *, idempotent: bool) -> ProviderError:
    """Map a requests exception to our error classes.

    ``idempotent`` is for calls that are harmless to repeat (an upload, a download, a read,
    a call the provider dedupes): there the "may have arrived" cases become retryable
    instead of ambiguous.
    """
    if isinstance(exc, requests.ConnectTimeout) or (
        isinstance(exc, requests.ConnectionError) and _never_connected(exc)
    ):
        return RetryableError("connection_failed", short(exc))
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return PermanentError("bad_url", short(exc))
    if isinstance(exc, requests.ReadTimeout):
        reason = "timeout_after_send"
    elif isinstance(exc, requests.ConnectionError):
        reason = "connection_dropped"
    else:  # e.g. ChunkedEncodingError while reading the reply: the request arrived
        reason = "transport_error"
    return (RetryableError if idempotent else AmbiguousError)(reason, short(exc))


def classify_http_status(resp: requests.Response, *, idempotent: bool) -> ProviderError | None:
    """None for 2xx; otherwise the error the HTTP status alone implies.

    429/502/503/504 come from the front end before the provider processed anything; a 500
    may come after it queued the message, so it is ambiguous (unless the call is idempotent).
    """
    status = resp.status_code
    if 200 <= status < 300:
        return None
    reason, detail = f"http_{status}", short(resp.text, 200)
    if status in RETRYABLE_HTTP:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        return RetryableError(reason, detail, retry_after=retry_after)
    if status >= 500:
        return (RetryableError if idempotent else AmbiguousError)(reason, detail)
    return PermanentError(reason, detail)  # 4xx, and 3xx: a misconfigured URL
