"""Send-queue tasks of the bulk (campaign) path: accept a campaign, send a batch of phones.

Both are safe to run twice: the campaign insert dedupes on its id, and a batch starts with a
compare-and-set on its attempts (see ``worker.bulk``).
"""

from __future__ import annotations

import logging

from shared import campaigns, tasknames, uow
from shared.db import session_scope
from shared.settings import get_settings
from worker import bulk
from shared.messages import IdempotencyConflict
from worker.app import app

log = logging.getLogger(__name__)


def publish_batches(attempt_ids: list[str]) -> int:
    """One ``send_bulk`` task per ``bulk_batch_size`` attempts; returns how many."""
    size = get_settings().bulk_batch_size
    batches = list(campaigns.chunks(attempt_ids, size))
    uow.publish(uow.FollowUps(tasks=[uow.Task(tasknames.SEND_BULK, (batch,))
                                     for batch in batches]))
    return len(batches)


@app.task(name=tasknames.ACCEPT_CAMPAIGN, acks_late=True,
          reject_on_worker_lost=True)  # only the broker holds it
def accept_campaign(campaign_id: str, request: dict, app_id: str = "default") -> int:
    """Producer entry point (``shared.client.send_campaign``): insert once, then send. A key
    reused with another body has nobody to answer 409 to: the first campaign stands and the
    new one is dropped with a WARNING naming the key."""
    parsed = campaigns.CampaignRequest.model_validate(request)
    with session_scope() as session:
        try:
            created = campaigns.create_campaign(session, campaign_id, parsed, app_id)
        except IdempotencyConflict:
            log.warning("idempotency_key %r of app %s reused with a different body: campaign "
                        "%s keeps the first request, the new one is dropped",
                        parsed.idempotency_key, app_id, campaign_id)
            return 0
    return publish_batches(created.attempt_ids) if created.attempt_ids else 0


@app.task(name=tasknames.SEND_BULK, acks_late=True)
def send_bulk(attempt_ids: list[str]) -> None:
    for later in bulk.send_bulk(attempt_ids):
        uow.publish_task(tasknames.SEND_BULK, later.attempt_ids, countdown=later.countdown)
