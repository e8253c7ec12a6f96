"""The console's template pages: the list, and an editor that previews while you type.

``/console/templates`` lists the app's templates; ``/console/templates/<name>`` (and
``/console/templates/new``) edit one as YAML beside sample data and a locale. Every edit is
rendered by ``POST /console/templates/preview``, which runs the preview of ``POST
/v1/templates/<name>/preview`` (``shared.templates.preview``) on the unsaved text: content
per channel and the SMS's encoding, length and segments, or the errors naming locale, field
and line. Saving (``POST /console/templates``) stores the next version as the API does.

Everything is the logged-in key's app: another app's template is a 404. JSON writes must be
``application/json`` from this origin, as in the flow designer (``webhooks.designer``).
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from flask import Blueprint, Response, g, jsonify, render_template, request, url_for

from shared import templates
from shared.db import session_scope
from shared.templates import TemplateError
from webhooks.console import _harden, require_operator
from webhooks.designer import _refused_write

console_templates = Blueprint("console_templates", __name__, url_prefix="/console",
                              template_folder="templates")
console_templates.after_request(_harden)
NEW_TEMPLATE = """name: order_shipped
default_locale: en
locales:
  en:
    text: "Order {{ order.id }} has shipped: {{ order.total | currency('EUR') }}"
  nl-BE:
    text: "Bestelling {{ order.id }} is verzonden: {{ order.total | currency('EUR') }}"
    sms_text: "Bestelling {{ order.id }} is onderweg"
"""
SAMPLE_DATA = {"order": {"id": "A-17", "total": 12.5}}


@console_templates.get("/templates")
@require_operator
def index() -> str:
    with session_scope() as session:
        rows = [templates.summary(row)
                for row in templates.latest_templates(session, g.app_id)]
    return render_template("console/templates.html", templates=rows)


@console_templates.get("/templates/new")
@require_operator
def new() -> str:
    return _editor("", NEW_TEMPLATE, [], None)


@console_templates.get("/templates/<name>")
@require_operator
def edit(name: str) -> tuple[str, int] | str:
    """The latest version (or ``?version=``) as YAML, with its versions listed."""
    version = request.args.get("version", type=int)
    with session_scope() as session:
        row = templates.find_template(session, g.app_id, name[:100],
                                      version if version and 0 < version < 2**31 else None)
        if row is None or (version is not None and row.version != version):
            return render_template("console/error.html", title="Not found",
                                   message=f"no template {name}"), 404
        versions = [templates.summary(v) for v in templates.versions(session, g.app_id, name)]
        text = yaml.safe_dump(row.document, allow_unicode=True, sort_keys=False, width=100)
        return _editor(name, text, versions, row.version)


def _editor(name: str, text: str, versions: list[dict[str, Any]],
            version: int | None) -> str:
    return render_template(
        "console/template_edit.html", name=name, text=text, versions=versions,
        version=version, sample=json.dumps(SAMPLE_DATA, indent=2),
        urls={"preview": url_for("console_templates.preview"),
              "save": url_for("console_templates.save"),
              "edit": url_for("console_templates.edit", name="__name__")})


@console_templates.post("/templates/preview")
@require_operator
def preview() -> tuple[Response, int] | Response:
    """``{"document": "<yaml>", "data": {...}, "locale": "nl-BE"}``: the rendered content, or
    the errors (422) naming locale, field and line."""
    refused = _refused_write()
    if refused is not None:
        return refused
    body = request.get_json(silent=True) or {}
    try:
        document = templates.load_document(str(body.get("document") or ""),
                                           "application/yaml")
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        locale = body.get("locale") if isinstance(body.get("locale"), str) else None
        return jsonify(templates.preview(document, locale or None, data))
    except TemplateError as exc:
        return jsonify(exc.body()), 422


@console_templates.post("/templates")
@require_operator
def save() -> tuple[Response, int]:
    """Store the edited YAML as the template's next version."""
    refused = _refused_write()
    if refused is not None:
        return refused
    body = request.get_json(silent=True) or {}
    try:
        document = templates.load_document(str(body.get("document") or ""),
                                           "application/yaml")
    except TemplateError as exc:
        return jsonify(exc.body()), 422
    with session_scope() as session:
        row = templates.save_template(session, g.app_id, document)
        answer = {"name": row.name, "version": row.version,
                  "url": url_for("console_templates.edit", name=row.name)}
    return jsonify(answer), 201
