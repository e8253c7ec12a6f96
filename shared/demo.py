"""The demo behind ``switchboard up --demo`` and ``switchboard demo``.

Sends a few messages through the HTTP API to phone numbers whose last digits pick a scenario
in the gateway simulator, then prints each status change as it happens: one delivered and seen,
one answered, one undelivered on Viber that falls back to SMS at once, and one with no Viber
report that falls back to SMS when its 60 s delivery deadline passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from shared.lifecycle import MESSAGE_FINAL, MessageStatus

DEMO_MESSAGES: list[tuple[str, dict[str, Any]]] = [
    ("delivered and seen on Viber", {"to": {"phone": "+32470120000"}}),
    ("answered on Viber", {"to": {"phone": "+32470120003"},
                           "button": {"text": "Confirm", "url": "https://example.com/ok"}}),
    ("not a Viber user: SMS at once", {"to": {"phone": "+32470120001"}}),
    ("no Viber report: SMS after the 60 s deadline", {"to": {"phone": "+32470120002"},
                                                       "dlr_timeout": 60}),
]


def _wait_healthy(api: str, timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{api}/healthz", timeout=2).ok:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.5)
    return False


def _summary(view: dict[str, Any]) -> str:
    hops = ", ".join(f"{a['channel']}={a['status']}" for a in view["attempts"])
    replies = [e["detail"].get("text") for e in view["events"] if e["type"] == "replied"]
    reply = f"  reply: {replies[-1]!r}" if replies else ""
    return f"{view['status']:<10} [{hops}]{reply}"


def _settled(view: dict[str, Any]) -> bool:
    """Nothing more will happen: seen, final, or delivered by SMS (which reports no 'seen')."""
    if view["status"] in (MessageStatus.SEEN, *MESSAGE_FINAL):
        return True
    return view["status"] == MessageStatus.DELIVERED and view["attempts"][-1]["channel"] == "sms"


Out = Callable[[str], None]


def _print(text: str) -> None:
    print(text, flush=True)


def run_demo(api: str, api_key: str, watch_seconds: float = 100.0, out: Out = _print) -> int:
    """Send the demo messages and show their statuses as a table, a row per change, then where
    each ended. ``out`` prints a line (``switchboard up`` passes its console's, so the rows
    never interleave with a process's line)."""
    try:
        return _run(api, api_key, watch_seconds, out)
    except requests.RequestException as exc:  # e.g. Ctrl-C stopped the API mid-demo
        out(f"demo: stopped, the API is not answering ({type(exc).__name__})")
        return 1


ROW = "demo  {:<8}  {:<8}  {:<44}  {}"


def _run(api: str, api_key: str, watch_seconds: float, out: Out) -> int:
    if not _wait_healthy(api):
        out(f"demo: the API at {api} did not come up")
        return 1
    headers = {"Authorization": f"Bearer {api_key}"}
    sent: dict[str, str] = {}
    for label, fields in DEMO_MESSAGES:
        body = {"route": ["viber", "sms"], "text": f"Switchboard demo: {label}",
                "sms_text": "Switchboard demo (SMS)", **fields}
        response = requests.post(f"{api}/v1/messages", json=body, headers=headers, timeout=10)
        response.raise_for_status()
        sent[response.json()["id"]] = label
    out(f"demo: sent {len(sent)} messages; each row is a change of status "
        "(the SMS fallback after a deadline takes about a minute):")
    out(ROW.format("time", "message", "scenario", "status     [attempts]"))
    last = _watch(api, headers, sent, watch_seconds, out)
    out("demo: where they ended:")
    for message_id, label in sent.items():
        out(f"demo  {message_id}  {label:<44}  {last.get(message_id, '?')}")
    out("demo: done; inspect one with `switchboard status <id>`")
    return 0


def _watch(api: str, headers: dict[str, str], sent: dict[str, str], seconds: float,
           out: Out) -> dict[str, str]:
    last: dict[str, str] = {}
    settled: set[str] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(settled) < len(sent):
        for message_id, label in sent.items():
            view = requests.get(f"{api}/v1/messages/{message_id}", headers=headers,
                                timeout=10).json()
            if _settled(view):
                settled.add(message_id)
            line = _summary(view)
            if last.get(message_id) != line:
                last[message_id] = line
                out(ROW.format(time.strftime("%H:%M:%S"), message_id[:8], label, line))
        time.sleep(0.5)
    return last
