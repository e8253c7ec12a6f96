"""One Redis client per process, for rate limits, the deadline index and sweep locks."""

from __future__ import annotations

from functools import lru_cache

import redis

from shared.settings import get_settings


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().effective_redis_url, socket_timeout=5,
                                health_check_interval=30)


def reset() -> None:
    get_redis.cache_clear()
