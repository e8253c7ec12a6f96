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
EVENTS_QUEUE = "events"
SWEEP_QUEUE = "sweep"
NOTIFY_QUEUE = "notify"

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
