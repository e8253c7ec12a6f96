"""``switchboard consent ...``: show, set, import and export the consent registry, and set an
app's own keywords and confirmation texts.

It works on the database directly, like ``switchboard flows``, so it needs no API key;
``--app`` names the producer app the change is recorded for (``default``, the operator).
Refusals print one line naming the field, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import apps, consent
from shared.models import DEFAULT_APP, Consent


class ConsentCliError(Exception):
    """A problem the user can fix, printed without a traceback."""


def add_parser(sub: Any, default_app: str = DEFAULT_APP) -> None:
    """The ``consent`` verb group of the switchboard command."""
    group = sub.add_parser("consent", help="the consent registry: show, set, import, export")
    csub = group.add_subparsers(dest="consent_command", required=True, metavar="action")
    show = csub.add_parser("show", help="an address's record and history")
    setting = csub.add_parser("set", help="opt an address out (or of categories), or back in")
    for action in (show, setting):
        action.add_argument("channel", help="viber, sms, rogerthat or inapp")
        action.add_argument("address", help="a phone, an e-mail or an in-app consumer id")
        action.add_argument("--account", help="the provider account (default: the channel's)")
    setting.add_argument("status", choices=consent.STATUSES)
    setting.add_argument("--category", action="append", default=[],
                         help="only this category (repeat for more)")
    importing = csub.add_parser("import", help="a CSV suppression list (channel,address,...)")
    importing.add_argument("file", help="the CSV file, or - for standard input")
    export = csub.add_parser("export", help="records as CSV (the import format)")
    export.add_argument("--status", choices=consent.STATUSES, default=consent.OPTED_OUT)
    keywords = csub.add_parser("keywords", help="an app's own keywords and confirmations")
    keywords.add_argument("--opt-out", help="comma-separated, e.g. STOP,ARRET ('' resets)")
    keywords.add_argument("--opt-in", help="comma-separated, e.g. START ('' resets)")
    keywords.add_argument("--opt-out-confirmation", help="sent back after an opt-out")
    keywords.add_argument("--opt-in-confirmation", help="sent back after an opt-in")
    for action in (show, setting, importing, export, keywords):
        action.add_argument("--app", default=default_app, help="producer app (default)")


def run(session: Session, args: argparse.Namespace) -> int:
    action = {"show": show, "set": set_status, "import": import_list, "export": export,
              "keywords": keywords}[args.consent_command]
    app_id = _app_id(session, args.app)
    try:
        return action(session, args, app_id)
    except consent.ConsentError as exc:
        raise ConsentCliError(f"{exc.field}: {exc.message}") from None


def _app_id(session: Session, name: str) -> str:
    if name == DEFAULT_APP:
        return DEFAULT_APP
    app = apps.find(session, name)
    if app is None:
        raise ConsentCliError(f"app: no app {name!r} (see `switchboard apps list`)")
    return app.id


def _key(args: argparse.Namespace) -> tuple[str, str, str]:
    address = consent.address_for(args.channel, args.address)
    return args.channel, args.account or consent.default_scope(args.channel), address


def show(session: Session, args: argparse.Namespace, app_id: str) -> int:
    key = _key(args)
    record = consent.find(session, *key)
    body = consent.view(record, *key)
    body["history"] = consent.history(session, record, app_id) if record is not None else []
    print(json.dumps(body, indent=2))
    return 0


def set_status(session: Session, args: argparse.Namespace, app_id: str) -> int:
    key = _key(args)
    record, changed = consent.change(session, *key, consent.Change(
        args.status, tuple(sorted(set(args.category))), source=consent.CLI, app_id=app_id))
    view = consent.view(record, *key)
    what = ", ".join(view["categories"]) or "everything"
    print(f"{view['channel']} {view['address']}: {view['status']}"
          f"{' of ' + what if view['status'] == consent.OPTED_OUT else ''}"
          f"{'' if changed else ' (unchanged)'}")
    return 0


def import_list(session: Session, args: argparse.Namespace, app_id: str) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConsentCliError(f"cannot read {args.file}: {exc}") from None
    counts = consent.apply_import(session, consent.parse_csv(text), app_id)
    print(f"{counts['rows']} rows: {counts['changed']} changed, {counts['skipped']} skipped")
    return 0


def export(session: Session, args: argparse.Namespace, app_id: str) -> int:
    records = session.scalars(select(Consent).where(
        Consent.status == args.status, consent.visible(app_id)).order_by(Consent.id))
    sys.stdout.write(consent.export_csv(records))
    return 0


def keywords(session: Session, args: argparse.Namespace, app_id: str) -> int:
    """An app's own lists (a list given replaces the global one; '' goes back to it)."""
    app = apps.find(session, app_id)
    if app is None:
        raise ConsentCliError("app: the default app's keywords are SWITCHBOARD_OPT_OUT_KEYWORDS "
                              "and SWITCHBOARD_OPT_IN_KEYWORDS; name an app with --app")
    own = dict(app.consent_settings or {})
    for name, value in (("opt_out_keywords", args.opt_out), ("opt_in_keywords", args.opt_in),
                        ("opt_out_confirmation", args.opt_out_confirmation),
                        ("opt_in_confirmation", args.opt_in_confirmation)):
        if value is not None:
            own[name] = ([k.strip() for k in value.split(",") if k.strip()]
                         if name.endswith("keywords") else value.strip()) or None
    app.consent_settings = {k: v for k, v in own.items() if v}
    effective = consent.app_settings(session, app.id)
    print(json.dumps({"app": app.name, "opt_out_keywords": sorted(effective.opt_out),
                      "opt_in_keywords": sorted(effective.opt_in),
                      "opt_out_confirmation": effective.opt_out_confirmation,
                      "opt_in_confirmation": effective.opt_in_confirmation}, indent=2))
    return 0
