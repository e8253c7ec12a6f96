"""How long a hop may stay undelivered before the route moves on, per channel.

One rule in one place, used by the engine for every hop: a channel's window is the request's
``deadlines[channel]``, else its ``dlr_timeout``, else the default. SMS is the exception: the
gateway's SMS delivery reports arrive within ``sms_report_window_seconds`` (operators report
late), so an SMS hop waits that long unless the request names an SMS deadline itself.
"""

from __future__ import annotations

from shared.schemas import SendRequest
from shared.settings import get_settings

REPORT_WINDOW_CHANNELS = frozenset({"sms"})  # channels whose window is the report window


def deadline_window(channel: str, request: SendRequest) -> float:
    """Seconds the hop on ``channel`` may stay undelivered."""
    settings = get_settings()
    if settings.test_deadline_seconds is not None:
        return settings.test_deadline_seconds
    if channel in REPORT_WINDOW_CHANNELS and channel not in request.deadlines:
        return float(settings.sms_report_window_seconds)
    return float(request.deadline_for(channel, settings.default_dlr_timeout))
