"""Send-queue tasks for message flows (see ``worker.flows``)."""

from __future__ import annotations

from shared import tasknames
from shared.providers.base import RetryableError
from worker import flows
from worker.app import app
from worker.timing import RetryLater, retry_countdown


@app.task(name=tasknames.START_FLOW_RUN, bind=True, acks_late=True, max_retries=8)
def start_flow_run(self, run_id: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        return flows.start_run(run_id)
    except RetryLater as later:
        raise self.retry(countdown=later.countdown) from later


@app.task(name=tasknames.START_NATIVE_FLOW, bind=True, acks_late=True, max_retries=8)
def start_native_flow(self, run_id: str) -> str:  # type: ignore[no-untyped-def]
    try:
        return flows.start_native(run_id)
    except RetryableError as exc:
        raise self.retry(countdown=retry_countdown(exc.retry_after,
                                                    self.request.retries)) from exc
