"""Periodic safety nets: fire due deadlines, release due schedules, and re-publish whatever
a crash left behind.

Each sweep is idempotent (the work it triggers starts with a status guard), and a short Redis
lock keeps two overlapping deadline sweeps from doing the same work twice.

The deadline sweep is started by beat every ``sweep_interval_seconds``; when it ends it looks
at the next due entry (a deadline, a scheduled message's ``send_at``, a quiet-hours wake-up)
and, if that comes before the next tick, publishes one more sweep for exactly then (a
countdown shorter than the interval, held by the worker, not a pool process): what falls due
between two ticks is fired on time instead of up to a whole interval late.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

import redis
from redis.exceptions import LockError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from shared import feed, tasknames
from shared.campaigns import chunks
from shared.db import session_scope
from shared.flows.runtime import STEP_DEADLINE_PREFIX
from shared.lifecycle import AttemptStatus, CallbackStatus, MessageStatus, RunStatus
from shared.models import Attempt, Callback, FlowRun, Message, utcnow
from shared.settings import get_settings
from shared.uow import FollowUps, Task, UnitOfWork, publish, unit_of_work
from worker import deadlines, expiry, route, timeliness
from worker.redis_conn import get_redis

UNSETTLED = (AttemptStatus.SENDING, AttemptStatus.SUBMITTED)  # may have left: a deadline runs

log = logging.getLogger(__name__)
_SWEEP_LOCK = "switchboard:lock:sweep-deadlines"
SET_ASIDE_SECONDS = 30  # a deadline whose handling failed is looked at again after this
_WAKE_KEY = "switchboard:sweep:wake"  # set while a sweep for the next due entry is on its way


def sweep_deadlines(budget_seconds: float = 5.0, batch: int = 500) -> int:
    """Expire every attempt whose deadline has passed; returns how many fell back or ended.

    The lock is redis-py's token lock, so a sweep that outlived it never deletes the lock a
    later sweep holds; one member that fails is set aside, not retried at the head of every
    sweep (it blocked all later deadlines).
    """
    client = get_redis()
    lock = client.lock(_SWEEP_LOCK, timeout=int(budget_seconds) + 5)
    if not lock.acquire(blocking=False):
        return 0
    try:
        return _sweep(client, budget_seconds, batch)
    finally:
        try:
            lock.release()
        except LockError:  # it expired and may be another sweep's now: leave it alone
            log.warning("deadline sweep outlived its lock")
        try:
            client.delete(_WAKE_KEY)
            wake_for_next(client)
        except Exception:  # noqa: BLE001 - beat's next tick sweeps anyway
            log.exception("could not arrange the sweep for the next due entry")


def _sweep(client: redis.Redis, budget_seconds: float, batch: int) -> int:
    fired, started = 0, time.monotonic()
    while time.monotonic() - started < budget_seconds:
        released = release_scheduled(limit=batch)
        due = deadlines.due(client, utcnow(), limit=batch)
        fired += released
        if not due:
            if released:
                continue
            break
        for member in due:
            fired += _expire_or_set_aside(client, member)
            if time.monotonic() - started >= budget_seconds:
                return fired  # a batch of 500 can outlast the lock: stop on budget
    return fired


def wake_for_next(client: redis.Redis, now: datetime | None = None) -> float | None:
    """One more sweep at the next due entry when it comes before beat's next tick; returns
    its countdown (None when the tick comes first, or a wake-up is already on its way)."""
    now = now or utcnow()
    interval = get_settings().sweep_interval_seconds
    with session_scope() as session:
        next_send = session.execute(select(func.min(Message.send_at)).where(
            Message.status == MessageStatus.SCHEDULED)).scalar()
    candidates = [deadlines.next_due(client), next_send]
    soonest = min((c for c in candidates if c is not None), default=None)
    if soonest is None:
        return None
    countdown = max(0.0, (soonest - now).total_seconds())
    if countdown >= interval or not client.set(
            _WAKE_KEY, 1, nx=True, px=int((countdown + interval) * 1000)):
        return None
    publish(FollowUps(tasks=[Task(tasknames.SWEEP_DEADLINES, (), countdown=countdown)]))
    return countdown


def release_scheduled(limit: int = 500, now: datetime | None = None) -> int:
    """``scheduled → queued`` for every message whose ``send_at`` has come, and its dispatch
    published after commit; returns how many. The database is the schedule (indexed on
    ``(status, send_at)``), so a Redis loss loses none, and a release run twice releases
    each message once (compare-and-set on the status)."""
    now = now or utcnow()
    with unit_of_work() as work:
        due = work.session.execute(select(Message.id, Message.priority, Message.campaign_id)
                                   .where(Message.status == MessageStatus.SCHEDULED,
                                          Message.send_at <= now)
                                   .order_by(Message.send_at).limit(limit)).all()
        released = [r for r in due
                    if route.move_message(work.session, r.id, "release") is not None]
        for row in released:
            if row.campaign_id is None:
                work.task(tasknames.DISPATCH, row.id, queue=tasknames.send_queue(row.priority))
        _send_campaign_batches(work, [r.id for r in released if r.campaign_id is not None])
    return len(due)


def _send_campaign_batches(work: UnitOfWork, message_ids: list[str]) -> None:
    """A scheduled campaign's first-hop attempts wait ``pending`` from the start: released,
    they go the bulk path, in batches, like an unscheduled campaign's."""
    if not message_ids:
        return
    attempt_ids = list(work.session.scalars(
        update(Attempt).where(Attempt.message_id.in_(message_ids), Attempt.hop == 0,
                              Attempt.status == AttemptStatus.PENDING)
        .values(not_before=None).returning(Attempt.id)
        .execution_options(synchronize_session=False)).all())
    for batch in chunks(attempt_ids, get_settings().bulk_batch_size):
        work.task(tasknames.SEND_BULK, batch)


