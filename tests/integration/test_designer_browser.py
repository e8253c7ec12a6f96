"""The flow designer and the dashboard in a real headless Chromium, against the whole stack.

One browser session (module-scoped) does it all, as a person would: build a three-step flow
by dragging steps from the palette and a button's port onto a step (ActionChains), save it
and see version 1 listed; add a step nothing leads to and see the server's error on it, then
delete it from the keyboard; try the saved flow for a messenger test contact of the
simulator, watch each step light up as the run reaches it (the test presses the contact's
buttons through the simulator), see the result, and find the answer counted in the results
chart; then open the dashboard and check its Chart.js charts hold data and were drawn.

Screenshots go to ``tmp_path``, or to ``SWITCHBOARD_SCREENSHOT_DIR`` when set (the README's
pictures: ``SWITCHBOARD_SCREENSHOT_DIR=webhooks/static/screenshots``). Skipped, with the
reason, without Debian's chromium and chromium-driver or the selenium package.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.integration.conftest import API_KEY, Stack, wait_for
from tests.integration.test_console_browser import (
    CHROMEDRIVER,
    CHROMIUM,
    _missing,
    assert_real_render,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(_missing()), reason=f"needs {', '.join(_missing())}"),
]
DESIGNER_WINDOW = (1440, 960)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for every check of this module (nothing is downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={DESIGNER_WINDOW[0]},{DESIGNER_WINDOW[1]}",
                "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    driver = webdriver.Chrome(options=options, service=Service(
        executable_path=str(CHROMEDRIVER), log_output=str(log)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("SWITCHBOARD_SCREENSHOT_DIR")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        return Path(wanted)
    return tmp_path_factory.mktemp("screenshots")


def _js_errors(browser: Any) -> list[str]:
    return [e["message"] for e in browser.get_log("browser")
            if e.get("source") == "javascript"]


def _node(browser: Any, step: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f'.drawflow-node[data-step="{step}"]')


def _has_class(browser: Any, step: str, name: str) -> bool:
    return name in (_node(browser, step).get_attribute("class") or "").split()


def _drop_step(browser: Any, kind: str, x: int, y: int) -> None:
    """Drag a palette entry onto the canvas, releasing ``x``, ``y`` from its top left."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = browser.find_element(By.ID, "drawflow")
    item = browser.find_element(By.ID, f"palette-{kind}")
    size = canvas.size
    (ActionChains(browser).click_and_hold(item).move_by_offset(40, 8)
     .move_to_element_with_offset(canvas, x - size["width"] // 2, y - size["height"] // 2)
     .release().perform())


def _link(browser: Any, step: str, port: int, target: str) -> None:
    """Drag from a step's output port (its button ``port``) onto another step's input."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    out = _node(browser, step).find_element(By.CSS_SELECTOR, f".output_{port}")
    into = _node(browser, target).find_element(By.CSS_SELECTOR, ".input_1")
    ActionChains(browser).click_and_hold(out).move_to_element(into).release().perform()


def _checked(browser: Any) -> None:
    """Wait for the live check of the latest change to have answered."""
    wait_for(lambda: browser.execute_script(
        "return document.body.dataset.checking === '' && !!document.body.dataset.checked"),
        10, 0.05, "the live check")


def _model(browser: Any) -> dict[str, Any]:
    return browser.execute_script("return window.switchboardDesigner.model()")


def _press_button(stack: Stack, message_id: str, answer_id: str) -> None:
    """The test contact presses a button: the simulator posts messaging.update."""
    auth = {"Authorization": f"Bearer {API_KEY}"}
    view = wait_for(lambda: (v := requests.get(f"{stack.api_url}/v1/messages/{message_id}",
                                               headers=auth, timeout=5).json())
                    and v.get("attempts") and v["attempts"][0]["provider_message_id"] and v,
                    30, 0.1, "the step's messenger message")
    key, email = view["attempts"][0]["provider_message_id"], view["to"]["email"]
    requests.post(f"{stack.messenger.base_url}/_sim/callback", timeout=5, json={
        "method": "messaging.update", "params": {
            "status": 7, "answer_id": answer_id, "received_timestamp": 1,
            "acked_timestamp": 2, "member": email, "message_key": key,
            "parent_message_key": key, "tag": None, "result_key": str(uuid.uuid4()),
            "service_identity": "+default+", "user_details": [
                {"email": email, "name": "Tester", "language": "en", "avatar_url": None,
                 "app_id": "rogerthat"}]}}).raise_for_status()


def _step_message(stack: Stack, run_id: str, step: str) -> str:
    auth = {"Authorization": f"Bearer {API_KEY}"}

    def find() -> str | None:
        run = requests.get(f"{stack.api_url}/v1/flow-runs/{run_id}", headers=auth,
                           timeout=5).json()
        visits = [s for s in run["steps"] if s.get("step_id") == step]
        return visits[-1]["message_id"] if visits else None
    return wait_for(find, 30, 0.1, f"step {step} to be sent")


def test_build_check_save_try_and_read_a_flow(stack: Stack, browser: Any, shots: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    host = urlsplit(stack.api_url).netloc
    name = f"designed-{uuid.uuid4().hex[:6]}"
    browser.get(f"http://operator:{API_KEY}@{host}/console/flows/new")
    wait_for(lambda: browser.execute_script("return document.body.dataset.designerReady"),
             10, 0.05, "the designer")
    field = browser.find_element(By.ID, "flow-name")
    field.send_keys(name, Keys.TAB)

    # Three steps dragged from the palette, two buttons linked by dragging their ports.
    _drop_step(browser, "message", 60, 60)
    _drop_step(browser, "message", 380, 60)
    _drop_step(browser, "end", 700, 120)
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".drawflow-node")) == 3, 5,
             message="three steps on the canvas")
    assert [s["id"] for s in _model(browser)["steps"]] == ["message_1", "message_2", "end_1"]
    _link(browser, "message_1", 1, "message_2")
    _link(browser, "message_2", 1, "end_1")
    _checked(browser)
    steps = _model(browser)["steps"]
    assert steps[0]["buttons"][0]["next"] == "message_2"
    assert steps[1]["buttons"][0]["next"] == "end_1"
    problems = browser.find_element(By.ID, "problems").text
    assert "No problems" in problems, problems

    # Delete a link (select it, press Delete): the button has no next, shown on its step.
    node_id = _node(browser, "message_1").get_attribute("id")  # node-<n>: the link's class
    path = browser.find_element(By.CSS_SELECTOR, f".connection.node_out_{node_id} .main-path")
    ActionChains(browser).move_to_element(path).click().perform()
    browser.find_element(By.ID, "drawflow").send_keys(Keys.DELETE)
    wait_for(lambda: "next" not in _model(browser)["steps"][0]["buttons"][0], 5, 0.05,
             "the link removed")
    _checked(browser)
    assert "missing next" in _node(browser, "message_1").text
    _link(browser, "message_1", 1, "message_2")  # and linked again
    _checked(browser)
    assert "No problems" in browser.find_element(By.ID, "problems").text
    layout = _model(browser)["layout"]
    assert layout["message_2"]["x"] > layout["message_1"]["x"] + 200  # where it was dropped

    # A step nothing leads to: the server's error is shown on it, before saving.
    _drop_step(browser, "end", 380, 420)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '.drawflow-node[data-step="end_2"]')
             and _has_class(browser, "end_2", "has-error"), 10, 0.05, "the error on end_2")
    assert "no path from the start reaches this step" in _node(browser, "end_2").text
    assert not _has_class(browser, "message_1", "has-error")
    browser.save_screenshot(str(shots / "designer.png"))
    assert_real_render((shots / "designer.png").read_bytes())
    _node(browser, "end_2").click()  # select it, then delete it from the keyboard
    browser.find_element(By.ID, "drawflow").send_keys(Keys.DELETE)  # the canvas has focus
    wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR,
                                               '.drawflow-node[data-step="end_2"]'), 5,
             message="end_2 deleted")
    _checked(browser)
    assert "No problems" in browser.find_element(By.ID, "problems").text

    # Save: version 1, listed on the page it opens.
    browser.find_element(By.ID, "save").click()
    wait_for(lambda: browser.current_url.endswith(f"/console/flows/{name}/edit"), 10,
             message="the saved flow's page")
    wait_for(lambda: browser.execute_script("return document.body.dataset.designerReady"),
             10, 0.05, "the designer")
    assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#versions a")] == ["v1"]
    assert len(browser.find_elements(By.CSS_SELECTOR, ".drawflow-node")) == 3
    assert _model(browser)["layout"]["message_2"] == layout["message_2"]  # positions kept

    # The document view: the same flow as YAML; an edit there comes back onto the canvas.
    browser.find_element(By.ID, "tab-yaml").click()
    text_area = browser.find_element(By.ID, "yaml-text")
    wait_for(lambda: f"name: {name}" in (text_area.get_attribute("value") or ""), 10, 0.05,
             "the YAML document")
    document = text_area.get_attribute("value")
    assert "layout:" in document and "next: message_2" in document
    browser.execute_script("arguments[0].value = arguments[1];", text_area,
                           document.replace("text: New message", "text: Pick a day", 1))
    browser.find_element(By.ID, "yaml-apply").click()
    wait_for(lambda: _model(browser)["steps"][0]["text"] == "Pick a day", 10, 0.05,
             "the YAML edit applied")
    browser.find_element(By.ID, "tab-canvas").click()
    assert "Pick a day" in _node(browser, "message_1").text

    # Try it: each step lights up as the run reaches it; the result appears at the end.
    email = f"silent.friend-{uuid.uuid4().hex[:6]}@example.com"
    browser.find_element(By.ID, "try-contact").send_keys(email)
    browser.find_element(By.ID, "try-start").click()
    run_id = wait_for(lambda: browser.execute_script("return document.body.dataset.tryRun"),
                      10, 0.05, "the run to start")
    wait_for(lambda: _has_class(browser, "message_1", "current"), 30, 0.1, "message_1 lit")
    _press_button(stack, _step_message(stack, run_id, "message_1"), "b1")
    wait_for(lambda: _has_class(browser, "message_2", "current"), 30, 0.1, "message_2 lit")
    assert _has_class(browser, "message_1", "visited")
    _press_button(stack, _step_message(stack, run_id, "message_2"), "b1")
    wait_for(lambda: browser.execute_script("return document.body.dataset.tryDone"), 30, 0.1,
             "the run's result")
    assert "finished at end end_1" in browser.find_element(By.ID, "try-status").text
    assert all(_has_class(browser, s, "visited") for s in ("message_1", "message_2", "end_1"))
    assert '"end_id": "end_1"' in browser.find_element(By.ID, "try-result").text

    # The results page counts the answer in its charts.
    browser.get(f"http://{host}/console/flows/{name}")
    wait_for(lambda: browser.execute_script("return document.body.dataset.resultsDrawn"), 10,
             0.05, "the results charts")
    chart = browser.execute_script(
        "var c = Chart.getChart(document.getElementById('chart-1-message_1'));"
        "return {type: c.config.type, labels: c.data.labels, data: c.data.datasets[0].data};")
    assert chart["type"] == "pie"
    assert chart["data"][chart["labels"].index("Option 1 (b1)")] == 1
    funnel = browser.execute_script(
        "return Chart.getChart(document.getElementById('funnel-1')).data.datasets[0].data")
    assert funnel == [1, 1, 0, 0]  # started, finished, timed out, failed
    assert _js_errors(browser) == []


def test_dashboard_draws_its_charts(stack: Stack, browser: Any, shots: Path) -> None:
    host = urlsplit(stack.api_url).netloc
    sent = [stack.post_message(to={"phone": phone}, route=route, text="Dashboard check")
            for phone, route in (("+32471660001", ["viber", "sms"]),  # Viber fails: SMS
                                 ("+32471660009", ["viber", "sms"]), ("+32471660008", ["sms"]))]
    for response in sent:
        assert response.status_code == 202, response.text
        stack.wait_status(response.json()["id"], {"delivered", "seen"}, timeout=40)
    browser.get(f"http://operator:{API_KEY}@{host}/console")
    assert browser.title.startswith("Dashboard")
    wait_for(lambda: browser.execute_script("return document.body.dataset.dashboard"), 15,
             0.05, "the dashboard's charts")
    charts = browser.execute_script(
        "return ['status', 'channel', 'fallback', 'latency', 'webhooks'].map(function (n) {"
        "  var c = Chart.getChart(document.getElementById('chart-' + n));"
        "  return c ? {labels: c.data.labels.length, points: c.data.datasets.reduce("
        "    function (s, d) { return s + d.data.length; }, 0)} : null; });")
    assert all(c is not None for c in charts), charts
    assert charts[0]["labels"] >= 1 and charts[0]["points"] >= 1  # the stack sent messages
    assert charts[4]["points"] == 4  # delivered, pending, retrying, failed
    fallback = browser.execute_script(
        "var c = Chart.getChart(document.getElementById('chart-fallback'));"
        "return [c.data.labels, c.data.datasets[0].data];")
    assert fallback[1][fallback[0].index("viber>sms")] > 0
    # The status doughnut drew real pixels: many colours on its canvas.
    colours = browser.execute_script(
        "var c = document.getElementById('chart-status'), ctx = c.getContext('2d');"
        "var d = ctx.getImageData(0, 0, c.width, c.height).data, seen = {};"
        "for (var i = 0; i < d.length; i += 4 * 7) { if (d[i + 3]) seen[d[i] + ',' + d[i + 1]"
        " + ',' + d[i + 2]] = 1; } return Object.keys(seen).length;")
    assert colours > 10, f"only {colours} colours on the status chart"
    browser.save_screenshot(str(shots / "dashboard.png"))
    assert_real_render((shots / "dashboard.png").read_bytes())
    assert _js_errors(browser) == []
