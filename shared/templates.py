"""Message templates: an app's wording per locale and channel, versioned, rendered at accept.

A template document names its content per BCP 47 locale (``nl-BE``, ``nl``, ``en``) and per
channel: ``text``, ``sms_text``, ``inapp_text``, the Viber button (``button_text``,
``button_url``) and the messenger buttons' captions (``buttons``: id → caption). Each field
is a Jinja2 template rendered in a ``SandboxedEnvironment`` (producer data cannot reach Python
internals; no autoescape, it is plain text) with Babel filters for dates, numbers and
currency in the message's locale. A placeholder missing from the data is an error naming it,
never an empty string, so no half-rendered message leaves.

Content is rendered once, when a message is accepted (``render_request``): the stored request
holds the rendered text, so retries and fallbacks send exactly what the timeline shows, and
the message records the template name, version and locale it came from.
"""

from __future__ import annotations

import contextvars
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import yaml
from babel import Locale, UnknownLocaleError, dates, numbers
from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from jinja2.utils import missing
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.models import Template
from shared.schemas import SendRequest, Strict, _field_error, error_list

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
TEXT_FIELDS = ("text", "sms_text", "inapp_text", "button_text", "button_url")
MAX_LOCALES = 50
MAX_REPEAT = 10_000  # the longest string or list "*" may build inside a template
_LOCALE_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?$")


class TemplateError(Exception):
    """A template that cannot be saved or rendered: carries the JSON errors, each naming its
    field (``locales.nl-BE.text``, ``template.data.order.id``), locale and line if known."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors

    def body(self) -> dict[str, Any]:
        fields = ", ".join(dict.fromkeys(e["field"] for e in self.errors))
        return {"error": "template_error", "message": f"invalid field(s): {fields}",
                "errors": self.errors}


class TemplateNotFound(TemplateError):
    """No such template (or version) for this app: another app's templates are not found
    either."""


# --- the document ------------------------------------------------------------------------

class LocaleContent(Strict):
    """One locale's content per channel; each value is a template."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    text: str | None = Field(default=None, min_length=1, max_length=4096)
    sms_text: str | None = Field(default=None, min_length=1, max_length=4096)
    inapp_text: str | None = Field(default=None, min_length=1, max_length=4096)
    button_text: str | None = Field(default=None, min_length=1, max_length=500,
                                    description="the Viber button's text")
    button_url: str | None = Field(default=None, min_length=1, max_length=2048,
                                   description="the Viber button's URL (a template too)")
    buttons: dict[str, str] = Field(default_factory=dict, max_length=20,
                                    description="messenger button captions by button id")

    @model_validator(mode="after")
    def _has_text(self) -> LocaleContent:
        if not (self.text or self.sms_text or self.inapp_text):
            raise _field_error("text", "a locale needs text, sms_text or inapp_text")
        return self

    def sources(self) -> dict[str, str]:
        """Every template of this locale by its field path (``text``, ``buttons.yes``)."""
        out = {name: getattr(self, name) for name in TEXT_FIELDS if getattr(self, name)}
        out.update({f"buttons.{button_id}": caption
                    for button_id, caption in self.buttons.items()})
        return out


class TemplateDocument(Strict):
    """What a producer saves: a name, content per locale, and the locale of last resort."""

    name: str = Field(min_length=1, max_length=100, pattern=NAME_PATTERN)
    description: str | None = Field(default=None, max_length=500)
    default_locale: str | None = Field(default=None, max_length=35)
    locales: dict[str, LocaleContent] = Field(min_length=1, max_length=MAX_LOCALES)

    @field_validator("locales")
    @classmethod
    def _known_locales(cls, value: dict[str, LocaleContent]) -> dict[str, LocaleContent]:
        out: dict[str, LocaleContent] = {}
        for tag, content in value.items():
            canonical = canonical_locale(tag)
            if canonical in out:
                raise ValueError(f"{tag}: the same locale as {canonical}")
            out[canonical] = content
        return out

    @model_validator(mode="after")
    def _default_is_defined(self) -> TemplateDocument:
        if self.default_locale is None:
            self.default_locale = next(iter(self.locales))
            return self
        try:
            self.default_locale = canonical_locale(self.default_locale)
        except ValueError as exc:
            raise _field_error("default_locale", str(exc)) from None
        if self.default_locale not in self.locales:
            raise _field_error("default_locale", f"{self.default_locale} is not in locales")
        return self


