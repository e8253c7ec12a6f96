"""How long things wait: a retry's backoff and ``RetryLater``, the way engine code asks its
task to run again soon (long waits are data, never ETA tasks). A hop's delivery window is
``shared.windows``. Every countdown decided here stays under the broker's visibility timeout
(``shared.broker.bounded``), so Redis never hands out a retry that is still waiting."""

from __future__ import annotations

import random

from shared.broker import bounded
from shared.settings import get_settings


class RetryLater(Exception):
    """Ask the calling task to run again after ``countdown`` seconds (never a long ETA)."""

    def __init__(self, countdown: float, reason: str) -> None:
        countdown = bounded(countdown)  # a provider's Retry-After, a circuit's wait: any length
        super().__init__(f"{reason}; retry in {countdown:.1f}s")
        self.countdown = countdown
        self.reason = reason


def backoff(retries: int) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random, capped (the cap fits
    under the visibility timeout: the settings refuse one that does not)."""
    cap = get_settings().retry_backoff_max_seconds
    base = min(cap, 2 ** retries)
    return bounded(base / 2 + random.uniform(0, base / 2))


def retry_countdown(retry_after: float | None, retries: int) -> float:
    """When a Celery ``self.retry`` runs again: the provider's Retry-After if it gave one,
    else our backoff; never past the broker's ceiling."""
    return bounded(retry_after) if retry_after else backoff(retries)
