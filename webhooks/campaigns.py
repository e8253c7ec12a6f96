"""The producer API for campaigns: ``POST /v1/campaigns`` and ``GET /v1/campaigns/<id>``.

One request carries the content once and up to 10,000 recipients; every row is inserted in
one transaction (``shared.campaigns``) and the batches are published after the commit. A
campaign whose batches could not be published is still durable: the recovery sweep sends
its pending attempts one by one.
"""

from __future__ import annotations

import logging

from flask import Blueprint, g, jsonify

from shared import campaigns, tasknames
from shared.client import send_task
from shared.db import session_scope
from shared.models import Campaign
from shared.settings import get_settings
from webhooks.api import BadRequest, _parse
from webhooks.auth import require_api_key

log = logging.getLogger(__name__)
campaigns_api = Blueprint("campaigns", __name__, url_prefix="/v1")


@campaigns_api.errorhandler(BadRequest)
def _bad_request(exc: BadRequest):  # type: ignore[no-untyped-def]
    return jsonify(exc.body), exc.status


@campaigns_api.post("/campaigns")
@require_api_key
def create():  # type: ignore[no-untyped-def]
    req = _parse(campaigns.CampaignRequest)
    campaign_id = campaigns.new_campaign_id(req.idempotency_key, g.app_id)
    with session_scope() as session:
        created = campaigns.create_campaign(session, campaign_id, req, g.app_id)
        total = created.campaign.total
    if not created.created:
        return jsonify(id=campaign_id, messages=total, idempotent_replay=True), 200
    batches = _publish(created.attempt_ids or [])
    return jsonify(id=campaign_id, messages=total, status="queued", batches=batches), 202


def _publish(attempt_ids: list[str]) -> int:
    """After commit; a broker failure leaves the rows for the recovery sweep."""
    batches = list(campaigns.chunks(attempt_ids, get_settings().bulk_batch_size))
    try:
        for batch in batches:
            send_task(tasknames.SEND_BULK, batch)
    except Exception:
        log.exception("could not publish a campaign's batches; the recovery sweep will")
    return len(batches)


@campaigns_api.get("/campaigns/<campaign_id>")
@require_api_key
def show(campaign_id: str):  # type: ignore[no-untyped-def]
    with session_scope() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.app_id != g.app_id:
            return jsonify(error="not_found", message=f"no campaign {campaign_id}"), 404
        return jsonify(campaigns.campaign_view(session, campaign))
