"""Prometheus metrics (shared/metrics.py): names, counts, the scrape-time collector, the
multiprocess directory and the ``/metrics`` endpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import requests
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from shared import metrics
from shared.db import session_scope
from shared.models import Attempt, Message, utcnow
from shared.providers import get_provider
from shared.settings import get_settings
from webhooks.app import create_app

ROOT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(body: bytes | str) -> Samples:
    text = body.decode() if isinstance(body, bytes) else body
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scraped: Samples, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def scrape(**kwargs: object) -> Samples:
    body, content_type = metrics.exposition(**kwargs)  # type: ignore[arg-type]
    assert content_type.startswith("text/plain; version=0.0.4")
    return samples(body)


@pytest.fixture()
def data_dir(temp_db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A migrated data dir with no metrics directory and no Redis: the exposition holds this
    process's counts and the stuck-message gauge."""
    monkeypatch.delenv(metrics.ENV_DIR, raising=False)
    monkeypatch.delenv("SWITCHBOARD_REDIS_URL", raising=False)
    monkeypatch.delenv("SWITCHBOARD_BROKER_URL", raising=False)
    get_settings.cache_clear()
    metrics._broker_client.cache_clear()
    yield temp_db
    metrics._broker_client.cache_clear()


# --- names and counts ------------------------------------------------------------------------

def test_names_follow_the_prometheus_conventions(data_dir: Path) -> None:
    metrics.provider_call("messaggio", "viber", "accepted", 0.1)
    body, _ = metrics.exposition()
    families = list(text_string_to_metric_families(body.decode()))
    assert families and all(f.name.startswith("switchboard_") for f in families)
    for family in families:
        assert family.documentation, family.name
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
    names = {f.name for f in families}
    assert {"switchboard_sends", "switchboard_provider_call_duration_seconds",
            "switchboard_delivery_report_latency_seconds", "switchboard_fallbacks",
            "switchboard_late_reports", "switchboard_callbacks_received",
            "switchboard_circuit_transitions", "switchboard_messages_stuck"} <= names
    assert not any(name.endswith("_created") for name in names)


def test_counts_move_with_their_labels(data_dir: Path) -> None:
    before = scrape()
    submitted = utcnow()
    metrics.provider_call("messaggio", "sms", "retryable", 0.3)
    metrics.fallback("viber", "sms", "viber_user_not_found")
    metrics.fallback("viber", "sms", None)
    metrics.late_report("messaggio", "viber")
    metrics.delivery_report("messaggio", "sms", submitted, submitted + timedelta(seconds=4))
    metrics.delivery_report("messaggio", "sms", None, submitted)  # unknown submit: skipped
    metrics.callback_received("messaggio", "duplicate")
    after = scrape()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("switchboard_sends_total", channel="sms", provider="messaggio",
                 outcome="retryable") == 1
    assert moved("switchboard_provider_call_duration_seconds_count", provider="messaggio") == 1
    assert moved("switchboard_fallbacks_total", from_channel="viber", to_channel="sms",
                 reason="viber_user_not_found") == 1
    assert moved("switchboard_fallbacks_total", from_channel="viber", to_channel="sms",
                 reason="unknown") == 1
    assert moved("switchboard_late_reports_total", provider="messaggio", channel="viber") == 1
    assert moved("switchboard_delivery_report_latency_seconds_count", provider="messaggio",
                 channel="sms") == 1
    assert moved("switchboard_delivery_report_latency_seconds_sum", provider="messaggio",
                 channel="sms") == pytest.approx(4)
    assert moved("switchboard_delivery_report_latency_seconds_bucket", provider="messaggio",
                 channel="sms", le="5.0") == 1
    assert moved("switchboard_callbacks_received_total", provider="messaggio",
                 result="duplicate") == 1


def test_a_failing_metric_never_breaks_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise OSError("disk full")

    monkeypatch.setattr(metrics, "_instruments", broken)
    metrics.provider_call("messaggio", "viber", "accepted", 0.1)  # no exception
    metrics.fallback("viber", "sms", "deadline_passed")


# --- the multiprocess directory ----------------------------------------------------------------

