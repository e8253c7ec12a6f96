"""How long things wait: a retry's backoff and ``RetryLater``, the way engine code asks its
task to run again soon (long waits are data, never ETA tasks). A hop's delivery window is
``shared.windows``."""

from __future__ import annotations

import random

from shared.settings import get_settings


class RetryLater(Exception):
    """Ask the calling task to run again after ``countdown`` seconds (never a long ETA)."""

    def __init__(self, countdown: float, reason: str) -> None:
        super().__init__(f"{reason}; retry in {countdown:.1f}s")
        self.countdown = countdown
        self.reason = reason


def backoff(retries: int) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random, capped."""
    cap = get_settings().retry_backoff_max_seconds
    base = min(cap, 2 ** retries)
    return base / 2 + random.uniform(0, base / 2)
