"""Prometheus metrics: what every process counts, and what ``/metrics`` answers.

Names follow the Prometheus conventions: the ``switchboard_`` prefix, base units (seconds),
``_total`` on counters, and label values from small closed sets (channels, providers,
outcomes, reasons; never a message id or a phone number).

Several processes count: gunicorn runs several web workers and a Celery worker forks a pool. So
counters and histograms use prometheus_client's multiprocess mode: each process writes its
values to memory-mapped files in one directory (``multiproc_dir``: ``$PROMETHEUS_MULTIPROC_DIR``,
by default ``<data_dir>/metrics``) and a scrape adds up every file. ``switchboard up`` and
deploy/gunicorn.conf.py put that directory in the environment of the web processes, a Celery
worker does it for its pool before forking (``use_directory``).

How workers' metrics are exposed: through that shared directory. When web and workers run on
one host (``switchboard up``, the Procfile, systemd) the web's ``/metrics`` already includes every
worker's counts: nothing more to open or to scrape. Where workers run elsewhere (compose
services, pods), set ``SWITCHBOARD_WORKER_METRICS_PORT`` for them: the worker's main process then
serves its pool's directory over HTTP (``serve_worker_metrics``) and Prometheus scrapes each
worker too. Never both for one directory, or its counts would be scraped twice.

Gauges of shared state (queue depth, stuck messages, circuit states) belong to no process:
``StateCollector`` computes them from Redis and the database at scrape time, in the web only,
so each is reported once whatever the number of workers.

prometheus_client picks its storage (memory or the directory) when it is first imported, so our
metrics are created at first use, never at module import: a worker sets the directory first.
A metrics update never breaks the work it measures: each helper logs its own errors.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar
from urllib.parse import parse_qs, urlsplit

import redis
from sqlalchemy import distinct, func, select

from shared import tasknames
from shared.db import session_scope
from shared.lifecycle import AttemptStatus, MessageStatus
from shared.models import Attempt, Message, utcnow
from shared.settings import get_settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
# The Prometheus text format every scraper reads (prometheus_client >= 0.22 defaults to 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}
CircuitState = tuple[str, "str | None"]  # (state, the reason an account refusal opened it)
STUCK_STATUSES = (MessageStatus.QUEUED, AttemptStatus.PENDING, AttemptStatus.SENDING,
                  AttemptStatus.SUBMITTED)
# A provider call is bounded by its read timeout (10 s by default).
CALL_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Reports come within seconds on Viber, minutes to a day for SMS.
REPORT_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


# --- where the counts live -------------------------------------------------------------------

def multiproc_dir() -> Path:
    """The directory every process on this host writes its counts to."""
    configured = os.environ.get(ENV_DIR)
    return Path(configured) if configured else get_settings().data_dir / "metrics"


def use_directory() -> Path:
    """Put the directory in the environment (before prometheus_client is imported, before a
    pool forks) so that this process and its children count in shared files."""
    directory = multiproc_dir()
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_DIR] = str(directory)
    return directory


def clear_directory(directory: Path) -> None:
    """Start a run with no stale counts (only the process starting every other one may)."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.db"):
        path.unlink(missing_ok=True)


# --- the instruments -------------------------------------------------------------------------

@dataclass(frozen=True)
class _Instruments:
    registry: CollectorRegistry  # this process's own values
    sends: Counter
    provider_call: Histogram
    report_latency: Histogram
    fallbacks: Counter
    late_reports: Counter
    callbacks: Counter
    circuit_transitions: Counter


@cache
def _instruments() -> _Instruments:
    """Created at first use: see the module docstring for why not at import."""
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Histogram,
        disable_created_metrics,
    )

    _prepare_storage()
    disable_created_metrics()  # no *_created series: noise for every scraper we know
    reg = CollectorRegistry(auto_describe=True)
    return _Instruments(
        registry=reg,
        sends=Counter("switchboard_sends_total", "Provider send calls by outcome: accepted, "
                      "ambiguous, retryable, rejected or error.",
                      ["channel", "provider", "outcome"], registry=reg),
        provider_call=Histogram("switchboard_provider_call_duration_seconds",
                                "Duration of provider send calls.", ["provider"],
                                buckets=CALL_BUCKETS, registry=reg),
        report_latency=Histogram("switchboard_delivery_report_latency_seconds",
                                 "Time from a provider accepting a message to its delivery "
                                 "report.", ["provider", "channel"], buckets=REPORT_BUCKETS,
                                 registry=reg),
        fallbacks=Counter("switchboard_fallbacks_total", "Route fallbacks to the next channel.",
                          ["from_channel", "to_channel", "reason"], registry=reg),
        late_reports=Counter("switchboard_late_reports_total", "Positive reports for attempts "
                             "that had already ended badly.", ["provider", "channel"],
                             registry=reg),
        callbacks=Counter("switchboard_callbacks_received_total", "Provider callbacks received, "
                          "by result: accepted, duplicate, invalid or unavailable.",
                          ["provider", "result"], registry=reg),
        circuit_transitions=Counter("switchboard_circuit_transitions_total", "Circuit breaker "
                                    "state changes; half_open counts each probe let through.",
                                    ["provider", "state"], registry=reg),
    )


