"""Flow documents: what a producer writes (YAML or JSON) and the checks that make it runnable.

A flow is a graph of steps joined by step ids: message steps (buttons, each naming its next
step), free-text questions, results flushes and ends. Everything here is pure: validation
happens once, when the document is loaded, so the runtime can walk a definition without
meeting a dangling reference, an unreachable step or a flow that can never finish. Every
refusal names the step it is about (``steps.<id>...``) through ``shared.schemas.error_list``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.schemas import _ACTION_SCHEMES, Alert, Channel, Strict, _field_error, error_list

StepId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]
Tag = Annotated[str, Field(min_length=1, max_length=500)]
Keyword = Annotated[str, Field(min_length=1, max_length=200)]
MAX_TIMEOUT = 7 * 86400
# Captions the messenger's flow validator refuses outright (providers.md §1.9 source).
_NATIVE_RESERVED_CAPTIONS = frozenset({"roger that", "in"})
COORDINATE = 1_000_000  # layout positions beyond this are a typo, not a canvas
# A problem found by the cross-step checks: (field, message, step id it is about or None).
Problem = tuple[str, str, str | None]


class _FlowModel(Strict):
    """Hand-written YAML says ``id: 1`` or ``caption: 2``; take such numbers as the text."""

    model_config = ConfigDict(coerce_numbers_to_str=True)


class Button(_FlowModel):
    """One answer of a message step; choosing it moves the run to ``next``."""

    id: str = Field(min_length=1, max_length=100)
    caption: str = Field(min_length=1, max_length=200)
    next: StepId
    action: str | None = Field(default=None, max_length=2048)

    @field_validator("action")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        """The same rule as ``schemas.AnswerButton.action``: the messenger refuses others."""
        if value and not value.lower().startswith(_ACTION_SCHEMES):
            raise ValueError("action must start with tel:, geo:, http(s):, mailto: or confirm:")
        return value or None


class StepTemplate(_FlowModel):
    """A saved message template (``shared.templates``) whose ``text`` (and ``buttons``
    captions, by button id) replace the step's when it is sent; the data it renders with is
    ``data`` plus the run's ``contact`` and ``answers`` so far (step id → caption or text).
    The step's own text stays the designer's label and the native flows' content."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    version: int | None = Field(default=None, ge=1, lt=2**31)
    locale: str | None = Field(default=None, min_length=2, max_length=35)
    data: dict[str, Any] = Field(default_factory=dict)


class Timeout(_FlowModel):
    """Where a run goes when a step gets no answer within ``after`` seconds."""

    after: int = Field(ge=1, le=MAX_TIMEOUT)
    next: StepId


class MessageStep(_FlowModel):
    """A message with buttons (numbered options on channels without buttons)."""

    type: Literal["message"] = "message"
    id: StepId
    text: str = Field(min_length=1, max_length=2048)
    buttons: list[Button] = Field(min_length=1, max_length=20)
    template: StepTemplate | None = None
    branding: str | None = Field(default=None, min_length=1, max_length=200)
    alert: Alert | None = None
    auto_lock: bool = True
    on_timeout: Timeout | None = None
    on_failed: StepId | None = None


class QuestionStep(_FlowModel):
    """A free-text question: whatever the contact replies is kept and the run goes on."""

    type: Literal["question"] = "question"
    id: StepId
    text: str = Field(min_length=1, max_length=2048)
    template: StepTemplate | None = None
    next: StepId
    on_timeout: Timeout | None = None
    on_failed: StepId | None = None


class FlushStep(_FlowModel):
    """Sends the results so far to the producer, then continues at ``next``."""

    type: Literal["flush"] = "flush"
    id: StepId
    next: StepId


class EndStep(_FlowModel):
    """The run is over; its id travels with the results so producers know how it ended."""

    type: Literal["end"] = "end"
    id: StepId


Step = Annotated[MessageStep | QuestionStep | FlushStep | EndStep, Field(discriminator="type")]
AnyStep = MessageStep | QuestionStep | FlushStep | EndStep


class StepPosition(_FlowModel):
    """Where the console's designer drew a step (canvas pixels); the runtime never reads it."""

    x: float = Field(ge=-COORDINATE, le=COORDINATE)
    y: float = Field(ge=-COORDINATE, le=COORDINATE)


class FlowTriggers(_FlowModel):
    """What starts a flow besides the API: a messenger poke (menu item, QR code) with one of
    ``poke_tags``, or an inbound text equal to one of ``keywords`` (trimmed, any case)."""

    poke_tags: list[Tag] = Field(default_factory=list, max_length=100)
    keywords: list[Keyword] = Field(default_factory=list, max_length=100)

    def matches_keyword(self, text: str | None) -> bool:
        """Whether an inbound text is one of the keywords (whole text, case-insensitive)."""
        wanted = (text or "").strip().casefold()
        return bool(wanted) and any(k.casefold() == wanted for k in self.keywords)


