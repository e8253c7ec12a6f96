"""End to end, the bulk path: ``POST /v1/campaigns`` → batches of phones in one gateway request
each → per-phone msg_ids, reports, statuses and fallback, through the real stack.

The stack sends at most 20 phones per request (``SWITCHBOARD_BULK_BATCH_SIZE`` in conftest).
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
import requests

from tests.integration.conftest import API_KEY, Stack, wait_for

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {API_KEY}"}
BATCH = 20


def _campaign(stack: Stack, phones: list[str]) -> str:
    response = requests.post(f"{stack.api_url}/v1/campaigns", headers=AUTH, timeout=30, json={
        "route": ["viber", "sms"], "text": "Spring sale", "sms_text": "Spring sale (SMS)",
        "idempotency_key": f"bulk-{uuid.uuid4()}",
        "recipients": [{"phone": p, "metadata": {"n": i}} for i, p in enumerate(phones)]})
    assert response.status_code == 202, response.text
    assert response.json()["messages"] == len(phones)
    return response.json()["id"]


def _view(stack: Stack, campaign_id: str) -> dict[str, Any]:
    response = requests.get(f"{stack.api_url}/v1/campaigns/{campaign_id}", headers=AUTH,
                            timeout=10)
    response.raise_for_status()
    return response.json()


def _wait_counts(stack: Stack, campaign_id: str, counts: dict[str, int],
                 timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: (v := _view(stack, campaign_id))["counts"] == counts and v,
                    timeout, 0.2, f"campaign counts {counts}")


def _sent(stack: Stack, phones: list[str], channel: str) -> list[dict[str, Any]]:
    digits = {p.lstrip("+") for p in phones}
    return [m for m in stack.sim_messages() if m["phone"] in digits and m["channel"] == channel]


def test_a_campaign_goes_out_in_batched_requests_each_phone_its_own_message(
        stack: Stack) -> None:
    phones = [f"+32470550{n:03d}" for n in range(10, 59)] + ["+32470550001"]  # …0001: no Viber
    campaign_id = _campaign(stack, phones)
    view = _wait_counts(stack, campaign_id, {"seen": 49, "delivered": 1})
    assert view["attempts"] == {"viber": {"seen": 49, "undelivered": 1},
                                "sms": {"delivered": 1}}

    viber = _sent(stack, phones, "viber")
    assert sorted(m["phone"] for m in viber) == sorted(p.lstrip("+") for p in phones)
    assert len({m["p_transaction_id"] for m in viber}) == math.ceil(len(phones) / BATCH)
    sms = _sent(stack, phones, "sms")
    assert [m["phone"] for m in sms] == ["32470550001"]  # the fallback, for that one only

    msg_ids = {m["phone"]: m["msg_id"] for m in viber}
    for phone in (phones[0], phones[-1]):
        message = _message_of(stack, campaign_id, phone)
        first = message["attempts"][0]
        assert first["provider_message_id"] == msg_ids[phone.lstrip("+")]
        reports = [e for e in message["events"] if e["type"] == "report"]
        assert first["id"] in {e["attempt_id"] for e in reports}  # matched by its own msg_id
    fell_back = _message_of(stack, campaign_id, phones[-1])
    assert [(a["channel"], a["status"]) for a in fell_back["attempts"]] == [
        ("viber", "undelivered"), ("sms", "delivered")]
    assert [e["type"] for e in fell_back["events"]].count("fallback") == 1


def test_a_temporary_gateway_error_retries_the_batch_without_duplicates(stack: Stack) -> None:
    phones = [f"+32470551{n:03d}" for n in range(10, 15)]
    before = requests.get(f"{stack.simulator.url}_sim/stats", timeout=5).json()
    stack.sim_config(fail_rate=1.0, fail_kinds=["temporary"])
    try:
        campaign_id = _campaign(stack, phones)
        wait_for(lambda: requests.get(f"{stack.simulator.url}_sim/stats", timeout=5).json()
                 ["injected"]["temporary"] > before["injected"]["temporary"], 30, 0.05,
                 "the injected -4")
    finally:
        stack.sim_config(fail_rate=0.0)
    _wait_counts(stack, campaign_id, {"seen": len(phones)})
    assert sorted(m["phone"] for m in _sent(stack, phones, "viber")) == sorted(
        p.lstrip("+") for p in phones)
    message = _message_of(stack, campaign_id, phones[0])
    assert "retry_scheduled" in [e["type"] for e in message["events"]]


def _message_of(stack: Stack, campaign_id: str, phone: str) -> dict[str, Any]:
    """The message of ``phone`` in the campaign, found through the database."""
    from sqlalchemy import select

    from shared.db import session_scope
    from shared.models import Message

    with session_scope() as session:
        message_id = session.scalars(select(Message.id).where(
            Message.campaign_id == campaign_id, Message.recipient == phone)).one()
    view = stack.get_message(message_id)
    assert view is not None
    return view
