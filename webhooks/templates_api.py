"""The producer API for message templates: save versions, list them, show one, preview.

``webhooks/templates/`` is the console's Jinja directory; this module is the JSON API. Every
route is scoped to the caller's app: another app's templates are not found.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request

from shared import templates
from shared.db import session_scope
from shared.templates import PreviewRequest, TemplateError, TemplateNotFound
from webhooks.api import BadRequest, _parse
from webhooks.auth import require_api_key

templates_api = Blueprint("templates_api", __name__, url_prefix="/v1")


@templates_api.errorhandler(BadRequest)
def _bad_request(exc: BadRequest):  # type: ignore[no-untyped-def]
    return jsonify(exc.body), exc.status


@templates_api.errorhandler(TemplateNotFound)
def _not_found(exc: TemplateNotFound):  # type: ignore[no-untyped-def]
    return jsonify(error="not_found", message=exc.errors[0]["message"]), 404


@templates_api.errorhandler(TemplateError)
def _template_error(exc: TemplateError):  # type: ignore[no-untyped-def]
    return jsonify(exc.body()), 422


@templates_api.post("/templates")
@require_api_key
def save():  # type: ignore[no-untyped-def]
    """Save a document (JSON, or YAML with a YAML content type) as the next version."""
    document = templates.load_document(request.get_data(as_text=True), request.content_type)
    with session_scope() as session:
        row = templates.save_template(session, g.app_id, document)
        body = {"name": row.name, "version": row.version}
    return jsonify(body), 201


@templates_api.get("/templates")
@require_api_key
def list_all():  # type: ignore[no-untyped-def]
    with session_scope() as session:
        items = [templates.summary(row) for row in templates.latest_templates(session, g.app_id)]
    return jsonify(templates=items)


@templates_api.get("/templates/<name>")
@require_api_key
def show(name: str):  # type: ignore[no-untyped-def]
    """Every version of the template, and the document of the latest (or ``?version=N``)."""
    version = _version_arg()
    with session_scope() as session:
        row = templates.require_template(session, g.app_id, name, version)
        body = {"name": name, "version": row.version, "document": row.document,
                "versions": [templates.summary(v)
                             for v in templates.versions(session, g.app_id, name)]}
    return jsonify(body)


@templates_api.post("/templates/<name>/preview")
@require_api_key
def preview(name: str):  # type: ignore[no-untyped-def]
    """Render with ``data`` and ``locale``: content per channel and the SMS's cost. With a
    ``document`` the unsaved draft is rendered (its compile errors are a 422)."""
    req = _parse(PreviewRequest)
    if req.document is not None:
        document = templates.parse_document({**req.document, "name": name})
        version = None
    else:
        with session_scope() as session:
            row = templates.require_template(session, g.app_id, name, req.version)
            document, version = templates.document_of(row), row.version
    body: dict[str, Any] = {"name": name, "version": version,
                            **templates.preview(document, req.locale, req.data)}
    return jsonify(body)


def _version_arg() -> int | None:
    version = request.args.get("version")
    if version is None:
        return None
    if not version.isdigit() or not 0 < int(version) < 2**31:
        raise BadRequest({"error": "validation_error", "message": "version: a positive integer",
                          "errors": [{"field": "version", "message": "a positive integer"}]},
                         422)
    return int(version)
