"""When a message may be sent: its schedule, its validity and the recipient's quiet hours.

Pure rules (no I/O, the clock passed in), so each is unit-tested with a frozen clock; the
API and the worker both call them, so a request means the same thing wherever it is read:

* ``send_at`` — not before then (a time in the past means now, at most a year ahead);
* ``valid_until`` / ``ttl_seconds`` — no hop starts after it, and no hop's deadline (Viber's
  ``dlr_timeout`` included) runs past it;
* ``quiet_hours`` — a hop that would start between ``start`` and ``end`` in the recipient's
  zone waits until ``end``. ``timezone: auto`` takes the zone from ``to.timezone`` or from
  the phone number (phonenumbers' timezone data; a number spanning several zones takes the
  first, and says so);
* ``priority: critical`` — ignores quiet hours (one-time codes, alerts).

Every datetime here is naive UTC, like every row (``shared.models.utcnow``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import phonenumbers
from phonenumbers import timezone as phone_timezones

MAX_SCHEDULE_AHEAD = timedelta(days=366)
AUTO_ZONE = "auto"
CRITICAL = "critical"
NORMAL = "normal"
PRIORITIES = (NORMAL, CRITICAL)


def naive_utc(value: datetime) -> datetime:
    """An aware datetime as naive UTC (the rows' clock)."""
    return value.astimezone(UTC).replace(tzinfo=None)


def parse_clock(value: str) -> time:
    """``HH:MM`` (or ``HH:MM:SS``) as a time of day; raises ``ValueError`` otherwise."""
    try:
        return time.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a time of day (HH:MM)") from None


def is_zone(name: str) -> bool:
    """An IANA zone this Python knows (``Europe/Brussels``)."""
    if name in ("", "localtime") or name not in _zones():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


_ZONES: set[str] = set()


def _zones() -> set[str]:
    if not _ZONES:
        _ZONES.update(available_timezones())
    return _ZONES


@dataclass(frozen=True)
class ResolvedZone:
    """The recipient's zone and how it was found (for the timeline)."""

    zone: str | None
    source: str  # "given" | "to.timezone" | "phone" | "phone_first_of_many" | "unknown"
    candidates: int = 1


def recipient_zone(zone: str, phone: str | None, to_timezone: str | None) -> ResolvedZone:
    """The zone quiet hours are kept in: a named zone as is; ``auto`` from ``to.timezone``,
    else the phone number's zones (the first where there are several), else unknown."""
    if zone != AUTO_ZONE:
        return ResolvedZone(zone, "given")
    if to_timezone:
        return ResolvedZone(to_timezone, "to.timezone")
    if phone:
        try:
            zones = [z for z in phone_timezones.time_zones_for_number(phonenumbers.parse(phone))
                     if is_zone(z)]
        except phonenumbers.NumberParseException:
            zones = []
        if len(zones) == 1:
            return ResolvedZone(zones[0], "phone")
        if zones:
            return ResolvedZone(zones[0], "phone_first_of_many", len(zones))
    return ResolvedZone(None, "unknown", 0)


def resolve_quiet_hours(quiet: dict[str, Any] | None, phone: str | None,
                        to_timezone: str | None) -> dict[str, Any] | None:
    """What the message row keeps: ``{start, end, timezone, zone_source[, zones]}`` with the
    zone resolved once, when the message is accepted; None when there are no quiet hours or
    no zone can be found for ``auto`` (then nothing is held, and the timeline says why)."""
    if not quiet:
        return None
    found = recipient_zone(quiet.get("timezone", AUTO_ZONE), phone, to_timezone)
    resolved = {"start": quiet["start"], "end": quiet["end"], "timezone": found.zone,
                "zone_source": found.source}
    if found.candidates > 1:
        resolved["zones"] = found.candidates
    return resolved


def quiet_until(quiet: dict[str, Any] | None, now: datetime) -> datetime | None:
    """When the quiet hours that hold ``now`` end (naive UTC), or None when ``now`` is outside
    them. ``start > end`` spans midnight (21:00-08:00); ``start == end`` is no quiet hours.
    Local times that a DST change skips or repeats are read the way ``zoneinfo`` reads them
    (fold 0), so the end is never earlier than the wall clock says."""
    if not quiet or not quiet.get("timezone"):
        return None
    zone = ZoneInfo(quiet["timezone"])
    start, end = parse_clock(quiet["start"]), parse_clock(quiet["end"])
    if start == end:
        return None
    local = now.replace(tzinfo=UTC).astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        inside = start <= clock < end
        end_day = local.date()
    else:  # spans midnight: inside after start today, or before end in the morning
        inside = clock >= start or clock < end
        end_day = local.date() + timedelta(days=1) if clock >= start else local.date()
    if not inside:
        return None
    ends = datetime.combine(end_day, end, tzinfo=zone)
    return naive_utc(ends)


def schedule_time(send_at: datetime | None, now: datetime) -> datetime | None:
    """When a message waits for its ``send_at`` (naive UTC), or None to send now (no
    ``send_at``, or one that has passed)."""
    if send_at is None:
        return None
    when = naive_utc(send_at) if send_at.tzinfo else send_at
    return when if when > now else None


def validity_end(valid_until: datetime | None, ttl_seconds: int | None,
                 accepted_at: datetime) -> datetime | None:
    """The message's ``valid_until`` as naive UTC: given, or ``ttl_seconds`` after it was
    accepted (after its ``send_at`` would make a ttl meaningless for scheduled messages, so
    a scheduled message's ttl counts from its ``send_at``: pass that as ``accepted_at``)."""
    if valid_until is not None:
        return naive_utc(valid_until) if valid_until.tzinfo else valid_until
    if ttl_seconds is not None:
        return accepted_at + timedelta(seconds=ttl_seconds)
    return None


def remaining(valid_until: datetime | None, now: datetime) -> float | None:
    """Seconds left before ``valid_until`` (0 once passed), or None without one."""
    if valid_until is None:
        return None
    return max(0.0, (valid_until - now).total_seconds())


def clamp_due(due: datetime, valid_until: datetime | None) -> datetime:
    """A hop deadline never runs past the message's validity."""
    return min(due, valid_until) if valid_until is not None else due
