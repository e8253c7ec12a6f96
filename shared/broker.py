"""How long the broker may hold a task, decided in one place.

A task that only the broker holds (``switchboard.accept``, ``accept_campaign``, ``seal``,
``friend_invite``, ``friend_break_up``: published before any row of ours exists) has nothing
but the broker to bring it back when the worker that reserved it dies. Tasks ack late with
prefetch 1, so an unacknowledged task always comes back; how soon depends on the broker:

* RabbitMQ requeues a consumer's unacknowledged deliveries as soon as its connection drops
  (a SIGKILLed worker's socket closes at once).
* Redis has no acks: kombu keeps every delivered task in an "unacked" set, and a live worker
  puts back whatever has been there longer than the **visibility timeout**. So a killed
  worker's tasks come back after ``visibility_timeout`` plus one restore scan.

The visibility timeout must cover the longest any task is held: its countdown (a task
published with one is reserved at once and kept unacknowledged until it is due) plus its run.
Shorter, and a task still running is handed out again (harmless: every task starts with a
status guard or an idempotent insert, only wasted work); but a *countdown* longer than the
timeout would be handed out again while still waiting, then again, for as long as it waits.
So: the default timeout is the backoff cap plus the longest run plus headroom, every countdown
is clamped under the timeout (``bounded``: ``shared.uow.publish`` and ``worker.timing`` apply
it), and a timeout set by hand that the backoff cap does not fit under is refused when the
settings are read (``check``).

Both Celery apps (the worker's, ``worker/app.py``, and the producers', ``shared/client.py``)
take their transport options from ``transport_options``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.settings import Settings

# The longest a task may run: Celery warns it at the soft limit and kills it at the hard one.
TASK_SOFT_TIME_LIMIT_SECONDS = 90
TASK_TIME_LIMIT_SECONDS = 120
# Room for a due countdown task to wait for a free pool process behind a running one.
RUN_HEADROOM_SECONDS = 60
# What every countdown leaves under the visibility timeout: the hand-off from "due" to
# "running" and the broker round trip, so a waiting countdown is never handed out again.
HANDOFF_SECONDS = 10


def visibility_timeout(settings: Settings) -> int:
    """``SWITCHBOARD_BROKER_VISIBILITY_TIMEOUT``, else the longest hold: the backoff cap (the
    longest countdown a retry asks for) plus the longest run plus headroom (8 min by
    default)."""
    if settings.broker_visibility_timeout is not None:
        return settings.broker_visibility_timeout
    return settings.retry_backoff_max_seconds + TASK_TIME_LIMIT_SECONDS + RUN_HEADROOM_SECONDS


def countdown_ceiling(settings: Settings) -> float:
    """The longest countdown any task may be published with: the visibility timeout less the
    hand-off, so Redis never hands out a task that is still waiting for its countdown."""
    return float(visibility_timeout(settings) - HANDOFF_SECONDS)


def restore_interval(settings: Settings) -> int:
    """How often a worker scans Redis for tasks held past the timeout: a tenth of it, between
    1 and 10 s (kombu's default scans only every 100 s)."""
    return max(1, min(10, visibility_timeout(settings) // 10))


def redelivery_bound(settings: Settings) -> int:
    """On Redis, the longest a killed worker's task waits before a live worker gets it."""
    return visibility_timeout(settings) + restore_interval(settings)


def transport_options(settings: Settings) -> dict[str, Any]:
    """``broker_transport_options`` of every Celery app we build (Redis reads them; the
    RabbitMQ transport ignores them). The restore lock expires after three scans, so a worker
    killed in the middle of a scan holds the others up for seconds, not kombu's 5 minutes."""
    interval = restore_interval(settings)
    return {"visibility_timeout": visibility_timeout(settings),
            "unacked_restore_interval": interval,
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": max(5, 3 * interval)}


def check(backoff_max_seconds: int, visibility_timeout_seconds: int) -> None:
    """Refuse a visibility timeout a retry's backoff does not fit under (Redis would hand the
    waiting retry out again, over and over): raises ``ValueError`` naming both settings. The
    derived default always fits; only a timeout set by hand can be refused."""
    if backoff_max_seconds > visibility_timeout_seconds - HANDOFF_SECONDS:
        raise ValueError(
            f"SWITCHBOARD_RETRY_BACKOFF_MAX_SECONDS ({backoff_max_seconds}) must be at most "
            f"SWITCHBOARD_BROKER_VISIBILITY_TIMEOUT ({visibility_timeout_seconds}) less "
            f"{HANDOFF_SECONDS} s: a retry waiting longer would be handed out again")


def bounded(countdown: float) -> float:
    """``countdown`` clamped to the ceiling. Our backoff always fits (``check``); what may ask
    for more is a provider's Retry-After or a circuit's or rate limit's wait: the task then
    comes back earlier than asked, and whatever held it (the circuit, the bucket, the
    provider answering "later" again) holds it again."""
    from shared.settings import get_settings  # here: shared.settings imports this module

    return min(countdown, countdown_ceiling(get_settings()))
