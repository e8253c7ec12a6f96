"""The operator console in a real headless Chromium, on a message that went through the stack.

A message falls back from Viber to SMS (the simulator's ``…0001`` scenario) through the real
API, worker, simulator and callbacks; then a browser logs in with basic auth, filters the list
with the form, clicks through to the timeline and reads it, and a screenshot of the timeline is
decoded to check that something real was drawn.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; skipped with
the reason when one is missing.
"""

from __future__ import annotations

import importlib.util
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.integration.conftest import API_KEY, Stack, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PHONE = "+32471550001"  # ends in 0001: Viber undelivered, then SMS delivered
WINDOW = (1280, 900)


def _missing() -> list[str]:
    missing = [f"{p} (apt-get install {name})"
               for p, name in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver"))
               if not p.exists()]
    if importlib.util.find_spec("selenium") is None:
        missing.append("the selenium package (pip install selenium)")
    return missing


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(_missing()), reason=f"needs {', '.join(_missing())}"),
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium driven by the system chromedriver (nothing is downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars"):
        options.add_argument(arg)
    service = Service(executable_path=str(CHROMEDRIVER),
                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


# --- a small PNG reader (no Pillow): enough to tell a real render from a blank one ----------

def _chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[pos + 8 + length:
                                                                   pos + 12 + length])[0]
        yield kind, body
        pos += 12 + length


def _unfilter(kind: int, line: bytearray, prior: bytes, bpp: int) -> None:
    """Undo one scanline's PNG filter in place (RFC 2083, section 6)."""
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up, corner = prior[i], prior[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + up) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc
                                  else corner)) & 0xFF


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, RGB(A) rows) of an 8-bit, non-interlaced RGB or RGBA PNG."""
    chunks = list(_chunks(data))
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, interlace) == (8, 0) and colour in (2, 6), (depth, colour, interlace)
    bpp = 4 if colour == 6 else 3
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = width * bpp + 1
    assert len(raw) == stride * height
    rows, prior = [], bytes(stride - 1)
    for y in range(height):
        line = bytearray(raw[y * stride + 1:(y + 1) * stride])
        _unfilter(raw[y * stride], line, prior, bpp)
        rows.append(prior := bytes(line))
    return width, height, rows


def assert_real_render(png: bytes) -> None:
    """A full-window picture with text on it: many colours, mostly not the background."""
    width, height, rows = decode_png(png)
    assert width >= WINDOW[0] // 2 and height >= WINDOW[1] // 2, (width, height)
    bpp = len(rows[0]) // width
    pixels = [row[x:x + 3] for row in rows[::4] for x in range(0, len(row), bpp * 4)]
    background = max(set(pixels), key=pixels.count)
    assert len(set(pixels)) > 20, f"only {len(set(pixels))} colours: a blank page?"
    assert sum(p != background for p in pixels) > len(pixels) // 50, "almost all background"


# --- the test ------------------------------------------------------------------------------

def _send_with_fallback(stack: Stack) -> dict[str, Any]:
    """A real message through the pipeline, once its timeline shows both hops settled."""
    response = stack.post_message(to={"phone": PHONE}, route=["viber", "sms"],
                                  text="Console <b>check</b>", sms_text="Console check (SMS)")
    assert response.status_code == 202, response.text
    message_id = response.json()["id"]
    stack.wait_status(message_id, {"delivered"}, timeout=40)
    return wait_for(lambda: (view := stack.get_message(message_id))
                    and [a["status"] for a in view["attempts"]] == ["undelivered", "delivered"]
                    and any(e["type"] == "fallback" for e in view["events"]) and view,
                    20, 0.1, "both attempts and the fallback on the timeline")


def test_console_renders_a_real_message_timeline(stack: Stack, browser: Any,
                                                 tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    view = _send_with_fallback(stack)
    message_id = view["id"]
    host = urlsplit(stack.api_url).netloc

    browser.get(f"http://operator:{API_KEY}@{host}/console/messages")  # as a person logging in
    assert browser.title.startswith("Messages")
    field = browser.find_element(By.ID, "f-recipient")
    field.send_keys(PHONE)
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait_for(lambda: "recipient=" in browser.current_url, 10, message="the filtered list")
    browser.find_element(By.CSS_SELECTOR, f'a[href$="/console/messages/{message_id}"]').click()
    wait_for(lambda: browser.current_url.endswith(f"/console/messages/{message_id}"), 10,
             message="the timeline page")

    attempts = browser.find_element(By.CSS_SELECTOR, "table.attempts").text
    for text in ("viber", "sms", "messaggio", "undelivered", "delivered",
                 view["attempts"][1]["provider_message_id"]):
        assert text in attempts, f"{text!r} not in the attempts table:\n{attempts}"
    assert "viber sms" in browser.find_element(By.CSS_SELECTOR, "table.fallbacks").text
    events = browser.find_element(By.CSS_SELECTOR, "table.events").text
    assert all(e["type"] in events for e in view["events"])
    assert browser.find_element(By.CSS_SELECTOR, "table.callbacks").text.count("messaggio") >= 2
    assert "Console <b>check</b>" in browser.find_element(By.TAG_NAME, "body").text  # escaped

    png = browser.get_screenshot_as_png()
    (tmp_path / "console-timeline.png").write_bytes(png)
    assert_real_render(png)