def _prepare_storage() -> None:
    """With ``ENV_DIR`` set, every process's counts go to files there, so a scrape of any one
    process sums the host: the directory must exist, and prometheus_client must store values
    in it even if it was imported before the directory was set."""
    from prometheus_client import values

    if not os.environ.get(ENV_DIR):
        return
    Path(os.environ[ENV_DIR]).mkdir(parents=True, exist_ok=True)
    if values.ValueClass is values.MutexValue:
        # Imported before the directory was set (Celery's command line loads Flower's
        # plugin, which imports prometheus_client): choose the storage again, as its
        # module allows, before the first metric of ours exists.
        values.ValueClass = values.get_value_class()


def _never_raises(func: Callable[P, None]) -> Callable[P, None]:
    """Metrics are never worth a failed send or a lost callback: log and carry on."""
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            func(*args, **kwargs)
        except Exception:  # see the docstring
            log.warning("metrics update %s failed", func.__name__, exc_info=True)
    return wrapper


@_never_raises
def provider_call(provider: str, channel: str, outcome: str, seconds: float) -> None:
    """One provider send call ended (``outcome``: accepted/ambiguous/retryable/rejected/error)."""
    metrics = _instruments()
    metrics.sends.labels(channel, provider, outcome).inc()
    metrics.provider_call.labels(provider).observe(seconds)


@_never_raises
def delivery_report(provider: str, channel: str, submitted_at: datetime | None,
                    delivered_at: datetime) -> None:
    """An attempt was reported delivered for the first time (unknown submit time: skipped)."""
    if submitted_at is not None:
        seconds = max((delivered_at - submitted_at).total_seconds(), 0.0)
        _instruments().report_latency.labels(provider, channel).observe(seconds)


@_never_raises
def fallback(from_channel: str, to_channel: str, reason: str | None) -> None:
    _instruments().fallbacks.labels(from_channel, to_channel, reason or "unknown").inc()


@_never_raises
def late_report(provider: str, channel: str) -> None:
    _instruments().late_reports.labels(provider, channel).inc()


@_never_raises
def callback_received(provider: str, result: str) -> None:
    _instruments().callbacks.labels(provider, result).inc()


@_never_raises
def circuit_transition(provider: str, state: str) -> None:
    _instruments().circuit_transitions.labels(provider, state).inc()