def _count_in_subprocess(directory: Path, provider: str) -> None:
    """Another process (a pool worker) counting in the shared directory."""
    env = {**os.environ, metrics.ENV_DIR: str(directory), "PYTHONPATH": str(ROOT)}
    code = f"from shared import metrics; metrics.provider_call({provider!r}, 'sms', 'accepted', 1)"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)


def test_exposition_adds_up_the_shared_directory(data_dir: Path) -> None:
    provider = f"p-{uuid.uuid4().hex[:6]}"
    directory = data_dir / "metrics"  # the default: no PROMETHEUS_MULTIPROC_DIR set
    for _ in range(2):
        _count_in_subprocess(directory, provider)
    assert list(directory.glob("counter_*.db"))
    metrics.provider_call(provider, "sms", "accepted", 1)  # this (in-memory) process too
    body, _ = metrics.exposition()
    types = [line for line in body.decode().splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types)), "a family named twice: Prometheus rejects the scrape"
    scraped = samples(body)
    assert value(scraped, "switchboard_sends_total", channel="sms", provider=provider,
                 outcome="accepted") == 3
    assert value(scraped, "switchboard_provider_call_duration_seconds_count",
                 provider=provider) == 3
    assert value(scraped, "switchboard_provider_call_duration_seconds_bucket",
                 provider=provider, le="1.0") == 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_worker_exporter_serves_the_directory(data_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    directory, provider = data_dir / "exported", f"p-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv(metrics.ENV_DIR, str(directory))
    _count_in_subprocess(directory, provider)
    metrics.serve_worker_metrics(None)  # no port: nothing served, nothing raised
    port = _free_port()
    metrics.serve_worker_metrics(port)
    scraped = samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
    assert value(scraped, "switchboard_sends_total", channel="sms", provider=provider,
                 outcome="accepted") == 1


def test_clear_directory_drops_stale_counts(tmp_path: Path) -> None:
    (tmp_path / "counter_1.db").write_bytes(b"x")
    (tmp_path / "keep.txt").write_text("x")
    metrics.clear_directory(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


# --- gauges read at scrape time ----------------------------------------------------------------

@pytest.mark.parametrize(("broker", "expected"), [
    ("redis://redis:6379/0", "redis://redis:6379/0"),
    ("redis+socket:///srv/var/redis.sock?virtual_host=1", "unix:///srv/var/redis.sock?db=1"),
    ("redis+socket:///tmp/x/redis.sock", "unix:///tmp/x/redis.sock?db=0"),
    ("amqp://guest@rabbit//", None),
])
def test_broker_redis_url(broker: str, expected: str | None) -> None:
    assert metrics.broker_redis_url(broker) == expected


def test_queue_depth_counts_every_priority_list(redis_url: str) -> None:
    client, queue = redis.Redis.from_url(redis_url), f"q-{uuid.uuid4().hex[:6]}"
    client.rpush(queue, "a", "b")
    client.rpush(f"{queue}\x06\x163", "c")
    try:
        assert metrics.queue_depths(client, [queue, queue + "-empty"]) == {
            queue: 3, queue + "-empty": 0}
    finally:
        client.delete(queue, f"{queue}\x06\x163")


def _message(session: object, status: str, age: timedelta) -> Message:
    message = Message(id=str(uuid.uuid4()), status=status, recipient="+32470000000",
                      route=["viber", "sms"], request={}, updated_at=utcnow() - age)
    session.add(message)  # type: ignore[attr-defined]
    return message


def _attempt(session: object, message: Message, status: str, **times: object) -> None:
    session.add(Attempt(id=str(uuid.uuid4()), message_id=message.id, hop=0,  # type: ignore[attr-defined]
                        channel="viber", provider="messaggio", status=status, **times))


def test_stuck_messages_are_counted_by_status(temp_db: Path) -> None:
    now, long_ago, lately = utcnow(), timedelta(hours=1), timedelta(seconds=10)
    with session_scope() as session:
        _message(session, "queued", long_ago)  # never dispatched
        _message(session, "queued", lately)  # just queued: not stuck yet
        old = _message(session, "submitted", long_ago)
        _attempt(session, old, "submitted", deadline_at=now - long_ago)
        _attempt(session, _message(session, "submitted", lately), "submitted",
                 deadline_at=now - lately)  # within the grace period
        _attempt(session, _message(session, "queued", long_ago), "sending",
                 deadline_at=now - long_ago)
        _attempt(session, _message(session, "queued", long_ago), "pending",
                 not_before=now - long_ago)
        _attempt(session, _message(session, "queued", long_ago), "pending",
                 not_before=now + lately)  # held behind an open circuit: waiting, not stuck
    assert metrics.stuck_counts(now, grace_seconds=300) == {
        "queued": 1, "pending": 1, "sending": 1, "submitted": 1}


def test_state_collector(temp_db: Path, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    collector = metrics.StateCollector(
        circuit_states=lambda: {"messaggio": ("open", "balance_exhausted"),
                                "rogerthat": ("closed", None), "other": ("half_open", None)},
        broker=lambda: client)
    scraped = samples("".join(_render(collector)))
    assert value(scraped, "switchboard_circuit_state", provider="messaggio",
                 reason="balance_exhausted") == 2
    assert value(scraped, "switchboard_circuit_state", provider="other", reason="") == 1
    assert ("switchboard_circuit_state",
            frozenset({("provider", "rogerthat"), ("reason", "")})) in scraped
    for queue in ("send", "events", "sweep", "notify"):
        assert ("switchboard_queue_depth", frozenset({("queue", queue)})) in scraped
    for status in metrics.STUCK_STATUSES:
        assert value(scraped, "switchboard_messages_stuck", status=status) == 0


def test_state_collector_leaves_out_what_it_cannot_read(temp_db: Path) -> None:
    def down() -> dict[str, str]:
        raise redis.ConnectionError("no redis")

    def no_broker() -> redis.Redis:
        raise redis.ConnectionError("no broker")

    scraped = samples("".join(_render(metrics.StateCollector(down, broker=no_broker))))
    assert {name for name, _ in scraped} == {"switchboard_messages_stuck"}


def _render(collector: metrics.StateCollector) -> Iterator[str]:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    yield generate_latest(registry).decode()


# --- the endpoint ------------------------------------------------------------------------------

@pytest.fixture()
def client(published: list, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    monkeypatch.setenv("SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN", "tok")
    monkeypatch.delenv("SWITCHBOARD_MESSAGGIO_CALLBACK_IPS", raising=False)
    monkeypatch.delenv(metrics.ENV_DIR, raising=False)
    get_settings.cache_clear()
    get_provider.cache_clear()
    metrics._broker_client.cache_clear()
    yield create_app().test_client()
    get_provider.cache_clear()
    metrics._broker_client.cache_clear()


def test_metrics_endpoint_answers_the_text_format(client: FlaskClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type == metrics.CONTENT_TYPE
    scraped = samples(response.data)
    assert value(scraped, "switchboard_messages_stuck", status="queued") == 0


def test_callbacks_are_counted_by_provider_and_result(client: FlaskClient) -> None:
    report = {"msg_id": str(uuid.uuid4()), "p_transaction_id": str(uuid.uuid4()),
              "type": "delivery", "status": "delivered"}
    before = samples(client.get("/metrics").data)
    assert client.post("/callbacks/messaggio/tok", data=report).status_code == 200
    assert client.post("/callbacks/messaggio/tok", data=report).status_code == 200
    assert client.post("/callbacks/messaggio/tok", data={"type": "?"}).status_code == 400
    after = samples(client.get("/metrics").data)
    for result in ("accepted", "duplicate", "invalid"):
        labels = {"provider": "messaggio", "result": result}
        assert (value(after, "switchboard_callbacks_received_total", **labels)
                - value(before, "switchboard_callbacks_received_total", **labels)) == 1


def test_healthz_shows_each_provider_circuit(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["database"] == "ok"
    # No Redis in this test: the web still answers, and says it does not know.
    assert body["providers"]["messaggio"] == {"circuit": "unknown"}
