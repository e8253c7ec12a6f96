"""Running message flows: each run walks one contact through one flow version.

A step is an ordinary message (route, retries, fallback per step all come from the pipeline),
tagged with its run in ``metadata``. The worker calls in here, inside its own transactions,
when something happens to a step's message: an answer (``on_reply``), its final failure
(``on_message_final``), or its answer deadline (``expire_step``). Work that must wait for the
commit (dispatching the next step's message, indexing a deadline, starting a native flow) is
appended to ``work``, the unit of work's ``FollowUps`` (``shared.uow``).

Step deadlines live in ``flow_runs.deadline_at`` and in the same Redis index as attempt
deadlines (members prefixed ``flowstep:``), swept by the same one-second beat task.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared import sendtime, tasknames
from shared.flows.definition import FlowDefinition
from shared.flows.render import (
    match_answer_id,
    match_reply,
    render_reask,
    render_text,
    templated_step,
    with_captions,
)
from shared.flows.requests import contact_key
from shared.lifecycle import MESSAGE_FINAL, MessageStatus
from shared.messages import add_app_event, insert_message
from shared.models import DEFAULT_APP, Contact, Flow, FlowRun, utcnow
from shared.schemas import SendRequest, Timing
from shared.uow import Task

STEP_DEADLINE_PREFIX = "flowstep:"
NATIVE_TAG_PREFIX = "switchboard-flow:"  # the tag a native run carries, echoed in its results
NUMBERED_CHANNELS = frozenset({"viber", "sms", "inapp"})


class Work(Protocol):
    """Where follow-ups go (``shared.uow.FollowUps``): published after commit."""

    tasks: list[Task]
    index: list[tuple[str, datetime]]
    unindex: list[str]


# --- definitions --------------------------------------------------------------------------

class TriggerTaken(Exception):
    """A poke tag or keyword that another app's flow already lists: a trigger starts one
    app's flow, so a second app cannot claim it (the API answers 409 naming the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def save_definition(session: Session, app_id: str, definition: FlowDefinition) -> Flow:
    """Store a new version (1, 2, ...) of the flow named in the definition; raises
    ``TriggerTaken`` when another app's latest flow lists one of its triggers."""
    _check_triggers(session, app_id, definition)
    latest = session.scalar(select(func.max(Flow.version)).where(
        Flow.app_id == app_id, Flow.name == definition.name)) or 0
    flow = Flow(app_id=app_id, name=definition.name, version=latest + 1,
                definition=definition.model_dump(mode="json", exclude_none=True))
    session.add(flow)
    session.flush()
    return flow


def _check_triggers(session: Session, app_id: str, definition: FlowDefinition) -> None:
    """Triggers are global (a poke names no app), so each belongs to the app that saved it
    first; another app's flow whose latest version lists it keeps it."""
    taken_tags: set[str] = set()
    taken_words: set[str] = set()
    for flow in latest_flows(session):
        if flow.app_id != app_id:
            triggers = definition_of(flow).triggers
            taken_tags.update(triggers.poke_tags)
            taken_words.update(k.strip().casefold() for k in triggers.keywords)
    for index, tag in enumerate(definition.triggers.poke_tags):
        if tag in taken_tags:
            raise TriggerTaken(f"triggers.poke_tags.{index}",
                               f"poke tag {tag!r} already starts another app's flow")
    for index, word in enumerate(definition.triggers.keywords):
        if word.strip().casefold() in taken_words:
            raise TriggerTaken(f"triggers.keywords.{index}",
                               f"keyword {word!r} already starts another app's flow")


def find_flow(session: Session, app_id: str, name: str, version: int | None = None) -> Flow | None:
    """A flow version of this app; the latest when no version is given."""
    query = select(Flow).where(Flow.app_id == app_id, Flow.name == name)
    if version is not None:
        query = query.where(Flow.version == version)
    return session.scalars(query.order_by(Flow.version.desc()).limit(1)).first()


def flow_versions(session: Session, app_id: str, name: str) -> list[Flow]:
    """Every saved version of a flow, oldest first."""
    return list(session.scalars(select(Flow).where(Flow.app_id == app_id, Flow.name == name)
                                .order_by(Flow.version)).all())


