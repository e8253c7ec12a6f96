"""Secrets never reach the logs: a logging filter that redacts every configured secret.

Provider errors already redact their own details (``shared.providers.base.ProviderError``);
this catches what they cannot: an unexpected exception whose message or traceback quotes a
request with its credentials, logged by Flask's error handler or by Celery's task-failure log.
It is installed on the handlers (filters on handlers see every record that reaches them,
including those propagated from child loggers), gunicorn's access log included: the gateway's
report token travels as a path segment (``/callbacks/messaggio/<token>``), and so does a flow
action link's token (``/l/<token>``). Those segments are redacted whatever their value, so a
token rotated out of the settings (still used by the gateway for a while) or a link token (no
configured secret at all) is not logged either.
"""

from __future__ import annotations

import logging
import re

from shared.providers.base import REDACTED, redact

# A secret path segment: up to the next "/", "?", "#", quote or space (a request line in the
# access log ends the path with a space, a quoted URL with a quote).
_SECRET_SEGMENT = re.compile(r"(/callbacks/messaggio/|/l/)[^/?#\s\"']+")


def redact_text(text: str) -> str:
    """``text`` with secret path segments and every configured secret replaced."""
    return redact(_SECRET_SEGMENT.sub(lambda m: m.group(1) + REDACTED, text))


class RedactSecrets(logging.Filter):
    """Formats the message (and traceback) once, with every configured secret replaced."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is logged as it is
            return True
        record.msg, record.args = redact_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def install(*loggers: logging.Logger) -> None:
    """Add the filter to every handler of the root logger (and of ``loggers``), once."""
    for logger in (logging.getLogger(), *loggers):
        for handler in logger.handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets())