def _expire_or_set_aside(client: redis.Redis, member: str) -> bool:
    """Fire one member; if that fails, log it and look again after ``SET_ASIDE_SECONDS``.

    The database row stays the truth, so nothing is lost: the retry (or the recovery sweep's
    re-index) fires it once whatever failed has passed.
    """
    try:
        return _expire(member)
    except Exception:  # noqa: BLE001 - one bad entry must not stop every later deadline
        log.exception("deadline %s failed; set aside for %ss", member, SET_ASIDE_SECONDS)
        deadlines.index(client, [(member, utcnow() + timedelta(seconds=SET_ASIDE_SECONDS))])
        return False


def _expire(member: str) -> bool:
    """One due index member: an attempt's fallback deadline or a flow step's answer deadline."""
    if member.startswith(STEP_DEADLINE_PREFIX):
        from worker import flows

        return flows.expire_step(member.removeprefix(STEP_DEADLINE_PREFIX), utcnow())
    if member.startswith(timeliness.WAKE_PREFIX):
        return _wake(member.removeprefix(timeliness.WAKE_PREFIX))
    return expiry.expire_attempt(member, utcnow())


def _wake(attempt_id: str) -> bool:
    """A waiting attempt's time has come (its quiet hours ended): send it, on its message's
    queue. The send starts with the status guard, and asks the quiet hours again."""
    with session_scope() as session:
        row = session.execute(select(Attempt.status, Message.priority)
                              .join(Message, Message.id == Attempt.message_id)
                              .where(Attempt.id == attempt_id)).first()
    client = get_redis()
    deadlines.remove(client, [timeliness.WAKE_PREFIX + attempt_id])
    if row is None or row.status != AttemptStatus.PENDING:
        return False
    publish(FollowUps(tasks=[Task(tasknames.SEND_ATTEMPT, (attempt_id,),
                                  queue=tasknames.send_queue(row.priority))]))
    return True


def reindex_deadlines() -> int:
    """Rebuild the Redis index from the database (beat start-up)."""
    with session_scope() as session:
        rows = session.execute(select(Attempt.id, Attempt.deadline_at).where(
            Attempt.deadline_at.is_not(None),
            Attempt.status.in_(UNSETTLED))).all()
        # a scheduled campaign's attempts wait for its release (SEND_BULK), not a wake-up
        waiting = session.execute(select(Attempt.id, Attempt.not_before).join(
            Message, Message.id == Attempt.message_id).where(
            Attempt.status == AttemptStatus.PENDING, Attempt.not_before.is_not(None),
            Message.status != MessageStatus.SCHEDULED)).all()
        pending_deadlines = session.execute(select(Attempt.id, Attempt.deadline_at).where(
            Attempt.status == AttemptStatus.PENDING, Attempt.deadline_at.is_not(None))).all()
    from worker import flows

    steps = flows.reindex_steps()
    wakes = [(timeliness.WAKE_PREFIX + r.id, r.not_before) for r in waiting]
    deadlines.index(get_redis(), [(r.id, r.deadline_at) for r in (*rows, *pending_deadlines)]
                    + steps + wakes)
    return len(rows) + len(pending_deadlines) + len(steps) + len(wakes)


