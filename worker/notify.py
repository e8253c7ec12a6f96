"""Status webhooks to producers: signed POSTs, retried on a published schedule up to 24 h.

Deliveries are rows (``deliveries``), swept every second and sent on their own ``notify``
queue, so a slow or failing producer endpoint never holds up sending. A 2xx ends a delivery;
a 4xx other than 408/429 stops it at once (the producer refused it); anything else retries.
"""

from __future__ import annotations

import json
import random
import time
from datetime import timedelta

import requests
from sqlalchemy import select, update

from shared import egress, tasknames, uow
from shared.lifecycle import DeliveryStatus
from shared.apps import signing_secrets
from shared.db import session_scope
from shared.messages import event_body
from shared.models import Delivery, Event, utcnow
from shared.settings import get_settings
from shared.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, standard_headers, webhook_id

# Seconds to wait after the 1st, 2nd, ... failed try; about 24 h in all, then ``failed``.
RETRY_SCHEDULE = (10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 28800)
LEASE_SECONDS = 60
REFUSED = "egress refused: "  # a delivery's last_error when the policy refused its URL


def next_delay(failures: int) -> float | None:
    """The wait after ``failures`` failed tries, with ±10 % jitter; None when we give up."""
    if failures > len(RETRY_SCHEDULE):
        return None
    base = RETRY_SCHEDULE[failures - 1] * get_settings().notify_retry_scale
    return base * random.uniform(0.9, 1.1)


def deliver(delivery_id: int) -> str | None:
    """Try one delivery once; returns its new status."""
    with session_scope() as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None or delivery.status != DeliveryStatus.PENDING:
            return None
        event = session.get(Event, delivery.event_id)
        assert event is not None  # deliveries reference their event
        body = json.dumps(event_body(event)).encode()
        url, failures = delivery.url, delivery.attempts
        # The event's app, not the message's: events about no message (a flow result, a
        # friendship change) have no message to ask.
        signing, msg_id = signing_secrets(session, event.app_id), webhook_id(event.id)
    if not signing:  # never send an unsigned webhook: say why in the timeline instead
        return _record(delivery_id, failures + 1, None,
                       "no signing secret: set SWITCHBOARD_CALLBACK_SIGNING_SECRET", final=True)
    code, error = _post(url, body, webhook_headers(body, signing, msg_id))
    # A refused target stays refused: fail now rather than retry for 24 h.
    return _record(delivery_id, failures + 1, code, error,
                   final=bool(error and error.startswith(REFUSED)))


def webhook_headers(body: bytes, signing: list[str], msg_id: str) -> dict[str, str]:
    """The headers of one send: ``Switchboard-Signature`` with the current secret (as
    producers verify it today) and the Standard Webhooks three, signed with every secret in
    force, all over one timestamp taken now (a retry is signed afresh, under the same id)."""
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp,
               "User-Agent": "Switchboard-Webhooks/1"}
    headers[SIGNATURE_HEADER] = sign(signing[0], timestamp, body)
    headers.update(standard_headers(signing, msg_id, timestamp, body))
    return headers


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
    """One POST through the egress policy (``shared.egress``): no redirects, the answer
    read up to ``BODY_CAP`` bytes and at most ``EXCERPT_LIMIT`` characters of a failure's
    body kept for the timeline, so a webhook cannot be used to read an internal service."""
    try:
        with egress.session() as http, http.post(
                url, data=body, headers=headers, timeout=(3, 10), allow_redirects=False,
                stream=True) as response:
            excerpt = b"" if response.ok else egress.read_capped(response)
    except requests.RequestException as exc:
        reason = egress.refused_reason(exc)
        return None, f"{REFUSED}{reason}" if reason else type(exc).__name__
    text = excerpt.decode("utf-8", "replace")[:egress.EXCERPT_LIMIT]
    return response.status_code, None if response.ok else text


def _record(delivery_id: int, tries: int, code: int | None, error: str | None,
            final: bool = False) -> str:
    now = utcnow()
    values: dict = {"attempts": tries, "last_status_code": code, "last_error": error}
    if final:
        values.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    elif code is not None and 200 <= code < 300:
        values.update(status=DeliveryStatus.DELIVERED, delivered_at=now, next_attempt_at=None)
    elif code is not None and 400 <= code < 500 and code not in (408, 429) or (delay := next_delay(tries)) is None:
        values.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    else:
        values.update(next_attempt_at=now + timedelta(seconds=delay))
    with session_scope() as session:
        session.execute(update(Delivery).where(Delivery.id == delivery_id,
                                               Delivery.status == DeliveryStatus.PENDING).values(**values))
    return values.get("status", DeliveryStatus.PENDING)


def sweep_deliveries(batch: int = 500) -> int:
    """Hand every due delivery to the notify queue, leasing it so it is sent once at a time."""
    now = utcnow()
    with session_scope() as session:
        due = session.execute(select(Delivery.id, Delivery.next_attempt_at).where(
            Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now)
            .order_by(Delivery.next_attempt_at).limit(batch)).all()
        leased = [row.id for row in due if session.execute(
            update(Delivery).where(Delivery.id == row.id,
                                   Delivery.next_attempt_at == row.next_attempt_at)
            .values(next_attempt_at=now + timedelta(seconds=LEASE_SECONDS))).rowcount == 1]
    uow.publish(uow.FollowUps(tasks=[uow.Task(tasknames.NOTIFY, (delivery_id,))
                                     for delivery_id in leased]))
    return len(leased)
