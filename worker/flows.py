"""The worker's side of message flows: start runs, start native runs on the messenger, fire
step deadlines. The rules themselves live in ``shared.flows.runtime``; this module owns the
transactions and publishes what they decided once they have committed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from shared.db import session_scope
from shared.flows import runtime
from shared.flows.native import to_flow_xml
from shared.lifecycle import RunStatus
from shared.models import FlowRun
from shared.flows.handlers import DEFAULT_MESSENGER_APP
from shared.providers import provider_for
from shared.providers.base import PermanentError
from shared.uow import unit_of_work


def start_run(run_id: str) -> bool:
    """Send a new run's first step (or hand it to the messenger). Idempotent."""
    with unit_of_work() as work:
        return runtime.begin(work.session, run_id, work.followups) is not None


def expire_step(run_id: str, now: datetime) -> bool:
    """A step's answer deadline passed (from the deadline sweep): follow ``on_timeout``."""
    with unit_of_work() as work:
        return runtime.expire_step(work.session, run_id, now, work.followups)


def start_native(run_id: str) -> str:
    """Start the run on the messenger from our definition's flow XML. The run id is the
    JSON-RPC id, so a retried task cannot start the flow twice."""
    with session_scope() as session:
        run = session.get(FlowRun, run_id)
        if run is None or run.status != RunStatus.RUNNING or run.provider_run_id:
            return "skipped"
        xml = to_flow_xml(runtime.definition_of(run.flow))
        to = run.contact.get("to") or {}
        email, app_id = str(to.get("email") or ""), to.get("app_id") or DEFAULT_MESSENGER_APP
    try:
        native = provider_for("native_flows")
        provider_run_id = native.start_local_flow(  # type: ignore[attr-defined]
            xml, email, app_id, rpc_id=run_id, tag=native_tag(run_id))
    except PermanentError as exc:
        _fail_native(run_id, exc)
        return exc.reason
    with session_scope() as session:
        run = session.get(FlowRun, run_id)
        assert run is not None
        run.provider_run_id = provider_run_id
    return "started"


def native_tag(run_id: str) -> str:
    """The tag the messenger echoes in flow_member_result: how results find their run."""
    return runtime.NATIVE_TAG_PREFIX + run_id


def _fail_native(run_id: str, exc: PermanentError) -> None:
    with unit_of_work() as work:
        run = work.session.get(FlowRun, run_id)
        if run is not None and run.status == RunStatus.RUNNING:
            run.steps = [*run.steps, {"step_id": run.current_step, "outcome": RunStatus.FAILED,
                                      "reason": exc.reason, "detail": exc.detail}]
            runtime.finish(work.session, run, RunStatus.FAILED, work.followups)


def reindex_steps() -> list[tuple[str, datetime]]:
    """Every running step deadline, for the Redis index rebuild at beat start."""
    with session_scope() as session:
        rows = session.execute(select(FlowRun.id, FlowRun.deadline_at).where(
            FlowRun.status == RunStatus.RUNNING, FlowRun.deadline_at.is_not(None))).all()
    return [(runtime.STEP_DEADLINE_PREFIX + r.id, r.deadline_at) for r in rows]
