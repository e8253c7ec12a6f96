"""Status webhooks to a real local producer endpoint: signed (Switchboard-Signature and Standard
Webhooks, one webhook-id per event across its retries), ordered, retried, stopped."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import requests
from standardwebhooks import Webhook

from shared.client import verify_signature
from tests.integration.conftest import API_KEY, SIGNING_SECRET, Stack, wait_for
from tests.integration.producer import Producer

pytestmark = pytest.mark.integration


@pytest.fixture()
def producer_factory():
    made: list[Producer] = []
    yield lambda script=(): made.append(Producer(list(script))) or made[-1]
    for producer in made:
        producer.server.shutdown()


def test_webhooks_are_signed_ordered_and_retried_until_accepted(stack: Stack,
                                                                 producer_factory) -> None:
    producer = producer_factory([500, 503])  # the first two calls fail, then it recovers
    response = stack.post_message(to={"phone": "+32470120001"}, route=["viber", "sms"],
                                  text="hi", callback_url=producer.url)
    message_id = response.json()["id"]
    stack.wait_status(message_id, {"delivered"})

    def all_delivered() -> bool:
        view = stack.get_message(message_id)
        return all(d["status"] == "delivered" for d in view["deliveries"]) and any(
            e["type"] == "status" and e["data"]["status"] == "delivered"
            for e in producer.accepted())
    wait_for(all_delivered, 30, message="every webhook to be accepted")
    for call in producer.calls:
        headers = {k.lower(): v for k, v in call["headers"].items()}
        assert verify_signature(SIGNING_SECRET, call["body"], headers["switchboard-timestamp"],
                                headers["switchboard-signature"])
        # Standard Webhooks: the reference library accepts it with the secret as configured,
        # and the webhook-id is the event's, on the retried sends too
        event_id = Webhook(SIGNING_SECRET).verify(call["body"], headers)["id"]
        assert headers["webhook-id"] == f"evt_{event_id}"
    sends = Counter(json.loads(call["body"])["id"] for call in producer.calls)
    assert max(sends.values()) >= 2  # some event was retried under its one id
    events = sorted(producer.accepted(), key=lambda e: e["seq"])
    types = [(e["type"], e["data"].get("status")) for e in events]
    assert types[0] == ("queued", None)
    assert ("fallback", None) in types and types[-1] == ("status", "delivered")
    assert len({e["id"] for e in events}) == len(events)  # each accepted exactly once
    assert [c["code"] for c in producer.calls][:2] == [500, 503]
    view = stack.get_message(message_id)
    assert all(d["status"] == "delivered" for d in view["deliveries"])
    assert max(d["attempts"] for d in view["deliveries"]) >= 2


def test_a_4xx_stops_retries(stack: Stack, producer_factory) -> None:
    producer = producer_factory([400] * 50)
    response = stack.post_message(to={"phone": "+32470120000"}, route=["viber"], text="hi",
                                  callback_url=producer.url)
    message_id = response.json()["id"]
    stack.wait_status(message_id, {"seen"})
    view = wait_for(lambda: (v := stack.get_message(message_id)) and v["deliveries"] and all(
        d["status"] == "failed" for d in v["deliveries"]) and v, 30,
        message="every delivery to be given up")
    assert all(d["attempts"] == 1 and d["last_status_code"] == 400 for d in view["deliveries"])


def test_events_can_be_polled_in_order_with_a_cursor(stack: Stack) -> None:
    response = stack.post_message(to={"phone": "+32470120000"}, route=["viber"], text="poll")
    message_id = response.json()["id"]
    stack.wait_status(message_id, {"seen"})
    headers = {"Authorization": f"Bearer {API_KEY}"}

    def read_feed() -> list[dict]:
        seen: list[dict] = []
        cursor = 0
        while True:
            page = requests.get(f"{stack.api_url}/v1/events",
                                params={"after": cursor, "limit": 5}, headers=headers,
                                timeout=5).json()
            if not page["events"]:
                return seen
            seen += page["events"]
            cursor = page["next"]

    def feed_has_seen() -> list[dict] | None:
        seen = read_feed()
        return seen if any(e["message_id"] == message_id and e["data"].get("status") == "seen"
                           for e in seen) else None
    # Events join the feed within about a second of commit (the numbering sweep).
    seen = wait_for(feed_has_seen, 20, 0.2, "the 'seen' event in the feed")
    ids = [e["id"] for e in seen]
    assert len(ids) == len(set(ids))
    mine = [e for e in seen if e["message_id"] == message_id]
    assert [e["seq"] for e in mine] == sorted(e["seq"] for e in mine)
    assert mine[0]["type"] == "queued"
    assert mine[-1]["type"] == "status" and mine[-1]["data"]["status"] == "seen"