def latest_flows(session: Session, app_id: str | None = None) -> list[Flow]:
    """The latest version of every flow (of one app, or of all apps for triggers)."""
    newest = (select(Flow.app_id, Flow.name, func.max(Flow.version).label("version"))
              .group_by(Flow.app_id, Flow.name).subquery())
    query = select(Flow).join(newest, (Flow.app_id == newest.c.app_id)
                              & (Flow.name == newest.c.name)
                              & (Flow.version == newest.c.version))
    if app_id is not None:
        query = query.where(Flow.app_id == app_id)
    return list(session.scalars(query.order_by(Flow.name)).all())


def definition_of(flow: Flow) -> FlowDefinition:
    return FlowDefinition.model_validate(flow.definition)


# --- starting runs ---------------------------------------------------------------------------

def create_run(session: Session, flow: Flow, contact: dict[str, Any], app_id: str,
               trigger: str, launch: Timing | None = None) -> FlowRun:
    """A run in status ``starting``; the worker's start task sends its first step. What the
    ``launch`` asked (``send_at``, ``valid_until``, quiet hours, priority, category) is kept
    for its steps' messages, a ttl fixed to a ``valid_until`` now."""
    run = FlowRun(id=str(uuid.uuid4()), flow_id=flow.id, app_id=app_id, contact=contact,
                  contact_key=contact_key(contact), trigger=trigger, status="starting",
                  native=definition_of(flow).native, steps=[],
                  launch=launch_fields(launch, utcnow()) if launch is not None else None)
    session.add(run)
    session.flush()
    return run


def check_contact(definition: FlowDefinition, contact: dict[str, Any]) -> None:
    """Refuse a contact the flow's route cannot reach, before any run exists (raises
    pydantic's ValidationError naming the field, e.g. ``to.phone``)."""
    SendRequest.model_validate({**_addressing(contact), "route": definition.route,
                                "text": "check", "allow_dismiss": True})


def consenting_contacts(session: Session, definition: FlowDefinition,
                        app_id: str = DEFAULT_APP,
                        category: str | None = None) -> list[dict[str, Any]]:
    """Everyone with consent on the flow's first channel (e.g. the messenger's friends) among
    the contacts ``app_id`` may list (``shared.contacts.visible``): a launch for all must not
    reach, or name in its answer, another app's contacts. A friend who opted out since (a
    STOP, an import: the consent registry, for the launch's ``category``) gets no run; one
    query for all of them."""
    from shared import consent, contacts

    channel = definition.route[0]
    rows = session.scalars(select(Contact).where(
        Contact.channel == channel, Contact.status == "friend",
        contacts.visible(app_id))).all()
    keys = {str(i): (row.app_id or consent.default_scope(channel),
                     consent.address_for(channel, row.address)) for i, row in enumerate(rows)}
    stopped = consent.refusals(session, channel, keys, category, {}) if rows else {}
    return [{"to": {"email": row.address, **({"app_id": row.app_id} if row.app_id else {})}}
            for i, row in enumerate(rows) if str(i) not in stopped]


def begin(session: Session, run_id: str, work: Work) -> FlowRun | None:
    """Move a ``starting`` run to ``running`` and send its first step (or, natively, ask the
    worker to start it on the messenger). Safe to call twice."""
    moved = session.execute(update(FlowRun).where(FlowRun.id == run_id,
                                                  FlowRun.status == "starting")
                            .values(status="running", updated_at=utcnow())).rowcount
    if moved != 1:
        return None
    run = session.get(FlowRun, run_id, populate_existing=True)
    assert run is not None
    definition = definition_of(run.flow)
    if definition.native:
        run.current_step = definition.start_step().id
        work.tasks.append(Task(tasknames.START_NATIVE_FLOW, (run.id,)))
    else:
        _enter(session, run, definition, definition.start_step().id, work)
    return run


# --- walking the steps ------------------------------------------------------------------------

def _enter(session: Session, run: FlowRun, definition: FlowDefinition, step_id: str,
           work: Work) -> None:
    """Go to ``step_id``: send it, or pass through flushes, or finish at an end."""
    for _ in range(len(definition.steps) + 1):
        step = definition.step(step_id)
        if step.type == "end":
            finish(session, run, "finished", end_id=step.id, work=work)
            return
        if step.type == "flush":
            run.steps = [*run.steps, {"step_id": step.id, "type": "flush", "at": _iso(utcnow())}]
            post_result(session, run, flush_id=step.id)
            step_id = step.next
            continue
        _send_step(session, run, definition, step, work)
        return
    raise ValueError(f"flow {definition.name}: flush steps loop without a message or end")


