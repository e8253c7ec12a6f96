"""The webhook retry schedule: about 24 h in all, jittered, then give up."""

from __future__ import annotations

import pytest

from worker.notify import RETRY_SCHEDULE, next_delay


def test_schedule_spans_about_a_day() -> None:
    assert 20 * 3600 <= sum(RETRY_SCHEDULE) <= 26 * 3600
    assert list(RETRY_SCHEDULE[:-1]) <= sorted(RETRY_SCHEDULE[:-1])


@pytest.mark.parametrize("failures", range(1, len(RETRY_SCHEDULE) + 1))
def test_each_delay_is_jittered_within_ten_percent(failures: int) -> None:
    base = RETRY_SCHEDULE[failures - 1]
    delays = {next_delay(failures) for _ in range(20)}
    assert all(0.9 * base <= d <= 1.1 * base for d in delays)
    assert len(delays) > 1


def test_gives_up_after_the_last_step() -> None:
    assert next_delay(len(RETRY_SCHEDULE) + 1) is None