def counts_callbacks(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate ``record_callback(provider, ...)``: count each callback by its outcome kind."""
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        outcome = func(*args, **kwargs)
        provider = kwargs.get("provider", args[0] if args else "unknown")
        callback_received(str(provider), str(getattr(outcome, "kind", "unknown")))
        return outcome
    return wrapper


# --- state computed at scrape time -----------------------------------------------------------

def broker_redis_url(broker_url: str) -> str | None:
    """The redis-py URL of a Redis broker (kombu spells a unix socket ``redis+socket://``);
    None for any other broker (RabbitMQ exports its own queue metrics)."""
    parts = urlsplit(broker_url)
    if parts.scheme in ("redis", "rediss"):
        return broker_url
    if parts.scheme in ("redis+socket", "socket"):
        db = parse_qs(parts.query).get("virtual_host", ["0"])[0].strip("/") or "0"
        return f"unix://{parts.path}?db={int(db)}"
    return None


@cache
def _broker_client() -> redis.Redis | None:
    url = broker_redis_url(get_settings().effective_broker_url)
    if url is None:
        return None
    return quick_redis(url)


def quick_redis(url: str) -> redis.Redis:
    """A client for scrapes and health probes: they must answer fast even when Redis does not,
    so one short try and no retries."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1,
                                retry=Retry(NoBackoff(), 0))


def queue_depths(client: redis.Redis, queues: list[str]) -> dict[str, int]:
    """Messages waiting in each Celery queue: kombu's Redis transport keeps a queue as one list
    per priority step (``send``, ``send\\x06\\x163``, ...); reserved, unacked ones not counted."""
    from kombu.transport.redis import PRIORITY_STEPS

    keys = {q: [q] + [f"{q}\x06\x16{step}" for step in PRIORITY_STEPS if step] for q in queues}
    with client.pipeline(transaction=False) as pipe:
        for names in keys.values():
            for key in names:
                pipe.llen(key)
        lengths = iter(pipe.execute())
    return {q: sum(next(lengths) for _ in names) for q, names in keys.items()}


def stuck_counts(now: datetime, grace_seconds: float) -> dict[str, int]:
    """Messages in a non-final status whose deadline (for pending attempts: their scheduled
    retry; for queued messages: their first attempt) passed more than ``grace_seconds`` ago,
    i.e. that the sweeps should have moved on and did not."""
    limit = now - timedelta(seconds=grace_seconds)
    counts = dict.fromkeys(STUCK_STATUSES, 0)
    with session_scope() as session:
        rows = session.execute(
            select(Attempt.status, func.count(distinct(Attempt.message_id)))
            .where(Attempt.status.in_([AttemptStatus.SENDING, AttemptStatus.SUBMITTED]),
                   Attempt.deadline_at < limit)
            .group_by(Attempt.status)).all()
        counts.update({status: count for status, count in rows})
        counts[AttemptStatus.PENDING] = session.execute(
            select(func.count(distinct(Attempt.message_id))).where(
                Attempt.status == AttemptStatus.PENDING,
                func.coalesce(Attempt.not_before, Attempt.updated_at) < limit)).scalar_one()
        counts[MessageStatus.QUEUED] = session.execute(
            select(func.count()).select_from(Message).where(
                Message.status == MessageStatus.QUEUED, Message.updated_at < limit,
                ~Message.attempts.any())).scalar_one()
    return counts


class StateCollector:
    """Gauges read at scrape time: queue depth, stuck messages, circuit states. A source that
    does not answer leaves its metric out of that scrape instead of failing it."""

    def __init__(self, circuit_states: Callable[[], Mapping[str, CircuitState]] | None = None,
                 broker: Callable[[], redis.Redis | None] = _broker_client) -> None:
        self._circuit_states = circuit_states
        self._broker = broker

    def collect(self) -> Iterator[Metric]:
        for part in (self._queue_depth, self._stuck, self._circuits):
            try:
                yield from part()
            except Exception as exc:  # noqa: BLE001 - one source down must not fail the scrape
                log.warning("metrics: %s left out: %r", part.__name__.lstrip("_"), exc)

    def _queue_depth(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        client = self._broker()
        if client is None:
            return
        family = GaugeMetricFamily("switchboard_queue_depth",
                                   "Messages waiting in each Celery queue.", labels=["queue"])
        queues = sorted(set(tasknames.QUEUE_OF.values()))
        for queue, depth in queue_depths(client, queues).items():
            family.add_metric([queue], depth)
        yield family

    def _stuck(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            "switchboard_messages_stuck", "Messages in a non-final status past their deadline "
            "by more than SWITCHBOARD_METRICS_STUCK_GRACE_SECONDS.", labels=["status"])
        counts = stuck_counts(utcnow(), get_settings().metrics_stuck_grace_seconds)
        for status, count in counts.items():
            family.add_metric([status], count)
        yield family

    def _circuits(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        if self._circuit_states is None:
            return
        family = GaugeMetricFamily("switchboard_circuit_state", "Circuit breaker state per "
                                   "provider: 0 closed, 1 half-open, 2 open; reason: why an "
                                   "account-wide refusal opened it.",
                                   labels=["provider", "reason"])
        for provider, (state, reason) in sorted(self._circuit_states().items()):
            if state in CIRCUIT_VALUES:
                family.add_metric([provider, reason or ""], CIRCUIT_VALUES[state])
        yield family


class _Counts:
    """The counts of every process on this host as one family per metric: the directory's
    files plus, for a process that keeps its own in memory (a development server, tests), its
    own, summed per series, since a scrape may name each family only once."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.multiprocess import MultiProcessCollector

        sources: list[Iterable[Metric]] = []
        if self._directory.is_dir():
            sources.append(MultiProcessCollector(None, path=str(self._directory)).collect())
        if not _file_backed():
            sources.append(_instruments().registry.collect())
        return _summed(metric for source in sources for metric in source)


def _summed(metrics: Iterable[Metric]) -> Iterator[Metric]:
    """Merge same-named families, adding up the samples of identical series (counters and
    histograms only: both are sums)."""
    from prometheus_client.metrics_core import Metric

    families: dict[str, Metric] = {}
    totals: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for metric in metrics:
        families.setdefault(metric.name, Metric(metric.name, metric.documentation, metric.type))
        series = totals.setdefault(metric.name, {})
        for sample in metric.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            series[key] = series.get(key, 0.0) + sample.value
    for name, family in families.items():
        for (sample_name, labels), total in totals[name].items():
            family.add_sample(sample_name, dict(labels), total)
        yield family


def _file_backed() -> bool:
    """Whether this process writes its counts to the directory (else they are in memory)."""
    _instruments()  # imports prometheus_client, which then picks its storage
    from prometheus_client import values

    return values.ValueClass is not values.MutexValue


def exposition(circuit_states: Callable[[], Mapping[str, CircuitState]] | None = None,
               ) -> tuple[bytes, str]:
    """The ``/metrics`` body: every process's counts on this host plus the state gauges."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Counts(multiproc_dir()))  # type: ignore[arg-type]
    registry.register(StateCollector(circuit_states))  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE


def serve_worker_metrics(port: int | None) -> None:
    """Multi-host deployments: serve this worker's pool counts on ``port`` (see the module
    docstring). Called in the worker's main process once the pool runs."""
    if port is None:
        return
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=str(use_directory()))
    try:
        start_http_server(port, registry=registry)
    except OSError as exc:
        log.warning("worker metrics not served on port %s: %s", port, exc)
        return
    log.info("worker metrics on port %s", port)