def _send_step(session: Session, run: FlowRun, definition: FlowDefinition, step: Any,
               work: Work, reask: bool = False) -> None:
    from shared.templates import TemplateError

    try:
        step, use = templated_step(session, run.app_id, step, template_data(run))
    except TemplateError as exc:  # nothing half-rendered leaves: the run fails here
        run.steps = [*run.steps, {"step_id": step.id, "type": step.type, "message_id": None,
                                  "text": None, "sent_at": _iso(utcnow()), "answer": None,
                                  "answered_at": None, "outcome": "failed",
                                  "error": exc.errors}]
        finish(session, run, "failed", work=work)
        return
    message_id = str(uuid.uuid4())
    request = step_request(run, definition, step, reask)
    message = insert_message(session, message_id, request, run.app_id)
    scheduled = message.status == MessageStatus.SCHEDULED
    if use is not None:
        message.template_name, message.template_version = use.name, use.version
        message.template_locale = use.locale
    now = utcnow()
    if reask:
        last = dict(run.steps[-1])
        last["reasked_message_id"] = message_id
        run.steps = [*run.steps[:-1], last]
    else:
        run.steps = [*run.steps, {
            "step_id": step.id, "type": step.type, "message_id": message_id,
            "text": step.text, "sent_at": _iso(now), "answer": None, "answered_at": None,
            "outcome": None,
            **({"captions": {b.id: b.caption for b in step.buttons}}
               if use is not None and step.type == "message" else {})}]
    run.current_step, run.current_message_id = step.id, message_id
    run.reasked = 1 if reask else 0
    _set_deadline(run, step, message.send_at or now, work)
    if not scheduled:  # a scheduled first step is released by the sweep at its send_at
        work.tasks.append(Task(tasknames.DISPATCH, (message_id,),
                               queue=tasknames.send_queue(message.priority)))


def _set_deadline(run: FlowRun, step: Any, now: datetime, work: Work) -> None:
    timeout = getattr(step, "on_timeout", None)
    key = STEP_DEADLINE_PREFIX + run.id
    if timeout is None:
        run.deadline_at = None
        work.unindex.append(key)
        return
    run.deadline_at = now + timedelta(seconds=timeout.after)
    work.index.append((key, run.deadline_at))


def template_data(run: FlowRun) -> dict[str, Any]:
    """What a step's template renders with: the run's contact, and each answered step's
    answer (its button caption, or the text typed)."""
    answers = {e["step_id"]: (e.get("answer") or {}).get("caption")
               or (e.get("answer") or {}).get("text")
               for e in run.steps if e.get("answer")}
    return {"contact": run.contact, "answers": answers}


def step_request(run: FlowRun, definition: FlowDefinition, step: Any,
                 reask: bool = False) -> SendRequest:
    """The step as a message: buttons on the messenger, numbered options elsewhere."""
    route = list(definition.route)
    numbered = render_reask(step) if reask else render_text(step, numbered=True)
    plain = render_text(step, numbered=False)
    fields: dict[str, Any] = {
        **_addressing(run.contact), "route": route,
        "metadata": {"flow_run_id": run.id, "flow_step": step.id},
        "idempotency_key": f"flow:{run.id}:{step.id}:{len(run.steps)}:{int(reask)}"}
    fields.update(_launch_fields(run))
    if "rogerthat" in route:
        fields["text"] = ("Sorry, I did not understand. " + plain) if reask else plain
        fields["texts"] = {ch: numbered for ch in route if ch in NUMBERED_CHANNELS}
        fields.update(_messenger_fields(step))
    else:
        fields["text"] = numbered
    return SendRequest.model_validate(fields)


def launch_fields(timing: Timing, now: datetime) -> dict[str, Any] | None:
    """What a run keeps of its launch (JSON): ``send_at`` for its first step, and a
    ``valid_until`` (a ttl counted from ``send_at`` or now), quiet hours, priority and
    category for every step."""
    send_at = sendtime.schedule_time(timing.send_at, now)
    valid_until = sendtime.validity_end(timing.valid_until, timing.ttl_seconds,
                                        send_at or now)
    kept = {"send_at": _iso(send_at) if send_at else None,
            "valid_until": _iso(valid_until) if valid_until else None,
            "quiet_hours": timing.quiet_hours.model_dump() if timing.quiet_hours else None,
            "priority": timing.priority, "category": getattr(timing, "category", None)}
    return kept if any(v for k, v in kept.items() if k != "priority") \
        or timing.priority != sendtime.NORMAL else None


