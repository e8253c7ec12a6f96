"""The operator console: a small server-rendered HTML view of messages, timelines and flows.

Plain Jinja templates (autoescaped) with inline CSS. The message list and timelines need no
JavaScript and work in any browser, including a text one; the dashboard (``/console``) and
the flow designer and results (``webhooks.designer``) draw with vendored Drawflow and
Chart.js served from ``webhooks/static`` (no build step, no inline script: the CSP allows
scripts from this origin only). A browser logs in with HTTP basic auth
whose password is an API key (the user name is ignored); scripts may send the API's
``Authorization: Bearer <key>`` instead. The bootstrap keys (the ``default`` app) see every
app's messages; an app's own key sees only that app's messages.

The timeline reuses ``shared.messages.message_view`` (the JSON of ``GET /v1/messages/<id>``),
so the console and the API can never disagree about a message's story.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypedDict, get_args

from flask import Blueprint, Response, g, render_template, request, url_for
from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session

from shared.apps import app_for_key
from shared.db import session_scope
from shared.lifecycle import MESSAGE_CLOSED, MESSAGE_RANK, MessageStatus
from shared.messages import message_view
from shared.models import DEFAULT_APP, Attempt, Callback, Message
from shared.providers import PROVIDER_FOR_CHANNEL
from shared.schemas import Channel

console = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
                    static_folder="static")

REALM = "switchboard console"
STATUSES = (MessageStatus.SCHEDULED, *MESSAGE_RANK, *sorted(MESSAGE_CLOSED))
CHANNELS = get_args(Channel)
PROVIDERS = tuple(sorted(set(PROVIDER_FOR_CHANNEL.values())))
FILTER_NAMES = frozenset({"status", "channel", "provider", "recipient", "since", "until",
                          "limit", "page"})
DEFAULT_LIMIT, MAX_LIMIT, MAX_PAGE = 50, 200, 10_000
RECIPIENT_MAX = 64  # the column's width: a longer filter can match nothing
_PHONE_LIKE = re.compile(r"[+\d\s().-]+")  # "+32 470 12-34" finds "+3247012..." too

# Only this origin's own script files may run (no inline script, no eval), data is fetched
# from this origin only, and nothing may frame the pages.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# --- authentication ------------------------------------------------------------------------

def _presented_key() -> str | None:
    """The API key from basic auth (its password) or a bearer token, whichever was sent."""
    auth = request.authorization
    if auth is None:
        return None
    if auth.type == "basic":
        return auth.password or None
    if auth.type == "bearer":
        return (auth.token or "").strip() or None
    return None


def require_operator(view: Callable[..., Any]) -> Callable[..., Any]:
    """Let in holders of an API key (``app_for_key`` compares in constant time); ask browsers
    for basic credentials otherwise. Sets ``g.app_id`` and ``g.console_scope`` (None: every app)."""
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = _presented_key()
        app_id = None
        if key is not None:
            with session_scope() as session:
                app_id = app_for_key(session, key)
        if app_id is None:
            return _unauthorized(key is not None)
        g.app_id = app_id
        g.console_scope = None if app_id == DEFAULT_APP else app_id
        return view(*args, **kwargs)

    return wrapper


def _unauthorized(presented: bool) -> Response:
    """401 with a basic challenge, so a browser shows its login box."""
    text = "unknown API key" if presented else "log in with an API key as the password"
    response = Response(render_template("console/error.html", title="Unauthorized",
                                        message=text), status=401)
    response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}", charset="UTF-8"'
    return response


@console.after_request
def _harden(response: Response) -> Response:
    """Defence in depth: even if escaping failed somewhere, no script could run here."""
    response.headers.update(_SECURITY_HEADERS)
    return response


# --- filters -------------------------------------------------------------------------------

class FilterError(Exception):
    """A query parameter we refuse; names the field so the operator can fix it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field, self.message = field_name, message


@dataclass(frozen=True)
class Filters:
    """The message list's query parameters, validated."""

    status: str | None = None
    channel: str | None = None
    provider: str | None = None
    recipient: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_LIMIT
    page: int = 1
    raw: dict[str, str] = field(default_factory=dict)  # as typed, to refill the form


