"""What the console's flow designer needs around a flow document, kept free of HTTP.

The designer edits an ordinary flow document (``shared.flows.definition``) whose optional
``layout`` holds each step's position on the canvas. A flow saved without one (written by
hand, loaded with ``switchboard flows load``) gets a generated layout: steps in columns by
their distance from the start. The YAML view shows the same document with its keys in the
order people write them, and the results export is one CSV row per run.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

import yaml

COLUMN, ROW, MARGIN = 280, 170, 40  # canvas pixels between generated step positions
_TOP_KEYS = ("name", "description", "route", "native", "triggers", "start", "steps",
             "layout")
_STEP_KEYS = ("id", "type", "text", "buttons", "next", "branding", "alert", "auto_lock",
              "on_timeout", "on_failed")
_BUTTON_KEYS = ("id", "caption", "next", "action")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _targets(step: dict[str, Any]) -> list[str]:
    """The step ids a (possibly invalid) step points at, in drawing order."""
    found = [b.get("next") for b in step.get("buttons") or [] if isinstance(b, dict)]
    found.append(step.get("next"))
    if isinstance(step.get("on_timeout"), dict):
        found.append(step["on_timeout"].get("next"))
    found.append(step.get("on_failed"))
    return [t for t in found if isinstance(t, str) and t]


def generate_layout(data: dict[str, Any]) -> dict[str, dict[str, float]]:
    """A position for every step: kept where the document has one, else in the column of
    its distance from the start (unreached steps in a last column), rows in document order.
    Works on unvalidated data, so a broken document still opens on the canvas."""
    steps = [s for s in data.get("steps") or [] if isinstance(s, dict) and s.get("id")]
    ids = [str(s["id"]) for s in steps]
    given = data.get("layout") if isinstance(data.get("layout"), dict) else {}
    depth = _depths(steps, str(data.get("start") or (ids[0] if ids else "")))
    last = max(depth.values(), default=-1) + 1
    rows: dict[int, int] = {}
    layout: dict[str, dict[str, float]] = {}
    for step_id in ids:
        column = depth.get(step_id, last)
        row = rows.get(column, 0)
        rows[column] = row + 1
        place = given.get(step_id)
        if isinstance(place, dict) and _is_number(place.get("x")) and _is_number(place.get("y")):
            layout[step_id] = {"x": place["x"], "y": place["y"]}
        else:
            layout[step_id] = {"x": MARGIN + column * COLUMN, "y": MARGIN + row * ROW}
    return layout


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _depths(steps: list[dict[str, Any]], start: str) -> dict[str, int]:
    """Breadth-first distance of each reachable step from ``start``."""
    by_id = {str(s["id"]): s for s in steps}
    if start not in by_id:
        return {}
    depth, todo = {start: 0}, [start]
    while todo:
        current = todo.pop(0)
        for target in _targets(by_id[current]):
            if target in by_id and target not in depth:
                depth[target] = depth[current] + 1
                todo.append(target)
    return depth


def with_layout(data: dict[str, Any]) -> dict[str, Any]:
    """The document with a position for every step (the designer's starting point)."""
    return {**data, "layout": generate_layout(data)}


def _ordered(data: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    ordered = {k: data[k] for k in keys if k in data}
    ordered.update({k: v for k, v in data.items() if k not in ordered})
    return ordered


def to_yaml(data: dict[str, Any]) -> str:
    """The document as YAML, keys in the order people write them. ``safe_dump`` quotes
    strings YAML 1.1 would misread (``yes``, ``on``), so it loads back unchanged."""
    doc = _ordered(data, _TOP_KEYS)
    if isinstance(doc.get("steps"), list):
        doc["steps"] = [_step(s) for s in doc["steps"]]
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def _step(step: Any) -> Any:
    if not isinstance(step, dict):
        return step
    out = _ordered(step, _STEP_KEYS)
    if isinstance(out.get("buttons"), list):
        out["buttons"] = [_ordered(b, _BUTTON_KEYS) if isinstance(b, dict) else b
                          for b in out["buttons"]]
    return out


# --- results as CSV ------------------------------------------------------------------------

def _cell(value: Any) -> str:
    """Text a spreadsheet shows as text: a leading ``=``, ``+``, ``-`` or ``@`` (a contact's
    free-text answer) would otherwise run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _answer(entry: dict[str, Any]) -> str:
    answer = entry.get("answer") or {}
    if answer.get("button_id"):
        return f"{answer.get('caption')} ({answer['button_id']})"
    if "text" in answer:
        return str(answer["text"])
    return str(entry.get("outcome") or "")


def _contact(contact: dict[str, Any]) -> str:
    to = contact.get("to") or {}
    conversation = contact.get("conversation") or {}
    return str(to.get("email") or to.get("phone") or conversation.get("consumer_id") or "")


def results_csv(step_ids: list[str], runs: Iterable[dict[str, Any]]) -> str:
    """One row per run (``runtime.result`` dicts): who, which version, how it ended and the
    answer given at each step (the last visit when a step was passed twice)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["run_id", "version", "contact", "trigger", "status", "end_id",
                     "timed_out", "started_at", "finished_at", *step_ids])
    for run in runs:
        answers = {e.get("step_id"): _answer(e) for e in run.get("steps") or []}
        writer.writerow([_cell(v) for v in (
            run["run_id"], run["flow"]["version"], _contact(run.get("contact") or {}),
            run.get("trigger"), run.get("status"), run.get("end_id"), run.get("timed_out"),
            run.get("started_at"), run.get("finished_at"),
            *(answers.get(step_id, "") for step_id in step_ids))])
    return out.getvalue()


def parse_brandings(raw: str) -> list[dict[str, str]]:
    """``SWITCHBOARD_ROGERTHAT_BRANDINGS`` (``key`` or ``key=label``, comma-separated) as
    the designer's dropdown entries; blanks and repeats dropped."""
    seen: dict[str, str] = {}
    for item in raw.split(","):
        key, _, label = item.strip().partition("=")
        if key.strip() and key.strip() not in seen:
            seen[key.strip()] = label.strip() or key.strip()
    return [{"id": key, "label": label} for key, label in seen.items()]
