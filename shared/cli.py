"""The switchboard command: run everything locally, send, inspect, migrate.

Its --help is plain text (argparse prints it as is) and every verb's help ends with an example
(``EXAMPLES``, added by ``_add_examples``), so a person can copy a working line.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from shared.schemas import error_list


DESCRIPTION = "Switchboard: run everything locally, send messages, inspect them, migrate."

# What each verb's --help ends with (a verb without one fails tests/unit/test_cli.py): keyed
# by the words after "switchboard"; the first line of the top level's is where to begin.
EXAMPLES: dict[str, list[str]] = {
    "": ["switchboard up --demo", "switchboard send --to +32470120000 --text Hi",
         "switchboard status <message id>", "switchboard logs worker -f"],
    "up": ["switchboard up --demo", "switchboard up --port 8080 --verbose"],
    "logs": ["switchboard logs", "switchboard logs worker -f"],
    "demo": ["SWITCHBOARD_API_KEYS=<key> switchboard demo --api http://127.0.0.1:8000"],
    "send": ["switchboard send --to +32470120000 --route viber,sms --text Hi "
             "--sms-text 'Hi (SMS)'",
             "switchboard send --to +32470120000 --template order_shipped --locale nl-BE "
             "--data '{\"order\": {\"id\": \"A-17\"}}'",
             "switchboard send --to +32470120000 --route sms --text 'Sale starts' "
             "--send-at 2026-12-24T09:00:00+01:00 --valid-until 2026-12-24T18:00:00+01:00 "
             "--quiet-hours 21:00-08:00"],
    "seal": ["switchboard seal <message id>"],
    "friends": ["switchboard friends invite ann@example.com --name Ann"],
    "friends invite": ["switchboard friends invite ann@example.com --name Ann"],
    "friends break-up": ["switchboard friends break-up ann@example.com"],
    "friends list": ["switchboard friends list"],
    "conversations": ["switchboard conversations user-42"],
    "conversation": ["switchboard conversation <conversation id or VisitId>"],
    "flows": ["switchboard flows load booking.yaml"],
    "flows load": ["switchboard flows load booking.yaml"],
    "flows list": ["switchboard flows list"],
    "flows show": ["switchboard flows show booking --version 2"],
    "flows start": ["switchboard flows start booking --email ann@example.com --to +32470120000"],
    "flows stats": ["switchboard flows stats booking"],
    "flows run": ["switchboard flows run <run id>"],
    "templates": ["switchboard templates load order_shipped.yaml"],
    "templates load": ["switchboard templates load order_shipped.yaml"],
    "templates list": ["switchboard templates list"],
    "templates show": ["switchboard templates show order_shipped --version 2"],
    "templates preview": ["switchboard templates preview order_shipped --locale nl-BE "
                          "--data '{\"order\": {\"id\": \"A-17\"}}'"],
    "consent": ["switchboard consent show sms +32470120000"],
    "consent show": ["switchboard consent show sms +32470120000"],
    "consent set": ["switchboard consent set sms +32470120000 opted_out --category marketing"],
    "consent import": ["switchboard consent import suppression.csv --app shop"],
    "consent export": ["switchboard consent export --status opted_out"],
    "consent keywords": ["switchboard consent keywords --app shop --opt-out STOP,ARRET "
                         "--opt-out-confirmation 'You will get no more messages'"],
    "status": ["switchboard status <message id> --json"],
    "apps": ["switchboard apps create shop --callback-url https://shop.example/events"],
    "apps create": ["switchboard apps create shop --callback-url https://shop.example/events"],
    "apps list": ["switchboard apps list"],
    "apps rotate-secret": ["switchboard apps rotate-secret shop --overlap 2h"],
    "apps update": ["switchboard apps update shop --quiet-hours 21:00-08:00"],
    "cancel": ["switchboard cancel <message id>", "switchboard cancel <campaign id> --campaign"],
    "db": ["switchboard db upgrade"],
    "flower": ["FLOWER_BASIC_AUTH=admin:secret switchboard flower --port 5555"],
    "simulator": ["switchboard simulator --port 8025"],
}


def _verb_help(parent: argparse.ArgumentParser | None, name: str) -> str | None:
    """The one-line help a verb has in its parent's list, as its own description."""
    for action in parent._actions if parent is not None else ():
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name and choice.help:
                    return choice.help[0].upper() + choice.help[1:] + "."
    return None