def canonical_locale(tag: str) -> str:
    """A BCP 47 tag Babel knows, in its usual spelling (``nl-be`` → ``nl-BE``); raises
    ``ValueError`` for anything else."""
    if not isinstance(tag, str) or not _LOCALE_TAG.match(tag):
        raise ValueError(f"{tag!r} is not a BCP 47 language tag such as nl-BE, nl or en")
    parts = tag.split("-")
    parts = [parts[0].lower()] + [p.title() if len(p) == 4 else p.upper() for p in parts[1:]]
    canonical = "-".join(parts)
    try:
        Locale.parse(canonical, sep="-")
    except (UnknownLocaleError, ValueError):
        raise ValueError(f"{tag!r} is not a locale Babel knows") from None
    return canonical


def load_document(text: str, content_type: str | None = None) -> TemplateDocument:
    """Parse (JSON for JSON content types, else YAML, of which JSON is a subset), validate
    and compile a template document; raises ``TemplateError`` naming the field and, for a
    template that does not compile, its locale and line."""
    try:
        data = (json.loads(text) if content_type and "json" in content_type
                else yaml.safe_load(text))
    except (ValueError, yaml.YAMLError) as exc:
        raise TemplateError([{"field": "body", "message": f"not JSON or YAML: {exc}"}]) from None
    if not isinstance(data, dict):
        raise TemplateError([{"field": "body",
                              "message": "the document must be an object with name and locales"}])
    return parse_document(data)


def parse_document(data: dict[str, Any]) -> TemplateDocument:
    """Validate and compile a template document given as data."""
    try:
        document = TemplateDocument.model_validate(data)
    except ValidationError as exc:
        raise TemplateError(error_list(exc)) from None
    check_compiles(document)
    return document


def check_compiles(document: TemplateDocument) -> None:
    """Compile every field of every locale; raises ``TemplateError`` listing each one that
    does not, with its locale, field and line."""
    errors = []
    for locale, content in document.locales.items():
        for name, source in content.sources().items():
            try:
                _compile(source)
            except TemplateSyntaxError as exc:
                errors.append({"field": f"locales.{locale}.{name}", "locale": locale,
                               "line": exc.lineno,
                               "message": f"line {exc.lineno}: {exc.message}"})
    if errors:
        raise TemplateError(errors)


# --- rendering ---------------------------------------------------------------------------

_PATHS: contextvars.ContextVar[dict[int, str]] = contextvars.ContextVar("template_paths")
_RENDER_LOCALE: contextvars.ContextVar[Locale] = contextvars.ContextVar("template_locale")


class MissingPlaceholder(UndefinedError):
    """A placeholder the data does not hold; ``path`` names it (``order.id``)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} is missing from data")
        self.path = path


class _Undefined(StrictUndefined):
    """StrictUndefined that knows the whole dotted path it stands for (``order.customer.name``
    even when ``order`` exists but lacks ``customer``), so the error names the placeholder."""

    __slots__ = ("_path",)

    def __init__(self, hint: str | None = None, obj: Any = missing, name: str | None = None,
                 exc: type[Exception] = UndefinedError, path: str | None = None) -> None:
        super().__init__(hint, obj, name, exc)
        parent = _PATHS.get({}).get(id(obj)) if obj is not missing else None
        self._path = path or (f"{parent}.{name}" if parent else str(name))

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> Any:
        if self._undefined_exception is not UndefinedError:  # the sandbox's SecurityError
            raise self._undefined_exception(self._undefined_message)
        raise MissingPlaceholder(self._path)

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__":
            raise AttributeError(name)
        return self._child(name)

    def __getitem__(self, key: Any) -> Any:
        return self._child(key)

    def _child(self, key: Any) -> Any:
        if self._undefined_exception is not UndefinedError:
            return self  # an unsafe access stays one, however deep
        return _Undefined(path=f"{self._path}.{key}")

    __str__ = __iter__ = __len__ = __bool__ = __eq__ = __ne__ = __hash__ = (  # type: ignore
        _fail_with_undefined_error)
    __contains__ = __int__ = __float__ = __complex__ = __pow__ = __rpow__ = (  # type: ignore
        _fail_with_undefined_error)


class _Environment(SandboxedEnvironment):
    """The sandbox, plus a cap on what ``*`` and ``**`` may build (a template cannot make a
    gigabyte string out of one placeholder)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > 100:
            raise SecurityError("exponent too large")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(count, int) and (
                        len(seq) * count > MAX_REPEAT):
                    raise SecurityError("repetition too long")
        return super().call_binop(context, operator, left, right)


