"""Stable Celery task names and their queues: the contract between producers and workers.

Producers call tasks by these names with ``send_task`` (they never import ``worker``), so the
names never change; the queue map keeps sending, callback handling and sweeps apart, so a slow
provider cannot starve status updates.
"""

ACCEPT = "switchboard.accept"
DISPATCH = "switchboard.dispatch"
SEND_ATTEMPT = "switchboard.send_attempt"
HANDLE_CALLBACK = "switchboard.handle_callback"
SWEEP_DEADLINES = "switchboard.sweep_deadlines"
REINDEX_DEADLINES = "switchboard.reindex_deadlines"
RECOVER = "switchboard.recover"
NOTIFY = "switchboard.notify"
SWEEP_DELIVERIES = "switchboard.sweep_deliveries"
NUMBER_EVENTS = "switchboard.number_events"
SEAL = "switchboard.seal"
FRIEND_INVITE = "switchboard.friend_invite"
FRIEND_BREAK_UP = "switchboard.friend_break_up"
START_FLOW_RUN = "switchboard.start_flow_run"
START_NATIVE_FLOW = "switchboard.start_native_flow"
ACCEPT_CAMPAIGN = "switchboard.accept_campaign"
SEND_BULK = "switchboard.send_bulk"

SEND_QUEUE = "send"
# Sends of ``priority: critical`` messages (one-time codes, alerts): their own queue, which
# every sending worker consumes beside ``send``, so they never wait behind bulk or normal work.
CRITICAL_QUEUE = "critical"
EVENTS_QUEUE = "events"
SWEEP_QUEUE = "sweep"
NOTIFY_QUEUE = "notify"

SEND_TASKS = frozenset({ACCEPT, DISPATCH, SEND_ATTEMPT})  # a critical message's go on CRITICAL


def send_queue(priority: str | None) -> str | None:
    """The queue override for a message's send tasks: ``critical`` ones jump the line."""
    return CRITICAL_QUEUE if priority == "critical" else None


QUEUE_OF = {
    ACCEPT: SEND_QUEUE,
    DISPATCH: SEND_QUEUE,
    SEND_ATTEMPT: SEND_QUEUE,
    HANDLE_CALLBACK: EVENTS_QUEUE,
    SWEEP_DEADLINES: SWEEP_QUEUE,
    REINDEX_DEADLINES: SWEEP_QUEUE,
    RECOVER: SWEEP_QUEUE,
    NOTIFY: NOTIFY_QUEUE,
    SWEEP_DELIVERIES: SWEEP_QUEUE,
    NUMBER_EVENTS: SWEEP_QUEUE,
    SEAL: SEND_QUEUE,
    FRIEND_INVITE: SEND_QUEUE,
    FRIEND_BREAK_UP: SEND_QUEUE,
    START_FLOW_RUN: SEND_QUEUE,
    START_NATIVE_FLOW: SEND_QUEUE,
    ACCEPT_CAMPAIGN: SEND_QUEUE,
    SEND_BULK: SEND_QUEUE,
}

# Every queue some worker must consume (deployment files are checked against it).
ALL_QUEUES = frozenset({*QUEUE_OF.values(), CRITICAL_QUEUE})