def _add_examples(parser: argparse.ArgumentParser, path: str = "",
                  parent: argparse.ArgumentParser | None = None) -> None:
    """End this parser's help, and every verb's below it, with its lines from ``EXAMPLES``
    (kept as written: the raw formatter does not rewrap them)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    if parser.description is None:
        parser.description = _verb_help(parent, path.rsplit(" ", 1)[-1])
    lines = EXAMPLES.get(path)
    if lines:
        label = "example:" if len(lines) == 1 else "examples:"
        parser.epilog = "\n".join([label, *(f"  {line}" for line in lines)])
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                _add_examples(child, f"{path} {name}".strip(), parser)


def _parser() -> argparse.ArgumentParser:
    parser = _build_parser()
    _add_examples(parser)
    return parser


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    up = sub.add_parser("up", help="run API, worker, beat, Flower (and simulator, Redis) locally")
    up.add_argument("--host", default="127.0.0.1", help="API and callback host (127.0.0.1)")
    up.add_argument("--port", type=int, default=8000, help="API and callback port (8000)")
    up.add_argument("--flower-port", type=int, default=5555)
    up.add_argument("--concurrency", type=int, default=2, help="worker processes (2)")
    up.add_argument("--demo", action="store_true", help="send demo messages and show them live")
    up.add_argument("--verbose", action="store_true",
                    help="stream every line of every process (default: each process when "
                         "ready, warnings and errors; all of it is in <data dir>/log/)")

    logs = sub.add_parser("logs", help="read the logs that switchboard up writes, per process")
    logs.add_argument("process", nargs="?",
                      help="web, worker, sweeper, notifier, beat, flower, simulator, … "
                           "(default: all)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-n", "--lines", type=int, default=None, metavar="N",
                      help="only the last N lines (default: all of one process, 20 of each)")

    demo = sub.add_parser("demo", help="send demo messages to a running instance, watch them")
    demo.add_argument("--api", default="http://127.0.0.1:8000", help="API base URL")

    send = sub.add_parser("send", help="enqueue one message (through the broker)")
    send.add_argument("--to", help="phone number, international format")
    send.add_argument("--email", help="messenger recipient (rogerthat)")
    send.add_argument("--app-id", help="the recipient's messenger app")
    send.add_argument("--consumer", help="in-app: your app user's id (the conversation)")
    send.add_argument("--advertiser", help="in-app: the advertiser (default from settings)")
    send.add_argument("--session", help="in-app: the conversation's session id (default: "
                      "the consumer's latest conversation)")
    send.add_argument("--listing", action="append", default=[], metavar="NAME=VALUE",
                      help="in-app: listing details shown to the agent (repeat for more)")
    send.add_argument("--button", action="append", default=[], metavar="ID:CAPTION[:ACTION]",
                      help="a messenger answer button (repeat for more)")
    send.add_argument("--allow-dismiss", action="store_true")
    send.add_argument("--auto-lock", action="store_true", help="seal after the first answer")
    send.add_argument("--tag")
    send.add_argument("--route", default="viber,sms", help="channels in order (viber,sms)")
    send.add_argument("--text")
    send.add_argument("--sms-text", help="what the SMS carries on fallback")
    send.add_argument("--image-url")
    send.add_argument("--image-id")
    send.add_argument("--button-text")
    send.add_argument("--button-url")
    send.add_argument("--sender")
    send.add_argument("--dlr-timeout", type=int, help="seconds, 60..86400")
    send.add_argument("--idempotency-key")
    send.add_argument("--callback-url")
    send.add_argument("--metadata", help="a JSON object")
    send.add_argument("--send-at", help="send then: RFC 3339 with an offset "
                      "(2026-12-24T09:00:00+01:00); the message waits as scheduled")
    send.add_argument("--valid-until", help="no hop starts after this time (RFC 3339); "
                      "undelivered by then it ends expired")
    send.add_argument("--ttl", type=int, metavar="SECONDS", help="like --valid-until, relative")
    send.add_argument("--quiet-hours", metavar="START-END[@ZONE]",
                      help="e.g. 21:00-08:00 or 21:00-08:00@Europe/Brussels (default zone: the "
                      "recipient's, from the phone number)")
    send.add_argument("--critical", action="store_true", help="priority critical: ignores "
                      "quiet hours and goes ahead of normal and bulk work")

    cancel = sub.add_parser("cancel", help="cancel a message (or --campaign) not yet sent")
    cancel.add_argument("id", help="message id (campaign id with --campaign)")
    cancel.add_argument("--campaign", action="store_true", help="cancel a campaign's messages")
    send.add_argument("--template", help="a saved template's name, instead of --text")
    send.add_argument("--template-version", type=int, help="default: the latest")
    send.add_argument("--locale", help="the template's locale, e.g. nl-BE")
    send.add_argument("--data", help="the template's placeholders, a JSON object")

    seal = sub.add_parser("seal", help="lock a message's messenger message (no more answers)")
    seal.add_argument("message_id")

    friends = sub.add_parser("friends", help="messenger friendships")
    friends_sub = friends.add_subparsers(dest="friends_command", required=True, metavar="action")
    for action in ("invite", "break-up"):
        fp = friends_sub.add_parser(action, help="invite someone to be the messenger "
                                    "service's friend" if action == "invite"
                                    else "end a messenger friendship")
        fp.add_argument("email")
        fp.add_argument("--app-id", default="rogerthat")
        if action == "invite":
            fp.add_argument("--name")
            fp.add_argument("--message")
            fp.add_argument("--language")
    friends_sub.add_parser("list", help="known contacts and their consent")

    convs = sub.add_parser("conversations", help="a consumer's in-app conversations")
    convs.add_argument("consumer_id")
    conv = sub.add_parser("conversation", help="an in-app conversation's transcript")
    conv.add_argument("key", help="the conversation id, or the provider's VisitId")

    _flows_parser(sub)
    from shared.templatecli import add_parser as _templates_parser

    _templates_parser(sub, DEFAULT_APP_ID)
    from shared.consentcli import add_parser as _consent_parser

    _consent_parser(sub, DEFAULT_APP_ID)

    status = sub.add_parser("status", help="show a message: status, attempts, timeline")
    status.add_argument("message_id")
    status.add_argument("--json", action="store_true", help="print the raw JSON")

    apps = sub.add_parser("apps", help="producer apps: API keys, callback URLs, secrets")
    apps_sub = apps.add_subparsers(dest="apps_command", required=True, metavar="action")
    create = apps_sub.add_parser("create", help="create an app; prints its key and secret once")
    create.add_argument("name")
    create.add_argument("--callback-url", help="where its status webhooks go by default")
    apps_sub.add_parser("list", help="list apps")
    update = apps_sub.add_parser("update", help="change an app's settings (quiet hours)")
    update.add_argument("app", help="name or id")
    update.add_argument("--quiet-hours", metavar="START-END[@ZONE]", help="default quiet hours "
                        "for its messages, e.g. 21:00-08:00 (zone: the recipient's) or "
                        "21:00-08:00@Europe/Brussels; 'none' clears them")
    rotate = apps_sub.add_parser("rotate-secret", help="new webhook signing secret")
    rotate.add_argument("app", help="name or id")
    rotate.add_argument("--overlap", default="24h", type=_duration,
                        help="how long the old secret keeps signing beside the new one, "
                             "e.g. 24h, 90m, 3600s, 7d or 0 (default 24h, at most 30d)")

    dbp = sub.add_parser("db", help="database commands")
    dbp.add_argument("action", choices=["upgrade"])

    flower = sub.add_parser("flower", help="run Flower (refuses to start without a login)")
    flower.add_argument("--address", default="127.0.0.1")
    flower.add_argument("--port", type=int, default=5555)

    sim = sub.add_parser("simulator", help="run the local Viber+SMS gateway simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=None)
    sim.add_argument("--dlr-url", default=None)
    return parser


def _flows_parser(sub: Any) -> None:
    flows = sub.add_parser("flows", help="message flows: load, list, show, start, stats")
    fsub = flows.add_subparsers(dest="flows_command", required=True, metavar="action")
    load = fsub.add_parser("load", help="save a YAML or JSON definition as a new version")
    load.add_argument("file")
    fsub.add_parser("list", help="every flow's latest version")
    show = fsub.add_parser("show", help="print a definition")
    show.add_argument("name")
    show.add_argument("--version", type=int)
    start = fsub.add_parser("start", help="launch a flow for contacts (or --all)")
    start.add_argument("name")
    start.add_argument("--to", action="append", default=[], help="a phone (repeat for more)")
    start.add_argument("--email", action="append", default=[], help="a messenger e-mail")
    start.add_argument("--consumer", action="append", default=[], help="an in-app consumer")
    start.add_argument("--all", action="store_true", help="every contact with consent")
    start.add_argument("--version", type=int)
    stats = fsub.add_parser("stats", help="runs and answer counts per version")
    stats.add_argument("name")
    run = fsub.add_parser("run", help="a run's result")
    run.add_argument("run_id")
    for action in (load, show, start, stats, run):
        action.add_argument("--app", default=DEFAULT_APP_ID, help="producer app (default)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"up": _up, "logs": _logs, "demo": _demo, "send": _send, "status": _status, "db": _db,
               "apps": _apps, "seal": _seal, "friends": _friends, "cancel": _cancel,
               "conversations": _conversations, "conversation": _conversation,
               "flows": _flows, "templates": _templates, "consent": _consent, "flower": _flower,
               "simulator": _simulator}[args.command]
    try:
        return handler(args) or 0
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _up(args: argparse.Namespace) -> int:
    from shared.localrun import run

    return run(host=args.host, port=args.port, flower_port=args.flower_port,
               concurrency=args.concurrency, demo=args.demo, verbose=args.verbose)


def _logs(args: argparse.Namespace) -> int:
    """The files ``switchboard up`` writes in ``<data dir>/log``: one process's, or all."""
    from shared import terminal
    from shared.settings import get_settings

    directory = terminal.log_dir(get_settings().data_dir)
    known = terminal.log_names(directory)
    if not known:
        raise CliError(f"no logs in {directory}; `switchboard up` writes them there "
                       "(set SWITCHBOARD_DATA_DIR if it ran elsewhere)")
    if args.process is not None and args.process not in known:
        raise CliError(f"no log for {args.process!r} in {directory}; there are: "
                       f"{', '.join(known)}")
    names = [args.process] if args.process else known
    lines = args.lines if args.lines is not None else (None if args.process else 20)
    ends = terminal.show(directory, names, lines, sys.stdout)
    if args.follow:
        terminal.follow(directory, [args.process] if args.process else None, ends, sys.stdout)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from shared.demo import run_demo
    from shared.settings import get_settings

    keys = get_settings().api_key_list
    if not keys:
        raise CliError("set SWITCHBOARD_API_KEYS to a key the running API accepts")
    return run_demo(args.api, keys[0])


