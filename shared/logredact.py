"""Secrets never reach the logs: a logging filter that redacts every configured secret.

Provider errors already redact their own details (``shared.providers.base.ProviderError``);
this catches what they cannot: an unexpected exception whose message or traceback quotes a
request with its credentials, logged by Flask's error handler or by Celery's task-failure log.
It is installed on the handlers (filters on handlers see every record that reaches them,
including those propagated from child loggers).
"""

from __future__ import annotations

import logging

from shared.providers.base import configured_secrets, redact


class RedactSecrets(logging.Filter):
    """Formats the message (and traceback) once, with every configured secret replaced."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not configured_secrets():
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is logged as it is
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install(*loggers: logging.Logger) -> None:
    """Add the filter to every handler of the root logger (and of ``loggers``), once."""
    for logger in (logging.getLogger(), *loggers):
        for handler in logger.handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets())
