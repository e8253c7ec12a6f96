"""Send-queue tasks for producer-initiated messenger calls (see ``worker.messenger``).

A retryable failure re-runs the task; its retry count picks the JSON-RPC id (the messenger
caches answers, errors included, by id: a call that must run again takes the next id of its
chain, one whose outcome is unknown keeps it).
"""

from __future__ import annotations

from shared import tasknames
from shared.models import DEFAULT_APP
from shared.providers.base import RetryableError
from worker import messenger
from worker.app import app
from worker.timing import retry_countdown

# Published by producers before any row exists: only the broker holds them, so a pool process
# that dies mid-task (the OOM killer, the hard time limit) must hand them back, not ack them.
_RETRY = {"bind": True, "acks_late": True, "max_retries": 8, "reject_on_worker_lost": True}


@app.task(name=tasknames.SEAL, **_RETRY)
def seal(self, message_id: str, rpc_id: str) -> str:  # type: ignore[no-untyped-def]
    try:
        return messenger.seal(message_id, rpc_id, retries=self.request.retries)
    except RetryableError as exc:
        raise self.retry(countdown=retry_countdown(exc.retry_after,
                                                    self.request.retries)) from exc


@app.task(name=tasknames.FRIEND_INVITE, **_RETRY)
def invite(self, email: str, app_id: str, rpc_id: str, name: str | None = None,  # type: ignore[no-untyped-def]
           message: str | None = None, language: str | None = None,
           producer_app: str = DEFAULT_APP) -> str:
    """``app_id`` is the messenger app; ``producer_app`` (trailing, optional: producers that
    predate it publish six arguments and ask as the default app) is ours that asked."""
    try:
        return messenger.invite(email, app_id, rpc_id, name, message, language,
                                retries=self.request.retries, producer_app=producer_app)
    except RetryableError as exc:
        raise self.retry(countdown=retry_countdown(exc.retry_after,
                                                    self.request.retries)) from exc


@app.task(name=tasknames.FRIEND_BREAK_UP, **_RETRY)
def break_up(self, email: str, app_id: str, rpc_id: str,  # type: ignore[no-untyped-def]
             producer_app: str = DEFAULT_APP) -> str:
    try:
        return messenger.break_up(email, app_id, rpc_id, retries=self.request.retries,
                                  producer_app=producer_app)
    except RetryableError as exc:
        raise self.retry(countdown=retry_countdown(exc.retry_after,
                                                    self.request.retries)) from exc
