"""The time rules (shared/sendtime.py) on a frozen clock: quiet hours in the recipient's zone
(spanning midnight, across a DST change), the zone of ``auto``, schedules and validity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared import sendtime

QUIET = {"start": "21:00", "end": "08:00", "timezone": "Europe/Brussels"}


def utc(*args: int) -> datetime:
    """A naive UTC datetime, the rows' clock."""
    return datetime(*args)


@pytest.mark.parametrize(("now", "until"), [
    (utc(2026, 12, 4, 19, 59), None),  # 20:59 in Brussels (UTC+1): not yet
    (utc(2026, 12, 4, 20, 0), utc(2026, 12, 5, 7, 0)),  # 21:00 local: until 08:00 tomorrow
    (utc(2026, 12, 4, 23, 30), utc(2026, 12, 5, 7, 0)),  # past midnight UTC, same night
    (utc(2026, 12, 5, 6, 59), utc(2026, 12, 5, 7, 0)),  # 07:59 local: one minute left
    (utc(2026, 12, 5, 7, 0), None),  # 08:00 local: over
    (utc(2026, 12, 5, 12, 0), None),  # midday
], ids=["before", "start", "after-midnight-utc", "last-minute", "end", "midday"])
def test_quiet_hours_spanning_midnight(now: datetime, until: datetime | None) -> None:
    assert sendtime.quiet_until(QUIET, now) == until


def test_quiet_hours_within_one_day() -> None:
    lunch = {"start": "12:00", "end": "13:30", "timezone": "UTC"}
    assert sendtime.quiet_until(lunch, utc(2026, 6, 1, 11, 59)) is None
    assert sendtime.quiet_until(lunch, utc(2026, 6, 1, 12, 15)) == utc(2026, 6, 1, 13, 30)
    assert sendtime.quiet_until(lunch, utc(2026, 6, 1, 13, 30)) is None


def test_the_end_follows_the_local_clock_across_a_dst_change() -> None:
    """Brussels goes from UTC+1 to UTC+2 on 2026-03-29: 08:00 local is 06:00 UTC that day."""
    assert sendtime.quiet_until(QUIET, utc(2026, 3, 28, 22, 0)) == utc(2026, 3, 29, 6, 0)
    assert sendtime.quiet_until(QUIET, utc(2026, 3, 27, 22, 0)) == utc(2026, 3, 28, 7, 0)


def test_equal_start_and_end_means_no_quiet_hours_and_no_zone_means_none() -> None:
    assert sendtime.quiet_until({**QUIET, "end": "21:00"}, utc(2026, 12, 4, 20, 30)) is None
    assert sendtime.quiet_until({**QUIET, "timezone": None}, utc(2026, 12, 4, 22, 0)) is None
    assert sendtime.quiet_until(None, utc(2026, 12, 4, 22, 0)) is None


def test_seconds_are_honoured() -> None:
    quiet = {"start": "10:00:00", "end": "10:00:05", "timezone": "UTC"}
    assert sendtime.quiet_until(quiet, utc(2026, 1, 1, 10, 0, 2)) == utc(2026, 1, 1, 10, 0, 5)


@pytest.mark.parametrize(("zone", "phone", "to_zone", "expected"), [
    ("Asia/Tokyo", "+32470120001", None, ("Asia/Tokyo", "given", 1)),
    ("auto", "+32470120001", "America/New_York", ("America/New_York", "to.timezone", 1)),
    ("auto", "+32470120001", None, ("Europe/Brussels", "phone", 1)),
    ("auto", "+14155550100", None, ("America/Los_Angeles", "phone", 1)),
    ("auto", None, None, (None, "unknown", 0)),
], ids=["given", "to.timezone", "belgian-phone", "californian-phone", "nothing"])
def test_the_zone_of_auto(zone: str, phone: str | None, to_zone: str | None,
                          expected: tuple[str | None, str, int]) -> None:
    found = sendtime.recipient_zone(zone, phone, to_zone)
    assert (found.zone, found.source, found.candidates) == expected


def test_a_number_spanning_several_zones_takes_the_first_and_says_so() -> None:
    found = sendtime.recipient_zone("auto", "+79161234567", None)  # Russia: many zones
    assert found.source == "phone_first_of_many" and found.candidates > 1
    assert found.zone is not None and sendtime.is_zone(found.zone)
    resolved = sendtime.resolve_quiet_hours({"start": "22:00", "end": "07:00",
                                             "timezone": "auto"}, "+79161234567", None)
    assert resolved == {"start": "22:00", "end": "07:00", "timezone": found.zone,
                        "zone_source": "phone_first_of_many", "zones": found.candidates}


def test_schedule_time_past_means_now() -> None:
    now = utc(2026, 12, 4, 12, 0)
    later = datetime(2026, 12, 4, 14, 0, tzinfo=UTC) + timedelta(hours=1)  # 15:00 UTC
    assert sendtime.schedule_time(later, now) == utc(2026, 12, 4, 15, 0)
    assert sendtime.schedule_time(datetime(2026, 12, 4, 11, 0, tzinfo=UTC), now) is None
    assert sendtime.schedule_time(None, now) is None


def test_validity_from_a_time_or_a_ttl_and_the_clamp() -> None:
    start = utc(2026, 12, 4, 12, 0)
    given = datetime(2026, 12, 4, 14, 0, tzinfo=UTC)
    assert sendtime.validity_end(given, None, start) == utc(2026, 12, 4, 14, 0)
    assert sendtime.validity_end(None, 600, start) == utc(2026, 12, 4, 12, 10)
    assert sendtime.validity_end(None, None, start) is None
    ends = utc(2026, 12, 4, 12, 10)
    assert sendtime.remaining(ends, start) == 600
    assert sendtime.remaining(ends, utc(2026, 12, 4, 13, 0)) == 0
    assert sendtime.clamp_due(utc(2026, 12, 5, 12, 0), ends) == ends
    assert sendtime.clamp_due(utc(2026, 12, 4, 12, 5), ends) == utc(2026, 12, 4, 12, 5)
