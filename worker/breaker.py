"""A circuit breaker per provider, shared by every worker through Redis (one Lua call each).

Why: while a provider is down every send fails, spends a retry, and soon falls back to another
channel or fails for good, although the message was fine. The breaker turns a run of failures
into a pause instead: after ``breaker_failure_threshold`` consecutive transport-level failures
(``RetryableError`` and ``AmbiguousError``: refused connections, timeouts, 5xx, the gateway's
"temporary error") within ``breaker_window_seconds``, the circuit opens and sends to that
provider wait: the attempt is re-scheduled like a rate-limited one, neither failed nor charged
a retry. After ``breaker_open_seconds`` one send is let through as a probe (half-open): its
success closes the circuit, its failure opens it again. A permanent refusal of one message (a
bad number) is the provider answering, so it counts as a success.

The state is one Redis hash per provider, changed only inside Lua scripts on the Redis clock, so
every worker on every host sees one circuit and a single probe is let through at a time. A probe
holds the half-open circuit for its call's timeout plus a margin: if its worker died mid-call,
the next send probes instead. A breaker that cannot reach Redis lets sends through (fails open).

An account-wide refusal (``AccountRefusal``: bad credentials, no balance) opens the circuit at
once with its reason (``trip``), since every message would be refused alike. The web reads the
states, reasons included, through ``shared.circuits`` for /healthz and /metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from shared import metrics
from shared.circuits import circuit_key
from shared.providers.base import (
    AccountRefusal,
    AmbiguousError,
    PermanentError,
    RetryableError,
)
from shared.settings import get_settings
from worker.redis_conn import get_redis

log = logging.getLogger(__name__)

PROBE_MARGIN_SECONDS = 5.0
HALF_OPEN_POLL_SECONDS = 1.0  # how soon a send held behind a running probe looks again

# -> {1} go, {2} go as the probe, {0, wait, state} wait
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'state', 'open_until', 'probe_until')
if s[1] ~= 'open' and s[1] ~= 'half_open' then return {1} end
local until_at = tonumber(s[1] == 'open' and s[2] or s[3]) or 0
if until_at > now then return {0, tostring(until_at - now), s[1]} end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', tostring(now + tonumber(ARGV[1])))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {2}
"""

# ARGV: ok (1/0), threshold, window, open seconds, ttl -> the new state if it changed, else ''
_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if ARGV[1] == '1' then
  redis.call('DEL', KEYS[1])
  if state ~= 'closed' then return 'closed' end
  return ''
end
local function open()
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', tostring(now + tonumber(ARGV[4])))
  redis.call('HDEL', KEYS[1], 'probe_until', 'failures', 'first_failure')
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return 'open'
end
if state == 'half_open' then return open() end
if state == 'open' then return '' end
local f = redis.call('HMGET', KEYS[1], 'failures', 'first_failure')
local failures, first = tonumber(f[1]) or 0, tonumber(f[2])
if first == nil or now - first > tonumber(ARGV[3]) then failures, first = 0, now end
failures = failures + 1
if failures >= tonumber(ARGV[2]) then return open() end
redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', failures, 'first_failure', tostring(first))
redis.call('EXPIRE', KEYS[1], ARGV[5])
return ''
"""


# ARGV: open seconds, ttl, reason -> 'open' if this opened it, else ''
_TRIP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local was = redis.call('HGET', KEYS[1], 'state')
redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', tostring(now + tonumber(ARGV[1])),
           'reason', ARGV[3])
redis.call('HDEL', KEYS[1], 'probe_until', 'failures', 'first_failure')
redis.call('EXPIRE', KEYS[1], ARGV[2])
if was == 'open' then return '' end
return 'open'
"""


@dataclass(frozen=True)
class Admission:
    go: bool
    wait: float = 0.0  # when not ``go``: seconds until it is worth asking again
    probe: bool = False  # this send is the half-open probe