def _launch_fields(run: FlowRun) -> dict[str, Any]:
    """The send-request fields of a step's message from what its launch asked."""
    launch = run.launch or {}
    fields = {k: launch[k] for k in ("valid_until", "quiet_hours", "priority", "category")
              if launch.get(k)}
    if launch.get("send_at") and not run.steps:  # only the first step waits for it
        fields["send_at"] = launch["send_at"]
    return fields


def _messenger_fields(step: Any) -> dict[str, Any]:
    if step.type != "message":  # a free-text question: the messenger can only dismiss
        return {"allow_dismiss": True}
    fields: dict[str, Any] = {
        "buttons": [{"id": b.id, "caption": b.caption,
                     **({"action": b.action} if b.action else {})} for b in step.buttons],
        "auto_lock": step.auto_lock}
    if step.branding:
        fields["branding"] = step.branding
    if step.alert:
        fields["alert"] = step.alert.model_dump(exclude_none=True)
    return fields


def _addressing(contact: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {"to": contact.get("to") or {}}
    if contact.get("conversation"):
        fields["conversation"] = contact["conversation"]
    return fields


# --- what happens to a step -----------------------------------------------------------------

def _claim(session: Session, message_id: str) -> FlowRun | None:
    """The running run whose current step is this message, locked against a concurrent
    answer by a no-op update (a row lock on PostgreSQL, the write lock on SQLite)."""
    run_id = session.scalar(select(FlowRun.id).where(FlowRun.current_message_id == message_id,
                                                     FlowRun.status == "running"))
    if run_id is None:
        return None
    if session.execute(update(FlowRun).where(
            FlowRun.id == run_id, FlowRun.current_message_id == message_id,
            FlowRun.status == "running").values(updated_at=utcnow())).rowcount != 1:
        return None
    return session.get(FlowRun, run_id, populate_existing=True)


def on_reply(session: Session, message_id: str, work: Work, *, answer_id: str | None = None,
             text: str | None = None) -> bool:
    """An answer to a message: if it is a run's current step, advance the run. Returns
    whether a run took it (else the caller may look for a keyword trigger)."""
    run = _claim(session, message_id)
    if run is None:
        return False
    definition = definition_of(run.flow)
    step = definition.step(run.current_step or "")
    if step.type == "question":
        if text is None:
            return True  # a dismissal on the messenger carries no text to keep
        _record_outcome(run, "answered", {"text": text})
        _enter(session, run, definition, step.next, work)
        return True
    step = with_captions(step, (run.steps[-1] if run.steps else {}).get("captions") or {})
    button = match_answer_id(step, answer_id) if answer_id else match_reply(step, text)
    if button is not None:
        _record_outcome(run, "answered", {"button_id": button.id, "caption": button.caption})
        _enter(session, run, definition, button.next, work)
    elif run.reasked == 0:
        _send_step(session, run, definition, step, work, reask=True)
    else:
        _record_outcome(run, "unmatched", {"text": text or answer_id})
        _time_out(session, run, definition, step, work)
    return True


def _record_outcome(run: FlowRun, outcome: str, answer: dict[str, Any] | None = None) -> None:
    last = dict(run.steps[-1])
    last.update(outcome=outcome, answered_at=_iso(utcnow()) if answer else None)
    if answer is not None:
        last["answer"] = answer
    run.steps = [*run.steps[:-1], last]


def _time_out(session: Session, run: FlowRun, definition: FlowDefinition, step: Any,
              work: Work) -> None:
    run.timed_out = True
    if getattr(step, "on_timeout", None) is not None:
        _enter(session, run, definition, step.on_timeout.next, work)
    else:
        finish(session, run, "timed_out", work=work)


def expire_step(session: Session, run_id: str, now: datetime, work: Work) -> bool:
    """The sweep found this run's step deadline due: follow ``on_timeout``. Idempotent."""
    run = session.get(FlowRun, run_id)
    key = STEP_DEADLINE_PREFIX + run_id
    if run is None or run.status != "running" or run.deadline_at is None:
        work.unindex.append(key)
        return False
    if run.deadline_at > now:
        work.index.append((key, run.deadline_at))  # moved on to a later step: re-score
        return False
    claimed = _claim(session, run.current_message_id or "")
    if claimed is None:
        return False
    definition = definition_of(claimed.flow)
    step = definition.step(claimed.current_step or "")
    _record_outcome(claimed, "timeout")
    claimed.deadline_at = None
    work.unindex.append(key)
    _time_out(session, claimed, definition, step, work)
    return True


def on_message_final(session: Session, message_id: str, status: str, work: Work) -> None:
    """A step's message ended undelivered on every channel: follow ``on_failed``."""
    if status not in MESSAGE_FINAL:
        return
    run = _claim(session, message_id)
    if run is None:
        return
    definition = definition_of(run.flow)
    step = definition.step(run.current_step or "")
    _record_outcome(run, "failed")
    if getattr(step, "on_failed", None):
        _enter(session, run, definition, step.on_failed, work)
    else:
        finish(session, run, "failed", work=work)


def finish(session: Session, run: FlowRun, status: str, work: Work,
            end_id: str | None = None) -> None:
    run.status, run.end_id, run.finished_at = status, end_id, utcnow()
    run.deadline_at = None
    work.unindex.append(STEP_DEADLINE_PREFIX + run.id)
    post_result(session, run)


def on_native_result(session: Session, params: dict[str, Any], work: Work) -> bool:
    """A ``messaging.flow_member_result`` for a run we started natively: the same result as a
    run we drove ourselves (finished at an end, or posted so far at a flush)."""
    from shared.flows.native import results_from_member_result

    run = _native_run(session, params)
    if run is None or run.status != "running":
        return run is not None
    native = results_from_member_result(definition_of(run.flow), params)
    run.provider_run_id = run.provider_run_id or native.get("provider_run_id")
    run.steps = [{**step, "outcome": "answered" if step.get("answer") else None}
                 for step in native["steps"]]
    if native.get("end_id"):
        finish(session, run, "finished", work=work, end_id=native["end_id"])
    else:
        post_result(session, run, flush_id=native.get("flush_id"))
    return True


def _native_run(session: Session, params: dict[str, Any]) -> FlowRun | None:
    tag = str(params.get("tag") or "")
    if tag.startswith(NATIVE_TAG_PREFIX):
        run = session.get(FlowRun, tag.removeprefix(NATIVE_TAG_PREFIX))
        if run is not None:
            return run
    provider_run_id = params.get("message_flow_run_id")
    if not provider_run_id:
        return None
    return session.scalars(select(FlowRun).where(
        FlowRun.provider_run_id == str(provider_run_id))).first()


# --- results ------------------------------------------------------------------------------

def result(run: FlowRun, flush_id: str | None = None) -> dict[str, Any]:
    """The run's result as producers receive it (webhook) and read it (``/v1/flow-runs``)."""
    return {"run_id": run.id, "flow": {"name": run.flow.name, "version": run.flow.version},
            "contact": run.contact, "trigger": run.trigger, "status": run.status,
            "native": run.native, "end_id": run.end_id, "flush_id": flush_id,
            "timed_out": run.timed_out, "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at), "steps": list(run.steps)}


def post_result(session: Session, run: FlowRun, flush_id: str | None = None) -> None:
    """Store and post the result: a ``flow_result`` event goes to the app's callback URL."""
    add_app_event(session, "flow_result", result(run, flush_id), run.app_id)


def stats(session: Session, flow_versions: list[Flow]) -> list[dict[str, Any]]:
    """Per version: runs started/finished/timed out/failed and each step's answer counts."""
    out = []
    for flow in flow_versions:
        runs = session.scalars(select(FlowRun).where(FlowRun.flow_id == flow.id)).all()
        out.append({"name": flow.name, "version": flow.version,
                    "started": sum(r.status != "starting" for r in runs),
                    "running": sum(r.status == "running" for r in runs),
                    "finished": sum(r.status == "finished" for r in runs),
                    "timed_out": sum(r.timed_out for r in runs),
                    "failed": sum(r.status == "failed" for r in runs),
                    "steps": _answer_counts(definition_of(flow), runs)})
    return out


def _answer_counts(definition: FlowDefinition, runs: Any) -> list[dict[str, Any]]:
    counts: dict[str, dict[str, Any]] = {}
    for step in definition.steps:
        if step.type == "message":
            counts[step.id] = {"step": step.id, "answers": {
                b.id: {"caption": b.caption, "count": 0} for b in step.buttons},
                "text_answers": 0, "timeouts": 0, "failed": 0}
        elif step.type == "question":
            counts[step.id] = {"step": step.id, "answers": {}, "text_answers": 0,
                               "timeouts": 0, "failed": 0}
    for run in runs:
        for entry in run.steps:
            _count(counts.get(entry.get("step_id", "")), entry)
    return list(counts.values())


def _count(bucket: dict[str, Any] | None, entry: dict[str, Any]) -> None:
    if bucket is None:
        return
    answer, outcome = entry.get("answer") or {}, entry.get("outcome")
    if outcome == "timeout" or outcome == "unmatched":
        bucket["timeouts"] += 1
    elif outcome == "failed":
        bucket["failed"] += 1
    elif answer.get("button_id") in bucket["answers"]:
        bucket["answers"][answer["button_id"]]["count"] += 1
    elif "text" in answer:
        bucket["text_answers"] += 1


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


# --- triggers ---------------------------------------------------------------------------------

def triggered_flow(session: Session, *, poke_tag: str | None = None,
                   keyword: str | None = None, app_id: str | None = None) -> Flow | None:
    """The flow a messenger poke tag or an inbound keyword starts (latest versions only):
    ``app_id``'s own flows for a keyword in a reply to that app's message or conversation;
    every app's for a poke, which names no app (a trigger belongs to one app, see
    ``save_definition``)."""
    for flow in latest_flows(session, app_id):
        triggers = definition_of(flow).triggers
        if (poke_tag and poke_tag in triggers.poke_tags) or triggers.matches_keyword(keyword):
            return flow
    return None


def start_triggered(session: Session, flow: Flow, contact: dict[str, Any], trigger: str,
                    work: Work) -> FlowRun | None:
    """Start ``flow`` for a contact who asked for it, unless they are already in it or the
    flow's route cannot reach them (e.g. a keyword by SMS for a messenger-only flow)."""
    from pydantic import ValidationError

    try:
        check_contact(definition_of(flow), contact)
    except ValidationError:
        return None
    busy = session.scalar(select(FlowRun.id).where(
        FlowRun.flow_id.in_(select(Flow.id).where(Flow.app_id == flow.app_id,
                                                  Flow.name == flow.name)),
        FlowRun.contact_key == contact_key(contact),
        FlowRun.status.in_(["starting", "running"])).limit(1))
    if busy is not None:
        return None
    run = create_run(session, flow, contact, flow.app_id, trigger)
    work.tasks.append(Task(tasknames.START_FLOW_RUN, (run.id,)))
    return run


def contact_of_message(request: dict[str, Any]) -> dict[str, Any]:
    """Whom a message went to, as a flow contact (for a keyword in their reply)."""
    contact: dict[str, Any] = {"to": {k: v for k, v in (request.get("to") or {}).items() if v}}
    if request.get("conversation"):
        contact["conversation"] = {k: v for k, v in request["conversation"].items()
                                   if k in ("consumer_id", "advertiser_id", "session_id") and v}
    return contact


def on_conversation_text(session: Session, consumer_id: str, conversation: dict[str, Any],
                         text: str | None, work: Work, app_id: str = DEFAULT_APP) -> None:
    """An in-app message from ``app_id``'s conversation: an answer to that app's running
    run's step, or a keyword that starts one of its flows (another app's run for the same
    consumer id is another conversation)."""
    current = session.scalar(select(FlowRun.current_message_id).where(
        FlowRun.contact_key == f"inapp:{consumer_id}", FlowRun.status == "running",
        FlowRun.app_id == app_id,
        FlowRun.current_message_id.is_not(None)).order_by(FlowRun.updated_at.desc()).limit(1))
    if current and on_reply(session, current, work, text=text):
        return
    flow = triggered_flow(session, keyword=text, app_id=app_id)
    if flow is not None:
        start_triggered(session, flow, {"conversation": conversation}, "keyword", work)