def recover() -> dict[str, int]:
    """Re-publish work a lost broker message or a killed worker left behind."""
    settings = get_settings()
    stale = utcnow() - timedelta(seconds=settings.requeue_stuck_after_seconds)
    now = utcnow()
    with session_scope() as session:
        queued = session.scalars(select(Message.id).where(
            Message.status == MessageStatus.QUEUED, Message.updated_at < stale,
            ~Message.attempts.any()).limit(1000)).all()
        pending = session.scalars(select(Attempt.id).where(
            Attempt.status == AttemptStatus.PENDING,
            func.coalesce(Attempt.not_before, Attempt.updated_at) < stale).limit(1000)).all()
        callbacks = session.scalars(select(Callback.id).where(
            Callback.status == CallbackStatus.RECEIVED,
            Callback.received_at < stale).limit(1000)).all()
        due = session.execute(select(Attempt.id, Attempt.deadline_at).where(
            Attempt.deadline_at <= now,
            Attempt.status.in_(UNSETTLED)).limit(5000)).all()
        due_steps = session.execute(select(FlowRun.id, FlowRun.deadline_at).where(
            FlowRun.deadline_at <= now, FlowRun.status == RunStatus.RUNNING).limit(5000)).all()
        runs = session.scalars(select(FlowRun.id).where(
            FlowRun.status == RunStatus.STARTING, FlowRun.updated_at < stale).limit(1000)).all()
    client = get_redis()
    deadlines.index(client, [(r.id, r.deadline_at) for r in due]
                    + [(STEP_DEADLINE_PREFIX + r.id, r.deadline_at) for r in due_steps])
    window = settings.requeue_stuck_after_seconds
    queued, pending, callbacks, runs = (
        _not_recently_republished(client, kind, ids, window)
        for kind, ids in (("message", queued), ("attempt", pending), ("callback", callbacks),
                          ("flow_run", runs)))
    publish(FollowUps(
        tasks=[Task(tasknames.DISPATCH, (m,)) for m in queued]
        + [Task(tasknames.SEND_ATTEMPT, (a,)) for a in pending]
        + [Task(tasknames.HANDLE_CALLBACK, (c,)) for c in callbacks]
        + [Task(tasknames.START_FLOW_RUN, (r,)) for r in runs]))
    counts = {"messages": len(queued), "attempts": len(pending), "callbacks": len(callbacks),
              "deadlines": len(due) + len(due_steps), "flow_runs": len(runs)}
    if any(counts.values()):
        log.warning("recovery re-published %s", counts)
    return counts


def _not_recently_republished(client: redis.Redis, kind: str, ids: Sequence[object],
                              window: int) -> list[object]:
    """The ids this sweep did not re-publish within the last ``window`` seconds (a lease each).

    A row still waiting behind a backlog looks just like a stuck one. Re-publishing it every
    sweep (every second in tests, 15 s by default) filled the very queues it waited in with
    duplicates (harmless one by one, each starts with a status guard), and the workers, busy
    with them, fell further behind: the backlog grew instead of draining. Once per window is
    enough to replace a task a crash really lost.
    """
    if not ids:
        return []
    with client.pipeline(transaction=False) as pipe:
        for row_id in ids:
            pipe.set(f"switchboard:recovered:{kind}:{row_id}", 1, nx=True, ex=max(window, 1))
        fresh = pipe.execute()
    return [row_id for row_id, leased in zip(ids, fresh, strict=True) if leased]


def number_events() -> int:
    """Place newly committed public events in the producers' feed (``shared.feed``)."""
    try:
        with session_scope() as session:
            return feed.number_events(session)
    except IntegrityError:  # another sweeper numbered the same rows first: next tick
        return 0
