"""The producer API for campaigns: ``POST /v1/campaigns`` and ``GET /v1/campaigns/<id>``.

One request carries the content once and up to 10,000 recipients; every row is inserted in
one unit of work (``shared.campaigns.insert_campaign``) with the batches' tasks, which are
published after its commit. A campaign whose batches could not be published is still
durable: the recovery sweep sends its pending attempts one by one.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify
from sqlalchemy.exc import IntegrityError

from shared import campaigns, cancellation, tasknames
from shared.db import session_scope
from shared.messages import IdempotencyConflict
from shared.models import Campaign
from shared.settings import get_settings
from shared.templates import TemplateError
from webhooks.api import BadRequest, _parse
from webhooks.auth import require_api_key
from webhooks.publishing import recoverable_unit_of_work

campaigns_api = Blueprint("campaigns", __name__, url_prefix="/v1")


@campaigns_api.errorhandler(BadRequest)
def _bad_request(exc: BadRequest):  # type: ignore[no-untyped-def]
    return jsonify(exc.body), exc.status


@campaigns_api.errorhandler(TemplateError)
def _template_error(exc: TemplateError):  # type: ignore[no-untyped-def]
    """A recipient's template cannot be rendered (``recipients.<n>.template.data.<name>``):
    nothing of the campaign is stored."""
    return jsonify(exc.body()), 422


@campaigns_api.errorhandler(IdempotencyConflict)
def _idempotency_conflict(exc: IdempotencyConflict):  # type: ignore[no-untyped-def]
    return jsonify(exc.body()), 409


@campaigns_api.post("/campaigns")
@require_api_key
def create():  # type: ignore[no-untyped-def]
    req = _parse(campaigns.CampaignRequest)
    campaign_id = campaigns.new_campaign_id(req.idempotency_key, g.app_id)
    total, batches = _create(campaign_id, req)
    if batches is None:
        return jsonify(id=campaign_id, messages=total, idempotent_replay=True), 200
    return jsonify(id=campaign_id, messages=total, status="queued", batches=batches), 202


def _create(campaign_id: str, req: campaigns.CampaignRequest) -> tuple[int, int | None]:
    """Insert the campaign and register one ``send_bulk`` per batch in one unit of work, so
    the batches leave only once the rows are durable (a broker failure then leaves them to
    the recovery sweep); returns (messages, batches). ``batches`` is None when the campaign
    existed already (a retry, or a concurrent identical request that won the race): nothing
    is inserted or published, as in ``shared.campaigns.create_campaign``. The same key with
    another body raises ``IdempotencyConflict`` (409)."""
    try:
        with recoverable_unit_of_work() as work:
            created = campaigns.insert_campaign(work.session, campaign_id, req, g.app_id)
            if created.attempt_ids is None:
                return created.campaign.total, None
            batches = list(campaigns.chunks(created.attempt_ids,
                                            get_settings().bulk_batch_size))
            for batch in batches:
                work.task(tasknames.SEND_BULK, batch)
            return created.campaign.total, len(batches)
    except IntegrityError:  # rolled back, nothing published: the other request's rows stand
        with session_scope() as session:
            raced = session.get(Campaign, campaign_id)
            if raced is None:
                raise
            campaigns.check_campaign_replay(raced, req)
            return raced.total, None


@campaigns_api.delete("/campaigns/<campaign_id>")
@require_api_key
def cancel(campaign_id: str):  # type: ignore[no-untyped-def]
    """Cancel each of the campaign's messages not yet sent; those sent go on."""
    with session_scope() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.app_id != g.app_id:
            return jsonify(error="not_found", message=f"no campaign {campaign_id}"), 404
        done = cancellation.cancel_campaign(session, campaign_id)
        session.commit()
    return jsonify(id=campaign_id, cancelled=len(done.cancelled),
                   not_cancelled=done.already_sent), 200


@campaigns_api.get("/campaigns/<campaign_id>")
@require_api_key
def show(campaign_id: str):  # type: ignore[no-untyped-def]
    with session_scope() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.app_id != g.app_id:
            return jsonify(error="not_found", message=f"no campaign {campaign_id}"), 404
        return jsonify(campaigns.campaign_view(session, campaign))
