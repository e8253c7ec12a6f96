"""The Redis index of attempt deadlines (a sorted set scored by due time).

The database column ``attempts.deadline_at`` is the truth; this index only makes "what is due
now?" cheap for the one-second sweep. It is rebuilt from the database when beat starts, and the
recovery sweep re-adds any due row it lacks, so losing Redis loses nothing.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import UTC, datetime

import redis

KEY = "switchboard:deadlines"


def _score(when: datetime) -> float:
    return calendar.timegm(when.utctimetuple()) + when.microsecond / 1e6


def index(client: redis.Redis, items: Iterable[tuple[str, datetime]]) -> int:
    mapping = {attempt_id: _score(due) for attempt_id, due in items}
    return client.zadd(KEY, mapping) if mapping else 0


def remove(client: redis.Redis, attempt_ids: Iterable[str]) -> None:
    ids = list(attempt_ids)
    if ids:
        client.zrem(KEY, *ids)


def next_due(client: redis.Redis) -> datetime | None:
    """When the earliest entry falls due (naive UTC), or None when the index is empty."""
    first = client.zrange(KEY, 0, 0, withscores=True)
    if not first:
        return None
    return datetime.fromtimestamp(first[0][1], UTC).replace(tzinfo=None)


def due(client: redis.Redis, now: datetime, limit: int = 500) -> list[str]:
    raw = client.zrangebyscore(KEY, "-inf", _score(now), start=0, num=limit)
    return [r.decode() if isinstance(r, bytes) else r for r in raw]