class Breaker:
    """The circuits of every provider, with one configuration."""

    def __init__(self, client: redis.Redis, threshold: int, window_seconds: float,
                 open_seconds: float) -> None:
        self._admit = client.register_script(_ADMIT)
        self._record = client.register_script(_RECORD)
        self._trip = client.register_script(_TRIP)
        self.threshold = threshold
        self.window = window_seconds
        self.open_seconds = open_seconds

    def _ttl(self, lease: float) -> int:
        """Long enough to outlive any window, cool-down and probe; a stale key just expires."""
        return int(self.window + self.open_seconds + lease) + 60

    def admit(self, provider: str, probe_lease: float) -> Admission:
        """May a send to ``provider`` go now? Open: no; cool-down over: yes, as the probe."""
        if self.threshold <= 0:
            return Admission(True)
        reply = self._admit(keys=[circuit_key(provider)],
                            args=[probe_lease, self._ttl(probe_lease)])
        code = int(reply[0])
        if code == 0:
            wait, state = float(reply[1]), reply[2].decode()
            return Admission(False, min(wait, HALF_OPEN_POLL_SECONDS)
                             if state == "half_open" else wait)
        return Admission(True, probe=code == 2)

    def record(self, provider: str, ok: bool) -> str | None:
        """A call's result; returns the circuit's new state if this changed it."""
        if self.threshold <= 0:
            return None
        changed = self._record(keys=[circuit_key(provider)], args=[
            int(ok), self.threshold, self.window, self.open_seconds, self._ttl(0)])
        return changed.decode() or None


    def trip(self, provider: str, reason: str) -> bool:
        """Open the circuit now, whatever its count (an account-wide refusal); returns
        whether this opened it (so it is logged once, not per message)."""
        opened = self._trip(keys=[circuit_key(provider)], args=[
            self.open_seconds, self._ttl(0), reason])
        return bool(opened)


# --- the worker side -------------------------------------------------------------------------

def _breaker() -> Breaker:
    settings = get_settings()
    return Breaker(get_redis(), settings.breaker_failure_threshold,
                   settings.breaker_window_seconds, settings.breaker_open_seconds)


def _probe_lease(provider: str) -> float:
    """A probe's call cannot outlast its provider's read timeout."""
    timeout = getattr(get_settings(), f"{provider}_timeout_seconds", 10.0)
    return float(timeout) + PROBE_MARGIN_SECONDS


def admit(provider: str) -> float | None:
    """Seconds a send to ``provider`` must wait, or None to go ahead (also when Redis fails:
    the breaker must never be the reason nothing is sent)."""
    try:
        admission = _breaker().admit(provider, _probe_lease(provider))
    except redis.RedisError:
        log.warning("circuit breaker unavailable; sending to %s anyway", provider, exc_info=True)
        return None
    if admission.probe:
        log.info("circuit %s half-open: probing", provider)
        metrics.circuit_transition(provider, "half_open")
    return None if admission.go else admission.wait


def record(provider: str, ok: bool) -> None:
    """Tell the provider's circuit how a call went; log and count a change of state."""
    try:
        changed = _breaker().record(provider, ok)
    except redis.RedisError:
        log.warning("circuit breaker unavailable; %s result not recorded", provider,
                    exc_info=True)
        return
    if changed:
        log.log(logging.WARNING if changed == "open" else logging.INFO,
                "circuit %s %s", provider, changed)
        metrics.circuit_transition(provider, changed)


def trip(provider: str, reason: str, detail: str = "") -> float:
    """An account-wide refusal: open the provider's circuit for all its messages, with the
    reason shown on /healthz and in ``switchboard_circuit_state``. Returns the seconds until
    a probe may try again. Logged once per opening, not per message."""
    settings = get_settings()
    try:
        opened = _breaker().trip(provider, reason)
    except redis.RedisError:
        log.warning("circuit breaker unavailable; %s refused the account (%s)", provider,
                    reason, exc_info=True)
        return float(settings.breaker_open_seconds)
    if opened:
        log.error("circuit %s open: the provider refused the account (%s: %s); its messages "
                  "wait, and fall back when their deadlines pass", provider, reason, detail)
        metrics.circuit_transition(provider, "open")
    return float(settings.breaker_open_seconds)


_OUTCOMES: tuple[tuple[type[Exception], str, bool | None], ...] = (
    (RetryableError, "retryable", False),
    (AmbiguousError, "ambiguous", False),
    (AccountRefusal, "account_refused", None),  # ``trip`` opens the circuit instead
    (PermanentError, "rejected", True),  # the provider answered: it is up
)


@contextmanager
def watched_call(provider: str, channel: str) -> Iterator[None]:
    """Wrap one provider send call: time it, count its outcome, tell the breaker. An error
    of ours (not a provider error) says nothing about the provider."""
    started = time.perf_counter()
    outcome, ok = "error", None
    try:
        yield
        outcome, ok = "accepted", True
    except Exception as exc:
        outcome, ok = next(((name, good) for kind, name, good in _OUTCOMES
                            if isinstance(exc, kind)), ("error", None))
        raise
    finally:
        metrics.provider_call(provider, channel, outcome, time.perf_counter() - started)
        if ok is not None:
            record(provider, ok)
