"""Template documents, rendering and locale fallback (shared/templates.py), without HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared import templates
from shared.db import session_scope
from shared.schemas import SendRequest
from shared.templates import TemplateError, parse_document, pick_locale, render

DOC: dict[str, Any] = {
    "name": "order_shipped",
    "default_locale": "en",
    "locales": {
        "en": {"text": "Order {{ order.id }} shipped on {{ order.date | date('long') }}."},
        "nl": {"text": "Bestelling {{ order.id }} is verzonden.",
               "sms_text": "Bestelling {{ order.id }}: {{ order.total | currency('EUR') }}"},
        "nl-BE": {"text": "Uw bestelling {{ order.id }} is onderweg ({{ order.total | "
                          "currency('EUR') }}).",
                  "buttons": {"track": "Volg {{ order.id }}"},
                  "button_text": "Volg", "button_url": "https://shop.example/t/{{ order.id }}"},
    },
}
DATA = {"order": {"id": "A-17", "date": "2026-12-04", "total": 1234.5}}


def _error(exc: pytest.ExceptionInfo[TemplateError]) -> dict[str, Any]:
    assert len(exc.value.errors) == 1
    return exc.value.errors[0]


# --- documents ---------------------------------------------------------------------------

def test_locale_tags_are_canonicalised_and_checked() -> None:
    doc = parse_document({"name": "x", "locales": {"nl-be": {"text": "a"}, "EN": {"text": "b"}}})
    assert list(doc.locales) == ["nl-BE", "en"]
    assert doc.default_locale == "nl-BE"  # the first locale when none is named
    for bad in ("klingon", "nl_BE", "zz-ZZ", "en-"):
        with pytest.raises(TemplateError) as exc:
            parse_document({"name": "x", "locales": {bad: {"text": "a"}}})
        assert _error(exc)["field"] == "locales"


def test_the_default_locale_must_be_defined() -> None:
    with pytest.raises(TemplateError) as exc:
        parse_document({**DOC, "default_locale": "fr"})
    assert _error(exc)["field"] == "default_locale"


def test_a_locale_needs_some_text() -> None:
    with pytest.raises(TemplateError) as exc:
        parse_document({"name": "x", "locales": {"en": {"button_text": "Go"}}})
    assert _error(exc)["field"].startswith("locales.en")


def test_a_template_that_does_not_compile_names_locale_field_and_line() -> None:
    broken = {"name": "x", "locales": {
        "en": {"text": "fine {{ a }}"},
        "nl-BE": {"text": "line one\nline two {{ order.id }\n", "sms_text": "{% if %}"}}}
    with pytest.raises(TemplateError) as exc:
        parse_document(broken)
    errors = {e["field"]: e for e in exc.value.errors}
    assert set(errors) == {"locales.nl-BE.text", "locales.nl-BE.sms_text"}
    assert errors["locales.nl-BE.text"]["line"] == 2
    assert errors["locales.nl-BE.text"]["locale"] == "nl-BE"
    assert errors["locales.nl-BE.text"]["message"].startswith("line 2: ")


def test_an_unknown_filter_does_not_compile() -> None:
    with pytest.raises(TemplateError) as exc:
        parse_document({"name": "x", "locales": {"en": {"text": "t",
                                                        "buttons": {"y": "{{ a | shout }}"}}}})
    assert _error(exc)["field"] == "locales.en.buttons.y"
    assert "shout" in _error(exc)["message"]


def test_yaml_and_json_documents_load() -> None:
    yaml_doc = "name: hi\nlocales:\n  en:\n    text: 'Hi {{ name }}'\n"
    assert templates.load_document(yaml_doc, "application/yaml").locales["en"].text == (
        "Hi {{ name }}")
    with pytest.raises(TemplateError) as exc:
        templates.load_document("{not json", "application/json")
    assert _error(exc)["field"] == "body"
    with pytest.raises(TemplateError):
        templates.load_document("- a list", "application/yaml")


# --- rendering ---------------------------------------------------------------------------

def test_locale_falls_back_region_then_language_then_default() -> None:
    doc = parse_document(DOC)
    assert pick_locale(doc, "nl-BE") == "nl-BE"
    assert pick_locale(doc, "nl-be") == "nl-BE"
    assert pick_locale(doc, "nl-NL") == "nl"
    assert pick_locale(doc, "fr-BE") == "en"
    assert pick_locale(doc, None) == "en"
    assert pick_locale(doc, "not a tag") == "en"


def test_placeholders_and_locale_filters() -> None:
    doc = parse_document(DOC)
    nl_be = render(doc, "nl-BE", DATA)
    assert nl_be.locale == "nl-BE"
    assert nl_be.get("text") == "Uw bestelling A-17 is onderweg (€ 1.234,50)."
    assert nl_be.buttons == {"track": "Volg A-17"}
    assert nl_be.get("button_url") == "https://shop.example/t/A-17"
    assert render(doc, "en-GB", DATA).get("text") == "Order A-17 shipped on December 4, 2026."
    nl = render(doc, "nl-NL", DATA)
    assert (nl.locale, nl.get("sms_text")) == ("nl", "Bestelling A-17: € 1.234,50")


@pytest.mark.parametrize(("source", "locale", "expected"), [
    ("{{ n | number }}", "nl-BE", "1.234.567,891"),
    ("{{ n | number }}", "en", "1,234,567.891"),
    ("{{ 0.25 | percent }}", "nl", "25%"),
    ("{{ d | date('short') }}", "nl-BE", "4/12/2026"),
    ("{{ t | datetime('short', tz='Europe/Brussels') }}", "en", "12/4/26, 7:30 PM"),
    ("{{ t | time(tz='Europe/Brussels') }}", "nl", "19:30"),
    ("{{ p | currency('USD') }}", "en", "$9.99"),
])
def test_babel_filters(source: str, locale: str, expected: str) -> None:
    doc = parse_document({"name": "f", "locales": {locale: {"text": source}}})
    data = {"n": 1234567.891, "d": "2026-12-04", "t": "2026-12-04T18:30:00Z", "p": "9.99"}
    assert render(doc, locale, data).get("text") == expected


@pytest.mark.parametrize(("source", "missing"), [
    ("{{ order.id }}", "order.id"),
    ("{{ customer.name }}", "customer.name"),
    ("{{ order.customer.name }}", "order.customer.name"),
    ("{{ order['ref'] }}", "order.ref"),
    ("{{ lines.3.sku }}", "lines.3.sku"),
    ("{% if coupon %}x{% endif %}", "coupon"),
    ("{% for l in items %}{{ l }}{% endfor %}", "items"),
])
def test_a_missing_placeholder_is_named(source: str, missing: str) -> None:
    doc = parse_document({"name": "m", "locales": {"nl": {"text": source}}})
    with pytest.raises(TemplateError) as exc:
        render(doc, "nl", {"order": {"total": 3}, "lines": [{"sku": "a"}]})
    assert _error(exc)["field"] == f"template.data.{missing}"
    assert f"placeholder {missing} is missing" in _error(exc)["message"]
    assert "field text" in _error(exc)["message"]


def test_defined_checks_and_defaults_are_allowed() -> None:
    doc = parse_document({"name": "m", "locales": {"en": {
        "text": "{{ name | default('customer') }}{% if order is defined %}!{% endif %}"}}})
    assert render(doc, "en", {}).get("text") == "customer"


def test_a_value_a_filter_cannot_read_is_an_error_naming_the_field() -> None:
    doc = parse_document({"name": "m", "locales": {"en": {"sms_text": "{{ d | date }}"}}})
    with pytest.raises(TemplateError) as exc:
        render(doc, "en", {"d": "yesterday"})
    assert _error(exc)["field"] == "template.data"
    assert "field sms_text" in _error(exc)["message"] and "yesterday" in _error(exc)["message"]


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ 'x' * 100000000 }}",
    "{{ 10 ** 1000000 }}",
    "{% for i in range(1000000) %}{% endfor %}",
])
def test_the_sandbox_refuses_unsafe_templates(source: str) -> None:
    doc = parse_document({"name": "s", "locales": {"en": {"text": source + "a"}}})
    with pytest.raises(TemplateError) as exc:
        render(doc, "en", {})
    assert _error(exc)["field"] == "template.data"


def test_no_autoescape_for_plain_text() -> None:
    doc = parse_document({"name": "p", "locales": {"en": {"text": "{{ q }}"}}})
    assert render(doc, "en", {"q": "<b>Tom & Jerry's</b>"}).get("text") == (
        "<b>Tom & Jerry's</b>")


# --- storage and use ---------------------------------------------------------------------

def test_versions_are_per_app(temp_db: Path) -> None:
    doc = parse_document(DOC)
    with session_scope() as session:
        assert templates.save_template(session, "shop", doc).version == 1
        assert templates.save_template(session, "shop", doc).version == 2
        assert templates.save_template(session, "bank", doc).version == 1
        assert templates.find_template(session, "shop", "order_shipped").version == 2
        assert templates.find_template(session, "bank", "order_shipped", 2) is None
        assert templates.find_template(session, "other", "order_shipped") is None
        assert [t.version for t in templates.latest_templates(session, "shop")] == [2]


def test_render_request_fills_the_content_and_records_the_version(temp_db: Path) -> None:
    with session_scope() as session:
        templates.save_template(session, "shop", parse_document(DOC))
        request = SendRequest.model_validate({
            "to": {"phone": "+32470123456"}, "route": ["viber", "sms"],
            "template": {"name": "order_shipped", "locale": "nl-BE", "data": DATA}})
        rendered, use = templates.render_request(session, "shop", request)
    assert use.as_dict() == {"name": "order_shipped", "version": 1, "locale": "nl-BE"}
    assert rendered.template is None
    assert rendered.text == "Uw bestelling A-17 is onderweg (€ 1.234,50)."
    assert rendered.button is not None and rendered.button.text == "Volg"
    assert str(rendered.button.url) == "https://shop.example/t/A-17"
    assert [(b.id, b.caption) for b in rendered.buttons] == [("track", "Volg A-17")]


def test_the_rendered_request_must_still_be_valid(temp_db: Path) -> None:
    doc = parse_document({"name": "long", "locales": {"en": {"text": "{{ body }}"}}})
    with session_scope() as session:
        templates.save_template(session, "shop", doc)
        request = SendRequest.model_validate({
            "to": {"phone": "+32470123456"}, "route": ["sms"],
            "template": {"name": "long", "data": {"body": "x" * 3000}}})
        with pytest.raises(TemplateError) as exc:
            templates.render_request(session, "shop", request)
    assert _error(exc)["field"] == "text"
    assert "template long v1 (en)" in _error(exc)["message"]


def test_request_buttons_keep_their_ids_and_take_the_captions(temp_db: Path) -> None:
    body = {"buttons": [{"id": "track", "caption": "Track", "action": "https://a.example"},
                        {"id": "other", "caption": "Other"}]}
    rendered = templates.Rendered("nl", {"buttons.track": "Volg"})
    out = templates.apply_content(body, rendered)
    assert out["buttons"] == [
        {"id": "track", "caption": "Volg", "action": "https://a.example"},
        {"id": "other", "caption": "Other"}]


def test_text_and_template_together_are_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="give text or template"):
        SendRequest.model_validate({"to": {"phone": "+32470123456"}, "route": ["sms"],
                                    "text": "hi", "template": {"name": "x"}})


def test_unknown_template_and_version_are_named(temp_db: Path) -> None:
    with session_scope() as session:
        templates.save_template(session, "shop", parse_document(DOC))
        with pytest.raises(TemplateError) as exc:
            templates.require_template(session, "shop", "nope")
        assert _error(exc)["field"] == "template.name"
        with pytest.raises(TemplateError) as exc:
            templates.require_template(session, "shop", "order_shipped", 9)
        assert _error(exc)["field"] == "template.version"
        with pytest.raises(TemplateError):  # another app's template is not there
            templates.require_template(session, "bank", "order_shipped")


def test_preview_gives_channels_and_the_sms_cost() -> None:
    body = templates.preview(parse_document(DOC), "nl-NL", DATA)
    assert body["locale"] == "nl" and body["requested_locale"] == "nl-NL"
    assert body["channels"]["sms"]["text"] == "Bestelling A-17: € 1.234,50"
    assert body["channels"]["viber"]["text"] == "Bestelling A-17 is verzonden."
    assert body["sms"]["encoding"] == "GSM-7"  # € is in the extension table
    assert body["sms"]["length"] == len("Bestelling A-17: € 1.234,50") + 1
    assert body["sms"]["segments"] == 1