def _locale() -> Locale:
    return _RENDER_LOCALE.get()


def _plain(text: str) -> str:
    """CLDR puts no-break spaces in numbers, currencies and times (``€\u00a012,50``); they
    are not in the GSM-7 alphabet, so one would make a whole SMS UCS-2 (70 characters a
    segment instead of 160). Plain text messages get ordinary spaces."""
    return text.replace("\u00a0", " ").replace("\u202f", " ")


def _as_date(value: Any) -> date:
    if isinstance(value, date):
        return value
    try:
        return datetime.fromisoformat(str(value)).date()
    except ValueError:
        raise ValueError(f"cannot read {value!r} as an ISO date") from None


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"cannot read {value!r} as an ISO date and time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dates.UTC)


def _as_number(value: Any) -> Decimal | int:
    if isinstance(value, bool):
        raise ValueError(f"cannot read {value!r} as a number")
    if isinstance(value, int | Decimal):
        return value
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"cannot read {value!r} as a number") from None


@pass_context
def _date(_: Context, value: Any, format: str = "medium") -> str:
    """``{{ order.date | date }}``: 4 dec. 2026 in nl-BE; format short/medium/long/full or a
    CLDR pattern."""
    return _plain(dates.format_date(_as_date(value), format, locale=_locale()))


@pass_context
def _datetime(_: Context, value: Any, format: str = "medium", tz: str = "UTC") -> str:
    """A date and time shown in ``tz`` (an IANA zone, e.g. Europe/Brussels)."""
    return _plain(dates.format_datetime(_as_datetime(value), format,
                                        tzinfo=dates.get_timezone(tz), locale=_locale()))


@pass_context
def _time(_: Context, value: Any, format: str = "short", tz: str = "UTC") -> str:
    moment = value if isinstance(value, time) else _as_datetime(value)
    return _plain(dates.format_time(moment, format, tzinfo=dates.get_timezone(tz),
                                    locale=_locale()))


@pass_context
def _number(_: Context, value: Any, format: str | None = None) -> str:
    """``{{ 1234.5 | number }}``: 1.234,5 in nl-BE."""
    return _plain(numbers.format_decimal(_as_number(value), format, locale=_locale()))


@pass_context
def _currency(_: Context, value: Any, currency: str = "EUR", format: str | None = None) -> str:
    """``{{ order.total | currency("EUR") }}``: € 12,50 in nl-BE."""
    return _plain(numbers.format_currency(_as_number(value), currency, format, locale=_locale()))


@pass_context
def _percent(_: Context, value: Any, format: str | None = None) -> str:
    return _plain(numbers.format_percent(_as_number(value), format, locale=_locale()))


FILTERS = {"date": _date, "datetime": _datetime, "time": _time, "number": _number,
           "currency": _currency, "percent": _percent}
_ENV = _Environment(autoescape=False, undefined=_Undefined, keep_trailing_newline=False)
_ENV.filters.update(FILTERS)
MAX_RANGE = 1000  # range() in a template (the sandbox's own cap is 100,000)


def _range(*args: int) -> range:
    numbers_ = range(*args)
    if len(numbers_) > MAX_RANGE:
        raise SecurityError(f"range() is limited to {MAX_RANGE} items in a template")
    return numbers_


_ENV.globals["range"] = _range


@lru_cache(maxsize=2048)
def _compile(source: str) -> Any:
    """Compiled once per distinct source (templates are immutable versions)."""
    return _ENV.from_string(source)


def _index_paths(value: Any, path: str, out: dict[int, str]) -> dict[int, str]:
    """The dotted path of every mapping and list in the data, by identity, so an undefined
    attribute of ``order`` can be named ``order.id``."""
    if isinstance(value, dict):
        if path:
            out[id(value)] = path
        for key, child in value.items():
            _index_paths(child, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list):
        out[id(value)] = path
        for index, child in enumerate(value):
            _index_paths(child, f"{path}.{index}", out)
    return out


def pick_locale(document: TemplateDocument, wanted: str | None) -> str:
    """The locale a message gets: the one asked for, else its language (``nl-BE`` → ``nl``),
    else the template's default locale."""
    if wanted:
        try:
            tag = canonical_locale(wanted)
        except ValueError:
            tag = wanted
        for candidate in (tag, tag.split("-")[0]):
            if candidate in document.locales:
                return candidate
    assert document.default_locale is not None  # the validator sets it
    return document.default_locale


