"""The console's template editor in a real headless Chromium: the live preview follows the
typing (static/console/templates.js posting to /console/templates/preview), shows the SMS
encoding and segments, names a compile error, and saving makes a version the API lists."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.integration.conftest import API_KEY, Stack, wait_for
from tests.integration.test_console_browser import _missing, browser  # noqa: F401 - fixture

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(_missing()), reason=f"needs {', '.join(_missing())}"),
]
DOC = "name: browser_tpl\nlocales:\n  en:\n    text: 'Hi {{ order.id }}'\n"


def _text(browser: Any, element_id: str) -> str:
    return browser.find_element("id", element_id).text


def test_the_editor_previews_while_typing_and_saves(  # noqa: F811 - the imported fixture
        stack: Stack, browser: Any) -> None:
    host = urlsplit(stack.api_url).netloc
    browser.get(f"http://operator:{API_KEY}@{host}/console/templates/new")
    wait_for(lambda: "GSM-7" in _text(browser, "tpl-sms"), 15, message="the first preview")
    editor = browser.find_element("id", "tpl-document")
    browser.execute_script("arguments[0].value = arguments[1];"
                           "arguments[0].dispatchEvent(new Event('input'));", editor,
                           DOC.replace("Hi", "Hi 😀"))
    wait_for(lambda: "UCS-2" in _text(browser, "tpl-sms"), 15, message="the UCS-2 preview")
    assert "Hi 😀 A-17" in _text(browser, "tpl-channels")
    browser.execute_script("arguments[0].value = arguments[1];"
                           "arguments[0].dispatchEvent(new Event('input'));", editor,
                           DOC.replace("}}'", "'"))
    wait_for(lambda: "locales.en.text" in _text(browser, "tpl-errors"), 15,
             message="the compile error")
    browser.execute_script("arguments[0].value = arguments[1];", editor, DOC)
    browser.find_element("id", "tpl-save").click()
    wait_for(lambda: browser.current_url.endswith("/console/templates/browser_tpl"), 15,
             message="the saved template's page")
    listed = requests.get(f"{stack.api_url}/v1/templates/browser_tpl", timeout=10,
                          headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert listed["document"]["locales"]["en"]["text"] == "Hi {{ order.id }}"
