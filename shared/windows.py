"""How long a hop may stay undelivered before the route moves on, per channel.

One rule in one place, used by the engine for every hop: a channel's window is the request's
``deadlines[channel]``, else its ``dlr_timeout``, else the default. SMS is the exception: the
gateway's SMS delivery reports arrive within ``sms_report_window_seconds`` (operators report
late), so an SMS hop waits that long unless the request names an SMS deadline itself.

The window is kept the way the channel's provider keeps it: the Viber gateway rounds
``dlr_timeout`` down to whole minutes (providers.md §2.3), so a 90 s Viber hop ends at 60 s,
here and at the gateway alike (its expiry report, its own SMS fallback). The adapter sends
the same rounded value (``provider_window``).
"""

from __future__ import annotations

from shared.schemas import SendRequest
from shared.settings import get_settings

REPORT_WINDOW_CHANNELS = frozenset({"sms"})  # channels whose window is the report window
WHOLE_MINUTE_CHANNELS = frozenset({"viber"})  # channels whose provider rounds down to minutes


def provider_window(channel: str, request: SendRequest, default: int) -> int:
    """The hop's window in seconds as its provider keeps it: the request's deadline for
    ``channel`` (else ``default``), rounded down to whole minutes where the provider rounds,
    so that ours and the provider's end together."""
    seconds = request.deadline_for(channel, default)
    if channel in WHOLE_MINUTE_CHANNELS:
        return seconds - seconds % 60
    return seconds


def deadline_window(channel: str, request: SendRequest) -> float:
    """Seconds the hop on ``channel`` may stay undelivered. ``test_deadline_seconds``
    replaces it whole, unrounded (tests watch a fallback fire in seconds)."""
    settings = get_settings()
    if settings.test_deadline_seconds is not None:
        return settings.test_deadline_seconds
    if channel in REPORT_WINDOW_CHANNELS and channel not in request.deadlines:
        return float(settings.sms_report_window_seconds)
    return float(provider_window(channel, request, settings.default_dlr_timeout))
