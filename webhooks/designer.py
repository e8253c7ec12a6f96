"""The console's flow designer and flow results: pages and the JSON they call.

``/console/flows/new`` and ``/console/flows/<name>/edit`` draw a flow on a Drawflow canvas
(``static/console/designer.js``) with a YAML view beside it; every edit is checked by
``POST /console/flows/check``, which runs ``shared.flows.definition.diagnose`` (the rules of
``POST /v1/flows``) and answers each problem with its step. Saving (``POST /console/flows``)
stores the next version as the API does. "Try it" starts a run for a test contact and the
page polls ``/console/flow-runs/<id>``. ``/console/flows/<name>`` shows each version's funnel
and answers as charts, and exports the runs as CSV.

Everything is the logged-in key's app: another app's flow is a 404. JSON writes must be
``application/json`` from this origin, which a cross-site form cannot send with the
browser's stored login.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, render_template, request, url_for
from pydantic import ValidationError
from sqlalchemy import select

from shared import tasknames
from shared.db import session_scope
from shared.flows import design, runtime
from shared.flows.definition import FlowDocumentError, diagnose, parse_document
from shared.flows.requests import FlowStartRequest
from shared.models import FlowRun
from shared.schemas import error_list
from shared.settings import get_settings
from webhooks.console import _harden, require_operator
from webhooks.publishing import recoverable_unit_of_work

designer = Blueprint("designer", __name__, url_prefix="/console", template_folder="templates")
designer.after_request(_harden)
STEP_TYPES = ("message", "question", "flush", "end")
RUNS_IN_CSV = 100_000


def _not_found(what: str) -> tuple[str, int]:
    return render_template("console/error.html", title="Not found", message=f"no {what}"), 404


def _json_error(status: int, error: str, message: str,
                errors: list[dict[str, Any]] | None = None) -> tuple[Response, int]:
    return jsonify(error=error, message=message,
                   errors=errors or [{"field": "body", "message": message}]), status


def _refused_write() -> tuple[Response, int] | None:
    """Only JSON from this origin: the browser would send its stored basic login with a
    cross-site form post too, and a form cannot send ``application/json``."""
    if not request.is_json:
        return _json_error(415, "unsupported_media_type", "send application/json")
    origin = request.headers.get("Origin")
    if origin and origin.rstrip("/") != request.host_url.rstrip("/"):
        return _json_error(403, "forbidden", "cross-origin writes are refused")
    return None


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def _document_of(body: dict[str, Any]) -> dict[str, Any]:
    """The flow the request carries: ``definition`` (the canvas's object) or ``document``
    (the YAML view's text); raises ``FlowDocumentError`` naming the field."""
    if isinstance(body.get("document"), str):
        return parse_document(body["document"])
    if isinstance(body.get("definition"), dict):
        return body["definition"]
    raise FlowDocumentError("definition", "send the flow as definition (an object) or "
                                          "document (YAML text)")


# --- pages ---------------------------------------------------------------------------------

def _versions(session: Any, name: str) -> list[dict[str, Any]]:
    return [{"version": f.version, "created_at": f.created_at.isoformat() + "Z",
             "url": url_for("designer.edit", name=name, version=f.version)}
            for f in runtime.flow_versions(session, g.app_id, name)]


def _page(mode: str, definition: dict[str, Any], versions: list[dict[str, Any]],
          version: int | None) -> str:
    data = {"mode": mode, "version": version,
            "latest": versions[-1]["version"] if versions else None,
            "versions": versions, "definition": design.with_layout(definition),
            "brandings": design.parse_brandings(get_settings().rogerthat_brandings),
            "step_types": STEP_TYPES,
            "urls": {"check": url_for("designer.check"), "save": url_for("designer.save"),
                     "edit": url_for("designer.edit", name="__name__"),
                     "results": url_for("designer.results", name="__name__"),
                     "try": url_for("designer.try_flow", name="__name__"),
                     "run": url_for("designer.run", run_id="__id__")}}
    return render_template("console/designer.html", data=data, mode=mode,
                           name=definition.get("name") or "", version=version,
                           versions=versions)


@designer.get("/flows/new")
@require_operator
def new() -> str:
    """An empty canvas; the flow exists once it is saved."""
    return _page("new", {"name": "", "route": ["rogerthat"], "steps": []}, [], None)


@designer.get("/flows/<name>/edit")
@require_operator
def edit(name: str) -> tuple[str, int] | str:
    """The latest version, editable; an older one (``?version=``) read-only, from which a
    new version can be started."""
    version = request.args.get("version", type=int)
    with session_scope() as session:
        flow = runtime.find_flow(session, g.app_id, name[:100],
                                 version if version and 0 < version < 2**31 else None)
        if flow is None or (version is not None and flow.version != version):
            return _not_found(f"flow {name}" + (f" version {version}" if version else ""))
        versions = _versions(session, name)
        latest = versions[-1]["version"] == flow.version
        return _page("edit" if latest else "readonly", dict(flow.definition), versions,
                     flow.version)


@designer.get("/flows/<name>")
@require_operator
def results(name: str) -> tuple[str, int] | str:
    """Each version's funnel and each step's answers, as charts and as tables."""
    with session_scope() as session:
        versions = runtime.flow_versions(session, g.app_id, name[:100])
        if not versions:
            return _not_found(f"flow {name}")
        stats = runtime.stats(session, versions)
        texts = {(f.version, s["id"]): (s.get("type"), s.get("text"))
                 for f in versions for s in f.definition["steps"]}
    for entry in stats:
        for step in entry["steps"]:
            step["type"], step["text"] = texts.get((entry["version"], step["step"]),
                                                   (None, None))
    stats.reverse()  # newest first
    return render_template("console/flow_results.html", name=name, versions=stats,
                           data={"versions": stats})


@designer.get("/flows/<name>/results.csv")
@require_operator
def results_csv(name: str) -> Response | tuple[str, int]:
    """Every run of every version, one row each, with the answer given at each step."""
    with session_scope() as session:
        versions = runtime.flow_versions(session, g.app_id, name[:100])
        if not versions:
            return _not_found(f"flow {name}")
        step_ids = list(dict.fromkeys(s["id"] for f in versions
                                      for s in f.definition["steps"]
                                      if s.get("type") in ("message", "question")))
        runs = session.scalars(select(FlowRun).where(
            FlowRun.flow_id.in_([f.id for f in versions]), FlowRun.app_id == g.app_id)
            .order_by(FlowRun.started_at, FlowRun.id).limit(RUNS_IN_CSV)).all()
        body = design.results_csv(step_ids, [runtime.result(run) for run in runs])
    return Response(body, content_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{name[:100]}-results.csv"'})


# --- JSON for the designer -------------------------------------------------------------------

@designer.post("/flows/check")
@require_operator
def check() -> tuple[Response, int] | Response:
    """The flow as the canvas and the YAML view both need it, and every problem with it,
    found by the rules ``POST /v1/flows`` applies (one rule, one place)."""
    refused = _refused_write()
    if refused:
        return refused
    try:
        data = _document_of(_body())
    except FlowDocumentError as exc:
        return jsonify(valid=False, definition=None, document=None, errors=[
            {"field": exc.field, "message": exc.message, "step": None}])
    _, problems = diagnose(data)
    return jsonify(valid=not problems, definition=design.with_layout(data),
                   document=design.to_yaml(data), errors=problems)


@designer.post("/flows")
@require_operator
def save() -> tuple[Response, int]:
    """Save the flow as its next version, as ``POST /v1/flows`` does for this app."""
    refused = _refused_write()
    if refused:
        return refused
    try:
        data = _document_of(_body())
    except FlowDocumentError as exc:
        return _json_error(400, "invalid_document", exc.message,
                           [{"field": exc.field, "message": exc.message, "step": None}])
    definition, problems = diagnose(data)
    if definition is None or problems:
        return _json_error(422, "validation_error", "the flow is not valid", problems)
    with session_scope() as session:
        try:
            flow = runtime.save_definition(session, g.app_id, definition)
        except runtime.TriggerTaken as exc:
            return _json_error(409, "conflict", exc.message,
                               [{"field": exc.field, "message": exc.message, "step": None}])
        body = {"name": flow.name, "version": flow.version,
                "url": url_for("designer.edit", name=flow.name),
                "results": url_for("designer.results", name=flow.name)}
    return jsonify(body), 201


@designer.post("/flows/<name>/try")
@require_operator
def try_flow(name: str) -> tuple[Response, int]:
    """Start one run of a saved version for a test contact (``{"contact": {"to": ...},
    "version": n}``), as ``POST /v1/flows/<name>/start`` would."""
    refused = _refused_write()
    if refused:
        return refused
    body = _body()
    try:
        req = FlowStartRequest.model_validate({"contacts": [body.get("contact")],
                                               "version": body.get("version")})
    except ValidationError as exc:
        errors = [{**e, "field": e["field"].replace("contacts.0", "contact", 1)}
                  for e in error_list(exc)]
        return _json_error(422, "validation_error", "the test contact is not valid", errors)
    with recoverable_unit_of_work() as work:
        flow = runtime.find_flow(work.session, g.app_id, name[:100], req.version)
        if flow is None:
            return _json_error(404, "not_found", f"no flow {name}")
        contact = req.contacts[0].model_dump(mode="json", exclude_none=True)
        try:
            runtime.check_contact(runtime.definition_of(flow), contact)
        except ValidationError as exc:
            return _json_error(422, "validation_error", "the flow's route cannot reach this "
                               "contact", [{**e, "field": f"contact.{e['field']}"}
                                           for e in error_list(exc)])
        run = runtime.create_run(work.session, flow, contact, g.app_id, "console")
        work.task(tasknames.START_FLOW_RUN, run.id)
        answer = {"run_id": run.id, "version": flow.version,
                  "url": url_for("designer.run", run_id=run.id)}
    return jsonify(answer), 202


@designer.get("/flow-runs/<run_id>")
@require_operator
def run(run_id: str) -> tuple[Response, int] | Response:
    """A run as the designer polls it: its result so far and the step it is on."""
    with session_scope() as session:
        found = session.get(FlowRun, run_id[:36])
        if found is None or found.app_id != g.app_id:
            return _json_error(404, "not_found", f"no flow run {run_id}")
        return jsonify({**runtime.result(found), "current_step": found.current_step})