def _choice(args: dict[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    """A closed set: a typo must say so, not silently list nothing."""
    value = args.get(name)
    if value and value not in allowed:
        raise FilterError(name, f"must be one of {', '.join(allowed)} (got {value!r})")
    return value or None


def _when(args: dict[str, str], name: str) -> datetime | None:
    """An ISO 8601 date or date-time; without a zone it is taken as UTC (like every row)."""
    if not args.get(name):
        return None
    try:
        value = datetime.fromisoformat(args[name])
    except ValueError:
        raise FilterError(name, "expected an ISO 8601 date-time such as 2025-01-31T14:00:00Z "
                                f"(got {args[name]!r})") from None
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _number(args: dict[str, str], name: str, default: int, high: int) -> int:
    """A bounded positive integer, so no request can ask for the whole table."""
    raw = args.get(name) or str(default)
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise FilterError(name, f"must be a whole number from 1 to {high} (got {raw!r})")
    return int(raw)


def parse_filters(query: dict[str, str]) -> Filters:
    """Validate the list's query parameters; raises ``FilterError`` naming the bad one."""
    args = {k: v.strip() for k, v in query.items() if k in FILTER_NAMES}
    recipient = args.get("recipient") or None
    if recipient and _PHONE_LIKE.fullmatch(recipient):
        recipient = re.sub(r"[\s().-]", "", recipient) or None
    if recipient and len(recipient) > RECIPIENT_MAX:
        raise FilterError("recipient", f"at most {RECIPIENT_MAX} characters")
    since, until = _when(args, "since"), _when(args, "until")
    if since and until and until < since:
        raise FilterError("until", "must not be before since")
    return Filters(status=_choice(args, "status", STATUSES),
                   channel=_choice(args, "channel", CHANNELS),
                   provider=_choice(args, "provider", PROVIDERS),
                   recipient=recipient, since=since, until=until,
                   limit=_number(args, "limit", DEFAULT_LIMIT, MAX_LIMIT),
                   page=_number(args, "page", 1, MAX_PAGE), raw=args)


def _message_query(filters: Filters, scope: str | None) -> Select[tuple[Message]]:
    """Newest first; channel and provider match any attempt the message made."""
    query = select(Message)
    if scope is not None:
        query = query.where(Message.app_id == scope)
    if filters.status:
        query = query.where(Message.status == filters.status)
    if filters.channel:
        query = query.where(exists().where(Attempt.message_id == Message.id,
                                           Attempt.channel == filters.channel))
    if filters.provider:
        query = query.where(exists().where(Attempt.message_id == Message.id,
                                           Attempt.provider == filters.provider))
    if filters.recipient:
        query = query.where(Message.recipient.contains(filters.recipient, autoescape=True))
    if filters.since:
        query = query.where(Message.created_at >= filters.since)
    if filters.until:
        query = query.where(Message.created_at <= filters.until)
    return (query.order_by(Message.created_at.desc(), Message.id.desc())
            .offset((filters.page - 1) * filters.limit).limit(filters.limit + 1))


@console.errorhandler(FilterError)
def _bad_filter(exc: FilterError) -> tuple[str, int]:
    """An HTML 400 naming the field (the app's JSON error handler is for API clients)."""
    return render_template("console/error.html", title="Bad filter", field=exc.field,
                           message=exc.message), 400


# --- pages ---------------------------------------------------------------------------------

def _row(message: Message) -> dict[str, Any]:
    """What the list shows of one message: enough to pick the one to open."""
    return {"id": message.id, "app_id": message.app_id, "status": message.status,
            "reason": message.reason, "recipient": message.recipient, "route": message.route,
            "created_at": message.created_at,
            "attempts": [(a.channel, a.provider, a.status) for a in message.attempts]}


def _page_url(filters: Filters, page: int) -> str:
    """The same filters on another page, so paging works with plain links."""
    args = {k: v for k, v in filters.raw.items() if v and k != "page"}
    return url_for("console.messages", **args, page=page)


@console.get("")
@console.get("/")
@require_operator
def dashboard() -> str:
    """The last hours at a glance, drawn from ``GET /v1/stats/overview`` (the producers'
    endpoint, read here with the same login)."""
    return render_template("console/dashboard.html", all_apps=g.console_scope is None)


@console.get("/messages")
@require_operator
def messages() -> str:
    """Recent messages, newest first, filtered by the query parameters."""
    filters = parse_filters(request.args.to_dict())
    with session_scope() as session:
        found = session.scalars(_message_query(filters, g.console_scope)).all()
        rows = [_row(m) for m in found[:filters.limit]]
    more = len(found) > filters.limit
    return render_template(
        "console/messages.html", rows=rows, filters=filters, statuses=STATUSES,
        channels=CHANNELS, providers=PROVIDERS, all_apps=g.console_scope is None,
        newer=_page_url(filters, filters.page - 1) if filters.page > 1 else None,
        older=_page_url(filters, filters.page + 1) if more else None)


def _callbacks(session: Session, attempt_ids: list[str]) -> list[dict[str, Any]]:
    """The provider callbacks matched to these attempts, as received, oldest first."""
    if not attempt_ids:
        return []
    rows = session.scalars(select(Callback).where(Callback.attempt_id.in_(attempt_ids))
                           .order_by(Callback.received_at, Callback.id))
    return [{"id": c.id, "attempt_id": c.attempt_id, "provider": c.provider,
             "status": c.status, "method": c.method, "params": c.params, "error": c.error,
             "tries": c.tries, "received_at": c.received_at, "processed_at": c.processed_at}
            for c in rows]


@console.get("/messages/<message_id>")
@require_operator
def timeline(message_id: str) -> tuple[str, int] | str:
    """One message's whole story: attempts, callbacks, fallback decisions and events."""
    with session_scope() as session:
        message = session.get(Message, message_id[:36])
        if message is None or g.console_scope not in (None, message.app_id):
            return render_template("console/error.html", title="Not found",
                                   message=f"no message {message_id}"), 404
        view = message_view(session, message)
        callbacks = _callbacks(session, [a["id"] for a in view["attempts"]])
        texts = {k: message.request.get(k) for k in ("text", "sms_text")}
    labels = {a["id"]: f"#{a['hop']} {a['channel']}" for a in view["attempts"]}
    fallbacks = [e for e in view["events"] if e["type"] == "fallback"]
    return render_template("console/message.html", m=view, texts=texts, callbacks=callbacks,
                           fallbacks=fallbacks, labels=labels, app_id=message.app_id)


# --- flows ---------------------------------------------------------------------------------

class StepStats(TypedDict):
    """One step of a flow and how often each answer was given."""

    step: str
    answers: dict[str, int]  # answer -> how many recipients gave it


class FlowStats(TypedDict):
    """One flow version: how many runs started, finished and timed out, step by step."""

    name: str
    version: int | str
    app_id: str
    started: int
    finished: int
    timed_out: int
    steps: list[StepStats]


def flow_stats(session: Session, app_id: str | None = None) -> list[FlowStats]:
    """Per flow version: run counts and how recipients answered each step (the numbers a
    service would draw as pie charts), for ``GET /console/flows``; ``None``: every app."""
    from shared.flows import runtime
    from shared.models import Flow

    query = select(Flow).order_by(Flow.name, Flow.version)
    if app_id is not None:
        query = query.where(Flow.app_id == app_id)
    versions = list(session.scalars(query).all())
    return [{"name": entry["name"], "version": entry["version"], "app_id": flow.app_id,
             "started": entry["started"], "finished": entry["finished"],
             "timed_out": entry["timed_out"],
             "steps": [_step_counts(step) for step in entry["steps"]]}
            for flow, entry in zip(versions, runtime.stats(session, versions), strict=True)]


def _step_counts(step: dict[str, Any]) -> StepStats:
    answers = {f"{a['caption']} ({button_id})": a["count"]
               for button_id, a in step["answers"].items()}
    if step["text_answers"]:
        answers["free text"] = step["text_answers"]
    if step["timeouts"]:
        answers["no answer"] = step["timeouts"]
    return {"step": step["step"], "answers": answers}


@console.get("/flows")
@require_operator
def flows() -> str:
    """Each flow's runs and how recipients answered each step."""
    with session_scope() as session:
        stats = flow_stats(session, g.console_scope)
    return render_template("console/flows.html", flows=stats, app_id=g.app_id)


@console.app_template_filter("console_json")
def _json(value: Any) -> str:
    """Readable JSON for <pre> blocks; Jinja escapes it like any other text."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


@console.app_template_filter("console_time")
def _time(value: datetime | str | None) -> str:
    """Naive-UTC datetimes (or the API's ISO strings) as ``YYYY-MM-DD HH:MM:SS``."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value.removesuffix("Z").replace("T", " ")[:19]
    return value.strftime("%Y-%m-%d %H:%M:%S")
