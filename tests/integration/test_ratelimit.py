"""The global per-provider rate limit against a real Redis (the stack's)."""

from __future__ import annotations

import itertools
import uuid

import pytest
import redis

from tests.integration.conftest import Stack
from worker.ratelimit import RateLimiter

pytestmark = pytest.mark.integration


@pytest.fixture()
def client(stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(stack.env["SWITCHBOARD_REDIS_URL"])


def test_reservations_are_spaced_by_the_rate(client: redis.Redis) -> None:
    limiter = RateLimiter(client, rate_per_second=10)
    key = f"test-{uuid.uuid4()}"
    slots = []
    for _ in range(10):
        assert limiter.reserve(key, max_wait=5).granted
        slots.append(float(client.get(f"switchboard:rate:{key}")))
    # Each reservation books the slot exactly one interval after the previous one.
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(slots)]
    assert gaps == [0.1] * 9


def test_over_the_limit_waits_instead_of_failing(client: redis.Redis) -> None:
    limiter = RateLimiter(client, rate_per_second=10)
    key = f"test-{uuid.uuid4()}"
    granted = [limiter.reserve(key, max_wait=0.25) for _ in range(5)]
    assert [r.granted for r in granted] == [True, True, True, False, False]
    assert 0.25 < granted[3].wait <= 0.31  # the caller is told when to come back


def test_limit_is_shared_between_limiter_instances(client: redis.Redis) -> None:
    """Two workers (two instances) draw from one schedule per provider key."""
    key = f"test-{uuid.uuid4()}"
    first, second = RateLimiter(client, 10), RateLimiter(client, 10)
    first.reserve(key, max_wait=5)
    after_first = float(client.get(f"switchboard:rate:{key}"))
    second.reserve(key, max_wait=5)
    assert round(float(client.get(f"switchboard:rate:{key}")) - after_first, 6) == 0.1
