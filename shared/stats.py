"""The numbers behind the console's dashboard and ``GET /v1/stats/overview``.

One function, ``overview``, reads the last ``hours`` of messages, attempts and webhook
deliveries of one app (or of every app for the operator's bootstrap keys) and answers plain
JSON-able data: messages by status and by channel, the fallback rate of each route, the
delivery-report latency percentiles of each provider and the webhook deliveries that fail.
Counting happens in SQL (GROUP BY); only the latency percentiles need the individual
durations, read up to ``LATENCY_SAMPLE`` of them per window.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Text, case, cast, func, select
from sqlalchemy.orm import Session

from shared.models import Attempt, Delivery, Event, Message, utcnow

MAX_HOURS = 24 * 30  # a month: beyond that the dashboard is a report, not an overview
LATENCY_SAMPLE = 100_000
PERCENTILES = (50, 90, 99)
FAILING_URLS = 10


class HoursError(ValueError):
    """``hours`` is not a whole number in range; the message says what is allowed."""


def parse_hours(raw: str | None, default: int = 24) -> int:
    """The window in hours: a whole number from 1 to ``MAX_HOURS`` (default 24)."""
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_HOURS:
        raise HoursError(f"must be a whole number of hours from 1 to {MAX_HOURS} "
                         f"(got {raw[:20]!r})")
    return int(text)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (the smallest value with ``pct`` % of values at or below it):
    always a value that occurred, so "p99 = 4.2 s" means some report took 4.2 s."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def overview(session: Session, app_id: str | None, hours: int = 24,
             now: datetime | None = None) -> dict[str, Any]:
    """The dashboard's data for the ``hours`` before ``now`` (naive UTC, like every row);
    ``app_id`` None: every app (the console's bootstrap keys)."""
    until = now or utcnow()
    since = until - timedelta(hours=hours)
    return {"hours": hours, "since": _iso(since), "until": _iso(until), "app_id": app_id,
            "messages": _messages(session, app_id, since),
            "fallback": _fallback(session, app_id, since),
            "latency": _latency(session, app_id, since),
            "webhooks": _webhooks(session, app_id, since)}


def _scoped(query: Any, app_id: str | None) -> Any:
    return query if app_id is None else query.where(Message.app_id == app_id)


def _messages(session: Session, app_id: str | None, since: datetime) -> dict[str, Any]:
    """Messages created in the window by their status now; attempts by channel and status
    (a message that fell back from Viber to SMS counts once on each channel)."""
    by_status = dict(session.execute(_scoped(
        select(Message.status, func.count()).where(Message.created_at >= since)
        .group_by(Message.status), app_id)).all())
    by_channel: dict[str, dict[str, int]] = defaultdict(dict)
    rows = session.execute(_scoped(
        select(Attempt.channel, Attempt.status, func.count()).join(Message)
        .where(Message.created_at >= since).group_by(Attempt.channel, Attempt.status), app_id))
    for channel, status, count in rows:
        by_channel[channel][status] = count
    return {"total": sum(by_status.values()), "by_status": by_status,
            "by_channel": dict(by_channel)}


def _fallback(session: Session, app_id: str | None, since: datetime) -> list[dict[str, Any]]:
    """Per route (``viber>sms``): messages, how many went past their first channel, rate.
    The route is grouped as its JSON text, which every database can compare."""
    rows = session.execute(_scoped(
        select(cast(Message.route, Text), func.count(),
               func.sum(case((Message.hop > 0, 1), else_=0)))
        .where(Message.created_at >= since).group_by(cast(Message.route, Text)), app_id))
    merged: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for route_json, count, fell_back in rows:
        name = ">".join(json.loads(route_json)) if route_json else "?"
        merged[name][0] += count
        merged[name][1] += int(fell_back or 0)
    return [{"route": route, "messages": total, "fell_back": fell,
             "rate": round(fell / total, 4) if total else 0.0}
            for route, (total, fell) in sorted(merged.items())]


def _latency(session: Session, app_id: str | None, since: datetime) -> list[dict[str, Any]]:
    """Seconds from our submission to the provider's delivery report, per provider."""
    rows = session.execute(_scoped(
        select(Attempt.provider, Attempt.submitted_at, Attempt.delivered_at).join(Message)
        .where(Attempt.delivered_at >= since, Attempt.submitted_at.is_not(None))
        .order_by(Attempt.delivered_at.desc()).limit(LATENCY_SAMPLE), app_id))
    durations: dict[str, list[float]] = defaultdict(list)
    for provider, submitted, delivered in rows:
        durations[provider].append(max(0.0, (delivered - submitted).total_seconds()))
    return [{"provider": provider, "reports": len(values),
             **{f"p{p}": _round(percentile(values, p)) for p in PERCENTILES}}
            for provider, values in sorted(durations.items())]


def _webhooks(session: Session, app_id: str | None, since: datetime) -> dict[str, Any]:
    """Deliveries to producers' URLs made in the window: delivered, pending, retrying (a
    failed try, another scheduled) and failed (given up); the URLs failing most."""
    base = select(Delivery).join(Event, Delivery.event_id == Event.id).where(
        Delivery.created_at >= since)
    if app_id is not None:
        base = base.where(Event.app_id == app_id)
    sub = base.subquery()
    counts = {"delivered": 0, "pending": 0, "retrying": 0, "failed": 0}
    for status, tried, count in session.execute(
            select(sub.c.status, sub.c.attempts > 0, func.count())
            .group_by(sub.c.status, sub.c.attempts > 0)):
        key = "retrying" if status == "pending" and tried else status
        counts[key] = counts.get(key, 0) + count
    failing: dict[str, dict[str, int]] = defaultdict(lambda: {"failed": 0, "retrying": 0})
    for url, status, count in session.execute(
            select(sub.c.url, sub.c.status, func.count())
            .where((sub.c.status == "failed") | ((sub.c.status == "pending")
                                                  & (sub.c.attempts > 0)))
            .group_by(sub.c.url, sub.c.status)):
        failing[_shown_url(url)]["failed" if status == "failed" else "retrying"] += count
    top = sorted(failing.items(), key=lambda kv: -(kv[1]["failed"] + kv[1]["retrying"]))
    return {**counts, "failing_urls": [{"url": url, **c} for url, c in top[:FAILING_URLS]]}


def _shown_url(url: str) -> str:
    """Scheme, host and path only: a query string may carry the producer's token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"[:200]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds") + "Z"
