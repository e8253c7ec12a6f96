"""The producer API for message flows: save versions, launch runs, read results and
aggregates, make action links; and ``GET /l/<token>``, the public side of an action link.

Runs are created here (status ``starting``) and started by a worker task registered on the
same unit of work (published after its commit), so a launch for many contacts answers at once
and a lost broker message is re-published by the recovery sweep.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request
from pydantic import ValidationError

from shared import tasknames
from shared.db import session_scope
from shared.flows import links, runtime
from shared.flows.definition import FlowDocumentError, load_definition
from shared.flows.requests import FlowLinkRequest, FlowStartRequest
from shared.models import FlowRun
from shared.schemas import error_list
from webhooks.api import BadRequest, _parse
from webhooks.auth import require_api_key
from webhooks.publishing import recoverable_unit_of_work

flows = Blueprint("flows", __name__)


@flows.errorhandler(BadRequest)
def _bad_request(exc: BadRequest):  # type: ignore[no-untyped-def]
    return jsonify(exc.body), exc.status


def _not_found(what: str):  # type: ignore[no-untyped-def]
    return jsonify(error="not_found", message=f"no {what}"), 404


@flows.post("/v1/flows")
@require_api_key
def save_flow():  # type: ignore[no-untyped-def]
    """Save a definition (JSON, or YAML with a YAML content type) as the next version."""
    try:
        definition = load_definition(request.get_data(as_text=True), request.content_type)
    except FlowDocumentError as exc:
        return jsonify(error="invalid_document", message=exc.message,
                       errors=[{"field": exc.field, "message": exc.message}]), 400
    except ValidationError as exc:
        return jsonify(error="validation_error", message="the flow is not valid",
                       errors=error_list(exc)), 422
    with session_scope() as session:
        try:
            flow = runtime.save_definition(session, g.app_id, definition)
        except runtime.TriggerTaken as exc:
            return jsonify(error="conflict", message=exc.message,
                           errors=[{"field": exc.field, "message": exc.message}]), 409
        body = {"name": flow.name, "version": flow.version}
    return jsonify(body), 201


@flows.get("/v1/flows")
@require_api_key
def list_flows():  # type: ignore[no-untyped-def]
    with session_scope() as session:
        items = [_summary(flow) for flow in runtime.latest_flows(session, g.app_id)]
    return jsonify(flows=items)


@flows.get("/v1/flows/<name>")
@require_api_key
def show_flow(name: str):  # type: ignore[no-untyped-def]
    version = request.args.get("version", type=int)
    if version is not None and not 0 < version < 2**63:  # past 64 bits the lookup would fail
        return _not_found(f"flow {name} version {version}")
    with session_scope() as session:
        flow = runtime.find_flow(session, g.app_id, name, version)
        if flow is None:
            return _not_found(f"flow {name}" + (f" version {version}" if version else ""))
        return jsonify({**_summary(flow), "definition": flow.definition})


def _summary(flow: Any) -> dict[str, Any]:
    definition = flow.definition
    return {"name": flow.name, "version": flow.version,
            "created_at": flow.created_at.isoformat() + "Z",
            "route": definition.get("route"), "native": definition.get("native", False),
            "triggers": definition.get("triggers", {}), "steps": len(definition["steps"])}


@flows.post("/v1/flows/<name>/start")
@require_api_key
def start_flow(name: str):  # type: ignore[no-untyped-def]
    """Launch for the listed contacts, or ``{"all": true}`` for every consenting contact."""
    req = _parse(FlowStartRequest)
    with recoverable_unit_of_work() as work:
        flow = runtime.find_flow(work.session, g.app_id, name, req.version)
        if flow is None:
            return _not_found(f"flow {name}")
        definition = runtime.definition_of(flow)
        contacts = ([c.model_dump(mode="json", exclude_none=True) for c in req.contacts]
                    if req.contacts else runtime.consenting_contacts(work.session, definition,
                                                         g.app_id, req.category))
        _check_contacts(definition, contacts)
        runs = [runtime.create_run(work.session, flow, contact, g.app_id, "api", req)
                for contact in contacts]
        for run in runs:
            work.task(tasknames.START_FLOW_RUN, run.id,
                      queue=tasknames.send_queue(req.priority))
        body = {"flow": {"name": flow.name, "version": flow.version},
                "runs": [{"id": run.id, "contact": run.contact} for run in runs]}
    return jsonify(body), 202


def _check_contacts(definition: Any, contacts: list[dict[str, Any]]) -> None:
    """Every contact must be reachable on the flow's route; refuse naming the first that
    is not (``contacts.<n>.to.phone``) before any run exists."""
    for index, contact in enumerate(contacts):
        try:
            runtime.check_contact(definition, contact)
        except ValidationError as exc:
            errors = [{**e, "field": f"contacts.{index}.{e['field']}"} for e in error_list(exc)]
            raise BadRequest({"error": "validation_error", "message": "a contact cannot be "
                              "reached on the flow's route", "errors": errors}, 422) from None


@flows.get("/v1/flows/<name>/stats")
@require_api_key
def flow_stats(name: str):  # type: ignore[no-untyped-def]
    """Per version: runs started, finished, timed out, failed; answer counts per step."""
    with session_scope() as session:
        versions = runtime.flow_versions(session, g.app_id, name)
        if not versions:
            return _not_found(f"flow {name}")
        return jsonify(name=name, versions=runtime.stats(session, versions))


@flows.post("/v1/flows/<name>/links")
@require_api_key
def make_link(name: str):  # type: ignore[no-untyped-def]
    """An action link that starts the flow for one contact (to put in an SMS, e-mail, page)."""
    req = _parse(FlowLinkRequest)
    with session_scope() as session:
        flow = runtime.find_flow(session, g.app_id, name)
        if flow is None:
            return _not_found(f"flow {name}")
        contact = req.contact.model_dump(mode="json", exclude_none=True)
        _check_contacts(runtime.definition_of(flow), [contact])
        link, token = links.make_link(session, flow, contact, req.single_use, req.expires_in)
        body = {"url": f"{request.host_url}l/{token}", "token": token,
                "single_use": link.single_use,
                "expires_at": link.expires_at.isoformat() + "Z" if link.expires_at else None}
    return jsonify(body), 201


@flows.get("/v1/flow-runs/<run_id>")
@require_api_key
def show_run(run_id: str):  # type: ignore[no-untyped-def]
    with session_scope() as session:
        run = session.get(FlowRun, run_id)
        if run is None or run.app_id != g.app_id:
            return _not_found(f"flow run {run_id}")
        return jsonify(runtime.result(run))


@flows.get("/l/<token>")
def follow_link(token: str):  # type: ignore[no-untyped-def]
    """Public: whoever holds the link starts the flow made for its contact."""
    try:
        with recoverable_unit_of_work() as work:
            run_id = links.follow(work.session, token).id
            work.task(tasknames.START_FLOW_RUN, run_id)
    except links.LinkRefused as exc:
        return _link_page(exc.message, exc.status)
    return _link_page("Thanks! The conversation is on its way to you.", 200, run_id)


def _link_page(message: str, status: int, run_id: str | None = None):  # type: ignore[no-untyped-def]
    """JSON for programs, a minimal page for people who clicked the link."""
    if request.accept_mimetypes.best == "application/json":
        body = {"message": message, "run_id": run_id} if status == 200 else {
            "error": "not_found" if status == 404 else "gone", "message": message}
        return jsonify(body), status
    from markupsafe import escape

    html = (f"<!doctype html><meta charset=utf-8><title>Switchboard</title>"
            f"<p>{escape(message)}</p>")
    return html, status, {"Content-Type": "text/html; charset=utf-8"}
