"""Reading the providers' circuit breakers (kept in Redis by ``worker/breaker.py``) for
/healthz and /metrics: the web imports this, never the worker.

Each provider's circuit is one Redis hash: ``state`` (closed | half_open | open), ``open_until``
on the Redis clock, and ``reason`` when an account-wide refusal opened it (e.g. ``auth_error``,
``balance_exhausted``), so an operator sees why sends wait, not only that they do.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import redis

from shared import metrics
from shared.providers import PROVIDER_FOR_CHANNEL
from shared.settings import get_settings


def circuit_key(provider: str) -> str:
    return f"switchboard:breaker:{provider}"


@dataclass(frozen=True)
class Circuit:
    state: str  # closed | half_open | open | unknown
    retry_in: float | None = None  # open: seconds until the next probe may go
    reason: str | None = None  # why it opened, when an account-wide refusal did


def read_circuits(client: redis.Redis, providers: list[str]) -> dict[str, Circuit]:
    """Every provider's circuit as stored (no key: closed), on the Redis clock."""
    with client.pipeline(transaction=False) as pipe:
        pipe.time()
        for provider in providers:
            pipe.hmget(circuit_key(provider), "state", "open_until", "reason")
        (seconds, micros), *rows = pipe.execute()
    now = seconds + micros / 1e6
    circuits = {}
    for provider, (state, open_until, reason) in zip(providers, rows, strict=True):
        name = state.decode() if state else "closed"
        retry_in = max(float(open_until) - now, 0.0) if name == "open" and open_until else None
        circuits[provider] = Circuit(name, retry_in, reason.decode() if reason else None)
    return circuits


def providers() -> list[str]:
    return sorted(set(PROVIDER_FOR_CHANNEL.values()))


@lru_cache(maxsize=1)
def _status_client() -> redis.Redis:
    return metrics.quick_redis(get_settings().effective_redis_url)


def circuit_states() -> dict[str, Circuit]:
    """Each provider's circuit (for the metrics collector; raises if Redis is down)."""
    return read_circuits(_status_client(), providers())


def describe() -> dict[str, dict[str, object]]:
    """The /healthz ``providers`` detail; ``unknown`` when Redis cannot be read."""
    try:
        circuits = read_circuits(_status_client(), providers())
    except (redis.RedisError, OSError):
        return {p: {"circuit": "unknown"} for p in providers()}
    return {p: _detail(c) for p, c in circuits.items()}


def _detail(circuit: Circuit) -> dict[str, object]:
    detail: dict[str, object] = {"circuit": circuit.state}
    if circuit.retry_in is not None:
        detail["retry_in"] = round(circuit.retry_in, 1)
    if circuit.reason:
        detail["reason"] = circuit.reason
    return detail
