"""``switchboard templates ...``: load, list, show and preview message templates.

Like ``switchboard flows`` it works on the database directly, so it needs no API key;
``--app`` picks the producer app (``default``). Refusals print one line per field, naming
the locale, field and line of a template that does not compile.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from shared import apps, templates
from shared.models import DEFAULT_APP
from shared.templates import TemplateError


class TemplateCliError(Exception):
    """A problem the user can fix, printed without a traceback."""


def add_parser(sub: Any, default_app: str = DEFAULT_APP) -> None:
    """The ``templates`` verb group of the switchboard command."""
    group = sub.add_parser("templates", help="message templates: load, list, show, preview")
    tsub = group.add_subparsers(dest="templates_command", required=True, metavar="action")
    load = tsub.add_parser("load", help="save a YAML or JSON template as a new version")
    load.add_argument("file")
    listing = tsub.add_parser("list", help="every template's latest version")
    show = tsub.add_parser("show", help="print a template's versions and document")
    show.add_argument("name")
    show.add_argument("--version", type=int)
    preview = tsub.add_parser("preview", help="render with data: text per channel, SMS cost")
    preview.add_argument("name")
    preview.add_argument("--locale", help="BCP 47, e.g. nl-BE (falls back to nl, default)")
    preview.add_argument("--data", default="{}", help="the placeholders as a JSON object")
    preview.add_argument("--version", type=int)
    preview.add_argument("--json", action="store_true", help="print the raw JSON")
    for action in (load, listing, show, preview):
        action.add_argument("--app", default=default_app, help="producer app (default)")


def run(session: Session, args: argparse.Namespace) -> int:
    action = {"load": load, "list": list_templates, "show": show, "preview": preview}
    try:
        return action[args.templates_command](session, args)
    except TemplateError as exc:
        raise TemplateCliError(describe(exc, getattr(args, "file", None) or args.name)) from None


def load(session: Session, args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateCliError(f"cannot read {path}: {exc.strerror}") from None
    kind = "application/json" if path.suffix.lower() == ".json" else "application/yaml"
    document = templates.load_document(text, kind)
    row = templates.save_template(session, app_of(session, args), document)
    print(f"saved {row.name} version {row.version}")
    return 0


def list_templates(session: Session, args: argparse.Namespace) -> int:
    rows = templates.latest_templates(session, app_of(session, args))
    if not rows:
        print("no templates yet: switchboard templates load FILE")
    for row in rows:
        summary = templates.summary(row)
        print(f"{row.name:<30} v{row.version:<4} {', '.join(summary['locales'])}")
    return 0


def show(session: Session, args: argparse.Namespace) -> int:
    app_id = app_of(session, args)
    row = templates.require_template(session, app_id, args.name, args.version)
    print(json.dumps({"name": row.name, "version": row.version, "document": row.document,
                      "versions": [templates.summary(v) for v in
                                   templates.versions(session, app_id, args.name)]}, indent=2))
    return 0


def preview(session: Session, args: argparse.Namespace) -> int:
    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as exc:
        raise TemplateCliError(f"--data is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TemplateCliError("--data must be a JSON object")
    row = templates.require_template(session, app_of(session, args), args.name, args.version)
    body = templates.preview(templates.document_of(row), args.locale, data)
    if args.json:
        print(json.dumps({"name": row.name, "version": row.version, **body}, indent=2))
        return 0
    print(f"{row.name} v{row.version}, locale {body['locale']}")
    for channel, content in body["channels"].items():
        print(f"  {channel:<10} {content['text']!r}")
    if body["sms"]:
        sms = body["sms"]
        print(f"  SMS: {sms['encoding']}, {sms['length']} of {sms['per_segment']} per "
              f"segment, {sms['segments']} segment(s)")
    return 0


def describe(exc: TemplateError, where: str) -> str:
    return "\n".join(f"{where}: invalid {e['field']}: {e['message']}" for e in exc.errors)


def app_of(session: Session, args: argparse.Namespace) -> str:
    name = getattr(args, "app", DEFAULT_APP)
    if name == DEFAULT_APP:
        return DEFAULT_APP
    app = apps.find(session, name)
    if app is None:
        raise TemplateCliError(f"no app {name} (see switchboard apps list)")
    return app.id