@dataclass(frozen=True)
class Rendered:
    """One locale's content rendered: field path → text (empty results left out)."""

    locale: str
    fields: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        return self.fields.get(name)

    @property
    def buttons(self) -> dict[str, str]:
        return {k.removeprefix("buttons."): v for k, v in self.fields.items()
                if k.startswith("buttons.")}


def render(document: TemplateDocument, locale: str | None, data: dict[str, Any]) -> Rendered:
    """Render every field of the chosen locale with ``data``; raises ``TemplateError`` naming
    a missing placeholder (``template.data.<path>``) or a value a filter cannot read."""
    chosen = pick_locale(document, locale)
    tokens = (_PATHS.set(_index_paths(data, "", {})),
              _RENDER_LOCALE.set(Locale.parse(chosen, sep="-")))
    try:
        out = {name: _render_one(source, data, chosen, name)
               for name, source in document.locales[chosen].sources().items()}
    finally:
        _PATHS.reset(tokens[0])
        _RENDER_LOCALE.reset(tokens[1])
    return Rendered(chosen, {k: v for k, v in out.items() if v.strip()})


def _render_one(source: str, data: dict[str, Any], locale: str, name: str) -> str:
    where = f"locale {locale}, field {name}"
    try:
        return _compile(source).render(data)
    except MissingPlaceholder as exc:
        raise TemplateError([{"field": f"template.data.{exc.path}", "locale": locale,
                              "message": f"placeholder {exc.path} is missing from data "
                                         f"({where})"}]) from None
    except (SecurityError, UndefinedError, ValueError, TypeError, LookupError,
            ArithmeticError) as exc:
        raise TemplateError([{"field": "template.data", "locale": locale,
                              "message": f"cannot render {where}: {exc}"}]) from None


# --- storage -----------------------------------------------------------------------------

def save_template(session: Session, app_id: str, document: TemplateDocument) -> Template:
    """Add the document as the next version of the app's template of that name and commit;
    a concurrent save of the same name takes the version after it."""
    for _ in range(3):
        latest = session.scalar(select(func.max(Template.version)).where(
            Template.app_id == app_id, Template.name == document.name)) or 0
        row = Template(app_id=app_id, name=document.name, version=latest + 1,
                       document=document.model_dump(mode="json", exclude_none=True))
        session.add(row)
        try:
            session.commit()
            return row
        except IntegrityError:
            session.rollback()
    raise RuntimeError(f"could not save template {document.name}: too many concurrent saves")


def find_template(session: Session, app_id: str, name: str,
                  version: int | None = None) -> Template | None:
    """The app's template version (latest when ``version`` is None); None when the app has
    no such template: another app's is not seen."""
    query = select(Template).where(Template.app_id == app_id, Template.name == name)
    if version is not None:
        query = query.where(Template.version == version)
    return session.scalars(query.order_by(Template.version.desc()).limit(1)).first()


def versions(session: Session, app_id: str, name: str) -> list[Template]:
    return list(session.scalars(select(Template).where(
        Template.app_id == app_id, Template.name == name).order_by(Template.version)))


def latest_templates(session: Session, app_id: str) -> list[Template]:
    """The latest version of each of the app's templates, by name."""
    newest = (select(Template.name, func.max(Template.version).label("v"))
              .where(Template.app_id == app_id).group_by(Template.name).subquery())
    return list(session.scalars(select(Template).join(
        newest, (Template.name == newest.c.name) & (Template.version == newest.c.v))
        .where(Template.app_id == app_id).order_by(Template.name)))


def document_of(row: Template) -> TemplateDocument:
    return TemplateDocument.model_validate(row.document)


@lru_cache(maxsize=256)
def _cached_document(row_id: int, document: str) -> TemplateDocument:
    return TemplateDocument.model_validate_json(document)


def _document(row: Template) -> TemplateDocument:
    """``document_of``, parsed once per saved version (versions never change)."""
    return _cached_document(row.id, json.dumps(row.document, sort_keys=True))


def summary(row: Template) -> dict[str, Any]:
    """A version as listed: its name, number, locales and when it was saved."""
    return {"name": row.name, "version": row.version,
            "default_locale": row.document.get("default_locale"),
            "locales": sorted(row.document.get("locales", {})),
            "description": row.document.get("description"),
            "created_at": row.created_at.isoformat() + "Z"}


