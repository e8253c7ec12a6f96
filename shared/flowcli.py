"""``switchboard flows ...``: manage and launch message flows from the terminal.

The CLI works on the database directly (like ``switchboard status``) and publishes run starts
through the broker (registered on the unit of work that creates the runs, so they leave only
once it commits), so it needs no API key; ``--app`` picks the producer app (``default``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from shared import apps, tasknames
from shared.flows import runtime
from shared.flows.definition import FlowDocumentError, load_definition
from shared.flows.requests import FlowContact
from shared.models import DEFAULT_APP
from shared.schemas import error_list
from shared.uow import UnitOfWork


class FlowCliError(Exception):
    """A problem the user can fix, printed without a traceback."""


def load(session: Session, args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowCliError(f"cannot read {path}: {exc.strerror}") from None
    kind = "application/json" if path.suffix.lower() == ".json" else "application/yaml"
    try:
        definition = load_definition(text, kind)
    except FlowDocumentError as exc:
        raise FlowCliError(f"{path}: {exc.message}") from None
    except ValidationError as exc:
        raise FlowCliError(_fields(exc, str(path))) from None
    try:
        flow = runtime.save_definition(session, _app(session, args), definition)
    except runtime.TriggerTaken as exc:
        raise FlowCliError(f"{path}: {exc}") from None
    print(f"saved {flow.name} version {flow.version}")
    return 0


def list_flows(session: Session, args: argparse.Namespace) -> int:
    rows = runtime.latest_flows(session, getattr(args, "app", None) and _app(session, args))
    if not rows:
        print("no flows yet: switchboard flows load FILE")
    for flow in rows:
        route = " -> ".join(flow.definition.get("route", []))
        native = " (native)" if flow.definition.get("native") else ""
        print(f"{flow.name:<30} v{flow.version:<4} {route}{native}")
    return 0


def show(session: Session, args: argparse.Namespace) -> int:
    flow = _flow(session, args)
    print(json.dumps({"name": flow.name, "version": flow.version,
                      "definition": flow.definition}, indent=2))
    return 0


def start(work: UnitOfWork, args: argparse.Namespace) -> list[str]:
    """Create the runs and register their start tasks on ``work``; returns the run ids, for
    the caller to print once the unit has committed and published them."""
    session = work.session
    flow = _flow(session, args)
    definition = runtime.definition_of(flow)
    contacts = _contacts(args) or (runtime.consenting_contacts(session, definition,
                                                                  flow.app_id)
                                   if args.all else [])
    if not contacts:
        raise FlowCliError("give --to, --email or --consumer (or --all)")
    for contact in contacts:
        try:
            runtime.check_contact(definition, contact)
        except ValidationError as exc:
            raise FlowCliError(_fields(exc, f"contact {contact}")) from None
    runs = [runtime.create_run(session, flow, c, flow.app_id, "cli") for c in contacts]
    for run in runs:
        work.task(tasknames.START_FLOW_RUN, run.id)
    return [run.id for run in runs]


def stats(session: Session, args: argparse.Namespace) -> int:
    versions = runtime.flow_versions(session, _app(session, args), args.name)
    if not versions:
        raise FlowCliError(f"no flow {args.name}")
    for entry in runtime.stats(session, versions):
        print(f"{entry['name']} v{entry['version']}: started {entry['started']}, "
              f"finished {entry['finished']}, timed out {entry['timed_out']}, "
              f"failed {entry['failed']}, running {entry['running']}")
        for step in entry["steps"]:
            counts = ", ".join(f"{a['caption']}: {a['count']}" for a in step["answers"].values())
            extra = f"; text answers: {step['text_answers']}" if step["text_answers"] else ""
            print(f"  {step['step']:<24} {counts}{extra}; timeouts: {step['timeouts']}")
    return 0


def run(session: Session, args: argparse.Namespace) -> int:
    from shared.models import FlowRun

    found = session.get(FlowRun, args.run_id)
    if found is None or found.app_id != _app(session, args):
        raise FlowCliError(f"no flow run {args.run_id}")
    print(json.dumps(runtime.result(found), indent=2))
    return 0


def _contacts(args: argparse.Namespace) -> list[dict[str, Any]]:
    raw = ([{"to": {"phone": p}} for p in args.to] + [{"to": {"email": e}} for e in args.email]
           + [{"conversation": {"consumer_id": c}} for c in args.consumer])
    contacts = []
    for item in raw:
        try:
            contacts.append(FlowContact.model_validate(item).model_dump(
                mode="json", exclude_none=True))
        except ValidationError as exc:
            raise FlowCliError(_fields(exc, "contact")) from None
    return contacts


def _flow(session: Session, args: argparse.Namespace) -> Any:
    flow = runtime.find_flow(session, _app(session, args), args.name,
                             getattr(args, "version", None))
    if flow is None:
        raise FlowCliError(f"no flow {args.name}")
    return flow


def _app(session: Session, args: argparse.Namespace) -> str:
    name = getattr(args, "app", DEFAULT_APP)
    if name == DEFAULT_APP:
        return DEFAULT_APP
    app = apps.find(session, name)
    if app is None:
        raise FlowCliError(f"no app {name} (see switchboard apps list)")
    return app.id


def _fields(exc: ValidationError, where: str) -> str:
    return "\n".join(f"{where}: invalid {e['field']}: {e['message']}" for e in error_list(exc))