class FlowDefinition(_FlowModel):
    """A whole flow, checked so that every run can be walked to an end."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str | None = Field(default=None, max_length=2000)
    start: StepId | None = None  # default: the first step
    route: list[Channel] = Field(default_factory=lambda: ["rogerthat"], min_length=1,
                                 max_length=5)
    native: bool = False
    triggers: FlowTriggers = Field(default_factory=FlowTriggers)
    steps: list[Step] = Field(min_length=1, max_length=200)
    # Designer layout metadata (step id -> position): saved with the flow, ignored by runs.
    layout: dict[StepId, StepPosition] | None = Field(default=None, max_length=200)

    _problems: list[Problem] = PrivateAttr(default_factory=list)

    @field_validator("route")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a channel may appear only once in a route")
        return value

    @model_validator(mode="after")
    def _runnable(self, info: ValidationInfo) -> FlowDefinition:
        """The cross-step checks: the first problem refuses the flow, unless the caller asked
        for all of them (``diagnose``, the designer's live check) with ``collect_problems``."""
        problems = cross_step_problems(self)
        if problems and not (info.context or {}).get("collect_problems"):
            field, message, _ = problems[0]
            raise _field_error(field, message)
        self._problems = problems
        return self

    # --- helpers for the runtime ------------------------------------------------------------

    def step(self, step_id: str) -> AnyStep:
        """The step with this id; KeyError if there is none."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(f"flow {self.name} has no step {step_id!r}")

    def start_step(self) -> AnyStep:
        """Where every run begins: ``start``, else the first step."""
        return self.step(self.start or self.steps[0].id)

    def next_of(self, step: AnyStep) -> list[str]:
        """Every step id this step can lead to (answers, timeout, failure), without repeats."""
        return list(dict.fromkeys(target for _, target in _edges(step)))


# --- validation ---------------------------------------------------------------------------------

def _edges(step: AnyStep) -> Iterator[tuple[str, str]]:
    """(field naming the reference, target step id) for every way out of a step."""
    prefix = f"steps.{step.id}"
    if isinstance(step, MessageStep):
        for button in step.buttons:
            yield f"{prefix}.buttons.{button.id}.next", button.next
    if isinstance(step, QuestionStep | FlushStep):
        yield f"{prefix}.next", step.next
    if isinstance(step, MessageStep | QuestionStep):
        if step.on_timeout is not None:
            yield f"{prefix}.on_timeout.next", step.on_timeout.next
        if step.on_failed is not None:
            yield f"{prefix}.on_failed", step.on_failed


def normalize_answer(text: str) -> str:
    """A reply or caption as compared: case-folded, inner spaces collapsed, surrounding
    spaces and punctuation dropped ("  Yes, please! " -> "yes, please")."""
    folded = " ".join(text.casefold().split())
    start, end = 0, len(folded)
    while start < end and _is_edge_noise(folded[start]):
        start += 1
    while end > start and _is_edge_noise(folded[end - 1]):
        end -= 1
    return folded[start:end]


def _is_edge_noise(char: str) -> bool:
    return char.isspace() or unicodedata.category(char)[0] in "PZ"


def cross_step_problems(flow: FlowDefinition) -> list[Problem]:
    """Every cross-step problem, in the order the checks were written (the first is what
    ``POST /v1/flows`` answers): unique ids, references, native limits, reachability."""
    problems = [*_unique_steps(flow), *_references(flow)]
    if flow.native:
        problems.extend(_native(flow))
    problems.extend(_unreachable(flow))
    return problems


def _unique_steps(flow: FlowDefinition) -> Iterator[Problem]:
    """Step ids, and button ids and captions within a step, must be unique."""
    seen: set[str] = set()
    for step in flow.steps:
        if step.id in seen:
            yield f"steps.{step.id}", "duplicate step id", step.id
        seen.add(step.id)
        if isinstance(step, MessageStep):
            yield from _buttons(step)


def _buttons(step: MessageStep) -> Iterator[Problem]:
    ids = [b.id for b in step.buttons]
    if len(set(ids)) != len(ids):
        yield f"steps.{step.id}.buttons", "button ids must be unique in a step", step.id
    captions = [normalize_answer(b.caption) for b in step.buttons]
    if len(set(captions)) != len(captions):
        yield (f"steps.{step.id}.buttons",
               "button captions must differ (ignoring case and punctuation), "
               "or a typed answer could not tell them apart", step.id)


def _references(flow: FlowDefinition) -> Iterator[Problem]:
    """``start`` and every ``next``/``on_timeout.next``/``on_failed`` must name a step."""
    ids = {step.id for step in flow.steps}
    if flow.start is not None and flow.start not in ids:
        yield "start", f"no step has the id {flow.start!r}", None
    for step in flow.steps:
        for field, target in _edges(step):
            if target not in ids:
                yield field, f"no step has the id {target!r}", step.id


def _native(flow: FlowDefinition) -> Iterator[Problem]:
    """What the messenger's own flow engine cannot do (providers.md §1.9)."""
    if flow.route != ["rogerthat"]:
        yield ("native", 'a native flow runs on the messenger only: route must be ["rogerthat"]',
               None)
    for step in flow.steps:
        for name in ("on_timeout", "on_failed", "template"):
            if getattr(step, name, None) is not None:
                yield (f"steps.{step.id}.{name}", f"a native flow cannot have {name}: the "
                       "messenger runs it and has no such thing", step.id)
        if isinstance(step, MessageStep):
            for button in step.buttons:
                if button.caption.lower() in _NATIVE_RESERVED_CAPTIONS:
                    yield (f"steps.{step.id}.buttons.{button.id}.caption",
                           "the messenger refuses this caption in a flow", step.id)


def _unreachable(flow: FlowDefinition) -> Iterator[Problem]:
    """Every step is reached from the start, and an end is reached from the start. A native
    flow also needs an end reachable from every step (the messenger refuses traps)."""
    ids = {step.id for step in flow.steps}
    start = flow.start if flow.start in ids else flow.steps[0].id
    reached = _reachable(flow, start)
    for step in flow.steps:
        if step.id not in reached:
            yield f"steps.{step.id}", "no path from the start reaches this step", step.id
    ends = {step.id for step in flow.steps if isinstance(step, EndStep)}
    if not ends & reached:
        yield "steps", "no end step is reachable from the start", None
    if flow.native:
        for step in flow.steps:
            if not ends & _reachable(flow, step.id):
                yield (f"steps.{step.id}", "no end is reachable from this step (the messenger "
                       "refuses flows that can trap a user)", step.id)


def _reachable(flow: FlowDefinition, start: str) -> set[str]:
    """Step ids reached from ``start``; a reference to no step leads nowhere (reported by
    ``_references``), so a flow with one still gets its other problems listed."""
    ids = {step.id for step in flow.steps}
    seen, todo = {start}, [start]
    while todo:
        for target in flow.next_of(flow.step(todo.pop())):
            if target in ids and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


# --- loading documents ---------------------------------------------------------------------------

class FlowDocumentError(ValueError):
    """The document could not be read at all (not YAML/JSON, or not an object)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false. YAML 1.1 would turn button ids
    and step names like ``yes``, ``no``, ``on`` and ``off`` into booleans."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                              re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def _parse(text: str, content_type: str | None) -> Any:
    if _is_json(content_type):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise FlowDocumentError("body", f"not valid JSON: {exc}") from None
        except RecursionError:
            raise FlowDocumentError("body", "not valid JSON: nested too deep") from None
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise FlowDocumentError("body", f"not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise FlowDocumentError("body", "not valid YAML: nested too deep") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return problem
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"


def parse_document(text: str, content_type: str | None = None) -> dict[str, Any]:
    """A flow document as data, not yet validated; ``FlowDocumentError`` if unreadable."""
    data = _parse(text, content_type)
    if not isinstance(data, dict):
        raise FlowDocumentError("body", "the document must be an object with name and steps")
    return data


def diagnose(data: dict[str, Any]) -> tuple[FlowDefinition | None, list[dict[str, Any]]]:
    """The definition (None if its fields are invalid) and every problem found, each as
    ``{"field", "message", "step"}`` with the id of the step it is about (or None): the
    console's designer marks the offending steps with these before anything is saved. The
    rules are the ones ``load_definition`` applies; the cross-step checks run once every
    field is valid, as there."""
    try:
        flow = FlowDefinition.model_validate(data, context={"collect_problems": True})
    except ValidationError as exc:
        return None, [{**error, "step": _step_of(data, loc)}
                      for error, loc in zip(error_list(exc), _locations(exc), strict=True)]
    return flow, [{"field": field, "message": message, "step": step}
                  for field, message, step in flow._problems]


def _locations(exc: ValidationError) -> list[tuple[Any, ...]]:
    return [tuple(err.get("loc", ())) for err in exc.errors()]


def _step_of(data: dict[str, Any], loc: tuple[Any, ...]) -> str | None:
    """The id of the step a field error is inside (``steps.<index>...``), when it has one."""
    steps = data.get("steps")
    if len(loc) < 2 or loc[0] != "steps" or not isinstance(loc[1], int):
        return None
    if not isinstance(steps, list) or not 0 <= loc[1] < len(steps):
        return None
    step = steps[loc[1]]
    step_id = step.get("id") if isinstance(step, dict) else None
    return str(step_id) if isinstance(step_id, str | int) and str(step_id) else None


def load_definition(text: str, content_type: str | None = None) -> FlowDefinition:
    """Parse and validate a flow document: JSON for JSON content types, else YAML (of which
    JSON is a subset). Raises ``FlowDocumentError`` for an unreadable document, pydantic's
    ``ValidationError`` (fields named by ``shared.schemas.error_list``) for invalid content."""
    return FlowDefinition.model_validate(parse_document(text, content_type))