def require_template(session: Session, app_id: str, name: str,
                     version: int | None = None) -> Template:
    """``find_template`` or ``TemplateNotFound`` naming ``template.name`` / ``.version``."""
    row = find_template(session, app_id, name, version)
    if row is not None:
        return row
    if version is not None and find_template(session, app_id, name) is not None:
        raise TemplateNotFound([{"field": "template.version",
                                 "message": f"template {name} has no version {version}"}])
    raise TemplateNotFound([{"field": "template.name", "message": f"no template {name}"}])


# --- use at accept -----------------------------------------------------------------------

@dataclass(frozen=True)
class TemplateUse:
    """What a message was rendered from, recorded on its row and its ``queued`` event."""

    name: str
    version: int
    locale: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "locale": self.locale}


def render_request(session: Session, app_id: str, request: SendRequest,
                   row: Template | None = None) -> tuple[SendRequest, TemplateUse]:
    """The send request with its template rendered in (text, sms_text, the in-app text and
    the buttons) and the template reference dropped, validated again as a plain request so
    every content rule applies to what was rendered. ``row``: the template version, already
    loaded (a campaign renders one per phone). Raises ``TemplateError``."""
    ref = request.template
    assert ref is not None
    row = row or require_template(session, app_id, ref.name, ref.version)
    rendered = render(_document(row), ref.locale, ref.data)
    body = apply_content(request.model_dump(mode="json", exclude={"template"}), rendered)
    where = f"rendered from template {row.name} v{row.version} ({rendered.locale})"
    try:
        result = SendRequest.model_validate(body)
    except ValidationError as exc:
        raise TemplateError([{**e, "message": f"{e['message']} ({where})"}
                             for e in error_list(exc)]) from None
    return result, TemplateUse(row.name, row.version, rendered.locale)


def apply_content(body: dict[str, Any], rendered: Rendered) -> dict[str, Any]:
    """Put rendered content into a request body (JSON form): ``text``, ``sms_text``, the
    in-app hop's ``texts.inapp``, the Viber button (its URL from the template, else the
    request's) and the messenger buttons (captions of the request's buttons by id, or the
    template's buttons when the request has none)."""
    for name in ("text", "sms_text"):
        if rendered.get(name):
            body[name] = rendered.get(name)
    if rendered.get("inapp_text"):
        body["texts"] = {**(body.get("texts") or {}), "inapp": rendered.get("inapp_text")}
    url = rendered.get("button_url") or (body.get("button") or {}).get("url")
    if rendered.get("button_text") and url:
        body["button"] = {"text": rendered.get("button_text"), "url": url}
    captions = rendered.buttons
    if captions and body.get("buttons"):
        body["buttons"] = [{**b, "caption": captions.get(b["id"], b["caption"])}
                           for b in body["buttons"]]
    elif captions:
        body["buttons"] = [{"id": k, "caption": v} for k, v in captions.items()]
    return body


# --- preview -----------------------------------------------------------------------------

class PreviewRequest(Strict):
    """``POST /v1/templates/<name>/preview``: render a saved version (the latest unless
    ``version``), or an unsaved ``document`` (the console's editor), with this data."""

    data: dict[str, Any] = Field(default_factory=dict)
    locale: str | None = Field(default=None, min_length=2, max_length=35)
    version: int | None = Field(default=None, ge=1, lt=2**31)
    document: dict[str, Any] | None = Field(
        default=None, description="an unsaved template document to render instead")


def preview(document: TemplateDocument, locale: str | None,
            data: dict[str, Any]) -> dict[str, Any]:
    """The rendered content per field and per channel, and what the SMS costs (encoding,
    length, segments: ``shared.sms_encoding``)."""
    from shared.sms_encoding import sms_cost

    rendered = render(document, locale, data)
    text, sms = rendered.get("text"), rendered.get("sms_text") or rendered.get("text")
    button = ({"text": rendered.get("button_text"), "url": rendered.get("button_url")}
              if rendered.get("button_text") else None)
    channels = {
        "viber": {"text": text, "button": button},
        "sms": {"text": sms},
        "rogerthat": {"text": text, "buttons": [{"id": k, "caption": v}
                                                 for k, v in rendered.buttons.items()]},
        "inapp": {"text": rendered.get("inapp_text") or text},
    }
    return {"locale": rendered.locale, "requested_locale": locale,
            "content": {k: v for k, v in rendered.fields.items() if not k.startswith("buttons.")}
            | ({"buttons": rendered.buttons} if rendered.buttons else {}),
            "channels": channels,
            "sms": {"text": sms, **sms_cost(sms).as_dict()} if sms else None}