def _send_fields(args: argparse.Namespace) -> dict[str, Any]:
    to = {k: v for k, v in (("phone", args.to), ("email", args.email), ("app_id", args.app_id))
          if v}
    fields: dict[str, Any] = {"to": to,
                              "route": [c.strip() for c in args.route.split(",") if c.strip()]}
    for name in ("text", "sms_text", "image_url", "image_id", "sender", "dlr_timeout",
                 "idempotency_key", "callback_url", "tag", "send_at", "valid_until"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.ttl is not None:
        fields["ttl_seconds"] = args.ttl
    if args.quiet_hours:
        fields["quiet_hours"] = _quiet_hours(args.quiet_hours)
    if args.critical:
        fields["priority"] = "critical"
    if args.button_text or args.button_url:
        fields["button"] = {"text": args.button_text, "url": args.button_url}
    if args.allow_dismiss:
        fields["allow_dismiss"] = True
    if args.auto_lock:
        fields["auto_lock"] = True
    if args.button:
        fields["buttons"] = [_button(spec) for spec in args.button]
    if args.consumer:
        fields["conversation"] = _conversation_fields(args)
    if args.template:
        fields["template"] = _template_ref(args)
    if args.metadata:
        try:
            fields["metadata"] = json.loads(args.metadata)
        except json.JSONDecodeError as exc:
            raise CliError(f"--metadata is not JSON: {exc}") from None
    return fields


def _check_template(fields: dict[str, Any]) -> None:
    """Render a templated send here first (the CLI reads the database), so a missing
    placeholder is a refusal naming it rather than a message that fails at accept; skipped
    where the database cannot be read (the worker renders it anyway)."""
    if "template" not in fields:
        return
    from sqlalchemy.exc import OperationalError

    from shared import templatecli, templates
    from shared.db import session_scope
    from shared.schemas import SendRequest

    request = SendRequest.model_validate(fields)
    try:
        with session_scope() as session:
            templates.render_request(session, DEFAULT_APP_ID, request)
    except OperationalError:
        return
    except templates.TemplateError as exc:
        raise CliError(templatecli.describe(exc, "template")) from None


def _template_ref(args: argparse.Namespace) -> dict[str, Any]:
    """``--template`` with its version, locale and ``--data`` (JSON) as a send request's
    ``template``."""
    ref: dict[str, Any] = {"name": args.template}
    if args.template_version is not None:
        ref["version"] = args.template_version
    if args.locale:
        ref["locale"] = args.locale
    try:
        ref["data"] = json.loads(args.data) if args.data else {}
    except json.JSONDecodeError as exc:
        raise CliError(f"--data is not JSON: {exc}") from None
    return ref


def _conversation_fields(args: argparse.Namespace) -> dict[str, Any]:
    conversation: dict[str, Any] = {"consumer_id": args.consumer}
    if args.advertiser:
        conversation["advertiser_id"] = args.advertiser
    if args.session:
        conversation["session_id"] = args.session
    listing = {}
    for pair in args.listing:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError(f"--listing {pair!r}: use NAME=VALUE")
        listing[name] = value
    if listing:
        conversation["listing_details"] = listing
    return conversation


def _flower(args: argparse.Namespace) -> int:
    """Flower with task events, behind ``FLOWER_BASIC_AUTH`` (read by Flower from the
    environment, so the password never shows in the process list); never open."""
    import os

    user, sep, password = os.environ.get("FLOWER_BASIC_AUTH", "").partition(":")
    if not (user and sep and password):
        raise CliError("set FLOWER_BASIC_AUTH=user:password; Flower never runs without a login")
    os.execvp(sys.executable, [sys.executable, "-m", "celery", "-A", "worker.app", "flower",
                               f"--address={args.address}", f"--port={args.port}"])
    return 0  # not reached: exec replaced this process


def _flows(args: argparse.Namespace) -> int:
    from shared import flowcli

    action = {"load": flowcli.load, "list": flowcli.list_flows, "show": flowcli.show,
              "stats": flowcli.stats, "run": flowcli.run}
    try:
        if args.flows_command == "start":
            for run_id in _write_db(lambda work: flowcli.start(work, args)):
                print(run_id)
            return 0
        return _read_db(lambda session: action[args.flows_command](session, args))
    except flowcli.FlowCliError as exc:
        raise CliError(str(exc)) from None


def _templates(args: argparse.Namespace) -> int:
    from shared import templatecli

    try:
        return _read_db(lambda session: templatecli.run(session, args))
    except templatecli.TemplateCliError as exc:
        raise CliError(str(exc)) from None


def _consent(args: argparse.Namespace) -> int:
    from shared import consentcli

    try:
        return _read_db(lambda session: consentcli.run(session, args))
    except consentcli.ConsentCliError as exc:
        raise CliError(str(exc)) from None


def _conversations(args: argparse.Namespace) -> int:
    from shared.conversations import read_conversations

    body = _read_db(lambda session: read_conversations(session, DEFAULT_APP_ID, args.consumer_id))
    print(json.dumps(body, indent=2))
    return 0


def _conversation(args: argparse.Namespace) -> int:
    from shared.conversations import read_transcript

    body = _read_db(lambda session: read_transcript(session, DEFAULT_APP_ID, args.key))
    if body is None:
        raise CliError(f"no conversation {args.key}")
    print(json.dumps(body, indent=2))
    return 0


DEFAULT_APP_ID = "default"  # the CLI administers the deployment: it sees every app's rows


def _read_db(read: Any) -> Any:
    from sqlalchemy.exc import OperationalError

    from shared.db import session_scope

    try:
        with session_scope() as session:
            return read(session)
    except OperationalError as exc:
        raise CliError(f"cannot read the database ({exc.orig}); run `switchboard db upgrade`")


def _write_db(write: Any) -> Any:
    """``write(work)`` in a unit of work: the tasks it registers are published once it has
    committed (nothing on an error), through the producer-side publisher unless this process
    has one already."""
    from sqlalchemy.exc import OperationalError

    from shared import client, uow

    previous = uow.set_publisher(client.publish_followups)
    if previous is not None:
        uow.set_publisher(previous)
    try:
        with uow.unit_of_work() as work:
            return write(work)
    except OperationalError as exc:
        raise CliError(f"cannot write to the database ({exc.orig}); run "
                       "`switchboard db upgrade`") from None


def _button(spec: str) -> dict[str, str]:
    parts = spec.split(":", 2)
    if len(parts) < 2:
        raise CliError(f"--button {spec!r}: use ID:CAPTION or ID:CAPTION:ACTION")
    button = {"id": parts[0], "caption": parts[1]}
    if len(parts) == 3:
        button["action"] = parts[2]
    return button


def _broker_call(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a client call; bad input and an unreachable broker become clear messages."""
    try:
        return call(*args, **kwargs)
    except ValidationError as exc:
        raise CliError("; ".join(f"invalid {e['field']}: {e['message']}"
                                 for e in error_list(exc))) from None
    except Exception as exc:  # noqa: BLE001
        raise CliError(f"could not reach the broker ({type(exc).__name__}: {exc}); is "
                       "`switchboard up` running, or SWITCHBOARD_BROKER_URL set?") from None


def _seal(args: argparse.Namespace) -> int:
    from shared.client import seal

    _broker_call(seal, args.message_id)
    print(f"sealing {args.message_id}; `switchboard status {args.message_id}` shows the outcome")
    return 0


def _friends(args: argparse.Namespace) -> int:
    from shared import client

    if args.friends_command == "list":
        return _list_contacts()
    if args.friends_command == "invite":
        _broker_call(client.invite, args.email, app_id=args.app_id, name=args.name,
                     message=args.message, language=args.language)
        print(f"invitation to {args.email} requested; the answer arrives as a contact event")
    else:
        _broker_call(client.break_up, args.email, app_id=args.app_id)
        print(f"friendship with {args.email} ending")
    return 0


def _list_contacts() -> int:
    from sqlalchemy import select

    from shared.db import session_scope
    from shared.models import Contact

    with session_scope() as session:
        for c in session.scalars(select(Contact).order_by(Contact.updated_at.desc())):
            print(f"{c.channel:<10} {c.address:<32} {c.app_id:<12} {c.status}")
    return 0


def _send(args: argparse.Namespace) -> int:
    from shared.client import send

    fields = _send_fields(args)
    try:
        _check_template(fields)
        message_id = send(**fields)
    except ValidationError as exc:
        for err in error_list(exc):
            print(f"switchboard: invalid {err['field']}: {err['message']}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the broker is unreachable, say so plainly
        raise CliError(f"could not reach the broker ({type(exc).__name__}: {exc}); is "
                       "`switchboard up` running, or SWITCHBOARD_BROKER_URL set?") from None
    print(message_id)
    return 0


def _status(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import OperationalError

    from shared.db import session_scope
    from shared.messages import message_view
    from shared.models import Message

    try:
        with session_scope() as session:
            message = session.get(Message, args.message_id)
            view = message_view(session, message) if message else None
    except OperationalError as exc:
        raise CliError(f"cannot read the database ({exc.orig}); run `switchboard db upgrade`")
    if view is None:
        raise CliError(f"no message {args.message_id}")
    print(json.dumps(view, indent=2) if args.json else format_view(view))
    return 0


def format_view(view: dict[str, Any]) -> str:
    """A message's story as readable lines for the terminal."""
    lines = [f"message {view['id']}  status: {view['status']}"
             + (f" ({view['reason']})" if view["reason"] else ""),
             f"  to {_recipient(view)}  route: {' -> '.join(view['route'])}",
             "  attempts:"]
    for a in view["attempts"]:
        error = f"  error: {a['error']['reason']}" if a["error"] else ""
        lines.append(f"    #{a['hop']} {a['channel']:<6} {a['status']:<11} "
                     f"provider id: {a['provider_message_id'] or '-'}{error}")
        if a["response"]:
            lines.append(f"       provider answered {a['response']['code']} "
                         f"{a['response']['text'] or ''}".rstrip())
    if view["deliveries"]:
        lines.append("  webhooks:")
        for d in view["deliveries"]:
            lines.append(f"    event {d['event_id']} -> {d['url']}  {d['status']} after "
                         f"{d['attempts']} tries (last HTTP {d['last_status_code'] or '-'})")
    lines.append("  events:")
    for e in view["events"]:
        lines.append(f"    {e['seq']:>3} {e['at']}  {e['type']:<16} {_details(e)}")
    return "\n".join(lines)


def _recipient(view: dict[str, Any]) -> str:
    to, conversation = view["to"], view.get("conversation") or {}
    if conversation.get("consumer_id"):
        return f"consumer {conversation['consumer_id']} (in-app)"
    return to.get("phone") or to.get("email") or "?"


def _details(event: dict[str, Any]) -> str:
    detail = {k: v for k, v in event["detail"].items() if v not in (None, False, {}) and k != "raw"}
    return " ".join(f"{k}={v}" for k, v in detail.items())


def _duration(text: str) -> timedelta:
    """``--overlap``: a number with s, m, h or d (plain seconds without), from 0 to 30 days,
    so a typo does not leave an old secret signing for years."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(value) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 24h, 90m or 0")
    if not 0 <= seconds <= 30 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 30d")
    return timedelta(seconds=seconds)


def _app_name(name: str) -> str:
    if not 0 < len(name.strip()) <= 100:
        raise CliError("an app name has 1 to 100 characters")
    return name.strip()


def _http_url(url: str | None) -> str | None:
    """The same URL rule as a message's callback_url: an http(s) URL with a host that the
    egress policy lets Switchboard call (``shared.egress``)."""
    from pydantic import AnyHttpUrl, TypeAdapter

    from shared import egress

    if url is None:
        return None
    try:
        checked = str(TypeAdapter(AnyHttpUrl).validate_python(url))
        egress.check_url(checked)
    except ValidationError as exc:
        raise CliError(f"--callback-url: {exc.errors()[0]['msg']}") from None
    except egress.EgressRefused as exc:
        raise CliError(f"--callback-url: {exc}") from None
    return checked


def _apps(args: argparse.Namespace) -> int:
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError, OperationalError

    from shared import apps
    from shared.db import session_scope
    from shared.models import App

    try:
        with session_scope() as session:
            if args.apps_command == "create":
                new = apps.create(session, _app_name(args.name), _http_url(args.callback_url))
                session.commit()  # print the key only once it is stored
                print(f"app id:          {new.app.id}\nname:            {new.app.name}\n"
                      f"api key:         {new.api_key}\nsigning secret:  {new.signing_secret}\n"
                      "(the key is shown only now; it is stored hashed)")
            elif args.apps_command == "list":
                for app in session.scalars(select(App).order_by(App.created_at)):
                    print(f"{app.id}  {app.name:<24} {app.callback_url or '-'}")
            elif args.apps_command == "update":
                _app_update(session, args)
            else:
                app = apps.find(session, args.app)
                if app is None:
                    raise CliError(f"no app {args.app!r}")
                print(f"signing secret:  {apps.rotate_secret(session, app, args.overlap)}")
                until = app.previous_secret_until
                print("previous secret signs beside it until "
                      f"{until.isoformat(timespec='seconds')}Z" if until
                      else "previous secret no longer signs")
    except IntegrityError:
        raise CliError(f"an app named {args.name!r} exists already") from None
    except OperationalError as exc:
        raise CliError(f"cannot use the database ({exc.orig}); run `switchboard db upgrade`")
    return 0


def _quiet_hours(spec: str) -> dict[str, str]:
    """``21:00-08:00`` or ``21:00-08:00@Europe/Brussels`` as the request's ``quiet_hours``."""
    from shared.schemas import QuietHours

    hours, _, zone = spec.partition("@")
    try:
        return QuietHours.parse_range(hours, zone or "auto").model_dump()
    except (ValueError, ValidationError) as exc:
        detail = "; ".join(e["message"] for e in error_list(exc)) \
            if isinstance(exc, ValidationError) else str(exc)
        raise CliError(f"--quiet-hours {spec!r}: {detail}") from None


def _cancel(args: argparse.Namespace) -> int:
    """On the database, like ``status``: the deployment's operator may cancel any message."""
    from shared import cancellation
    from shared.models import Message

    def cancel(work: Any) -> str:
        if args.campaign:
            done = cancellation.cancel_campaign(work.session, args.id)
            return (f"campaign {args.id}: {len(done.cancelled)} messages cancelled, "
                    f"{done.already_sent} not (sent already, or ended)")
        message = work.session.get(Message, args.id)
        if message is None:
            raise CliError(f"no message {args.id}")
        try:
            cancellation.cancel_message(work.session, message)
        except cancellation.AlreadySent as exc:
            raise CliError(f"cannot cancel: {exc}") from None
        return f"message {args.id} cancelled"

    print(_write_db(cancel))
    return 0


def _app_update(session: Any, args: argparse.Namespace) -> None:
    """An app's settings; ``default`` is the bootstrap app (``SWITCHBOARD_API_KEYS``)."""
    from shared import apps

    app = apps.find(session, args.app)
    if app is None and args.app != DEFAULT_APP_ID:
        raise CliError(f"no app {args.app!r}")
    if args.quiet_hours is None:
        raise CliError("nothing to change: give --quiet-hours START-END or none")
    quiet = None if args.quiet_hours.lower() == "none" else _quiet_hours(args.quiet_hours)
    apps.set_quiet_hours(session, app.id if app else DEFAULT_APP_ID, quiet)
    session.commit()
    print(f"{app.name if app else DEFAULT_APP_ID}: quiet hours "
          + (f"{quiet['start']}-{quiet['end']} ({quiet['timezone']})" if quiet else "none"))


def _db(args: argparse.Namespace) -> int:
    from shared.migrations import upgrade
    from shared.settings import get_settings

    upgrade()
    print(f"database is at the latest revision ({_redact(get_settings().effective_database_url)})")
    return 0


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _simulator(args: argparse.Namespace) -> int:
    from shared.providers.sandbox import messaggio as simulator
    from shared.settings import get_settings

    argv = ["--host", args.host, "--port", str(args.port or get_settings().simulator_port)]
    if args.dlr_url:
        argv += ["--dlr-url", args.dlr_url]
    return simulator.main(argv) or 0


if __name__ == "__main__":
    sys.exit(main())
