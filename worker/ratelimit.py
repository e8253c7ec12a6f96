"""A global per-provider rate limit shared by every worker through Redis (GCRA, one Lua call).

Each call reserves the next free slot and says how long to wait for it. A short wait is slept
in the worker; a long one is handed back so the task is retried later. Nothing is ever
dropped: over the limit, sends wait their turn. The Redis clock is used, so workers on hosts
with skewed clocks still share one schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - burst * interval - now
if wait < 0 then wait = 0 end
if wait > max_wait then return {0, tostring(wait)} end
local new_tat = tat + interval * tonumber(ARGV[4] or '1')
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return {1, tostring(wait)}
"""


@dataclass(frozen=True)
class Reservation:
    granted: bool  # a slot is ours: send after ``wait`` seconds
    wait: float  # when not granted: how long until a slot is likely free


class RateLimiter:
    def __init__(self, client: redis.Redis, rate_per_second: float, burst: int = 1) -> None:
        self._script = client.register_script(_GCRA)
        self._interval = 1.0 / rate_per_second
        self._burst = max(burst - 1, 0)

    def reserve(self, key: str, max_wait: float, cost: int = 1) -> Reservation:
        """A slot for ``cost`` messages sent at once (a bulk request): it starts when the
        first is due, and the bucket then advances by all of them."""
        granted, wait = self._script(keys=[f"switchboard:rate:{key}"],
                                     args=[self._interval, self._burst, max_wait, cost])
        return Reservation(bool(int(granted)), float(wait))
