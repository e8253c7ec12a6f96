"""The handler table: what happens when the engine sees an occurrence of a kind.

The engine applies a report to its attempt (``shared.lifecycle``) and then only says what
happened — a contact changed, a poke, a native flow's result, an inbound message, a reply, a
message that ended — by dispatching an ``Occurrence``. The features that care (flows, contacts,
conversations) register here by kind, so the engine never calls one of them by name and a new
feature adds a handler instead of a branch.

Handlers of a kind run in ``order``; the first that returns ``True`` consumes the occurrence
(e.g. a native flow result that belongs to a run is not also posted as a bare app event). They
register follow-ups on the unit of work they are given, so they leave after its commit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from shared.messages import add_app_event
from shared.providers.base import ProviderEvent

# The modules that register handlers; imported on first dispatch (they import this one).
HANDLER_MODULES = ("shared.consent", "shared.contacts", "shared.conversations",
                   "shared.flows.handlers")
NOTIFY_ORDER = 100  # telling the producer comes after the features had their say


@dataclass(frozen=True)
class Occurrence:
    """Something the engine saw: a provider event that matched no attempt (``contact``,
    ``poke``, ``flow_result``, ``inbound``), a ``reply`` to one of our messages, or a message
    that reached a final status (``message_final``)."""

    kind: str
    provider: str | None = None
    event: ProviderEvent | None = None
    answer: object = None  # the answer our receiver already gave the provider (friendships)
    message_id: str | None = None
    attempt_id: str | None = None
    status: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


Handler = Callable[[Any, Occurrence], bool | None]  # (unit of work, occurrence) -> consumed?
_TABLE: dict[str, list[tuple[int, Handler]]] = {}
_loaded = False


def on(kind: str, order: int = 0) -> Callable[[Handler], Handler]:
    """Register the decorated function for occurrences of ``kind``."""
    def register(handler: Handler) -> Handler:
        entries = _TABLE.setdefault(kind, [])
        if all(existing is not handler for _, existing in entries):
            entries.append((order, handler))
            entries.sort(key=lambda entry: entry[0])
        return handler
    return register


def handlers_for(kind: str) -> list[Handler]:
    _load()
    return [handler for _, handler in _TABLE.get(kind, [])]


def dispatch(work: Any, occurrence: Occurrence) -> bool:
    """Run the handlers of the occurrence's kind until one consumes it; returns whether one
    did. ``work`` is the caller's ``shared.uow.UnitOfWork``."""
    for handler in handlers_for(occurrence.kind):
        if handler(work, occurrence):
            return True
    return False


def _load() -> None:
    global _loaded
    if not _loaded:
        for module in HANDLER_MODULES:
            import_module(module)
        _loaded = True


# --- the producer hears of what no feature consumed -------------------------------------

@on("poke", order=NOTIFY_ORDER)
@on("flow_result", order=NOTIFY_ORDER)
def tell_the_producer(work: Any, occurrence: Occurrence) -> bool:
    """A poke (after any flow it triggers started) or a native flow result no run claimed."""
    assert occurrence.event is not None
    add_app_event(work.session, occurrence.kind,
                  {"channel": occurrence.provider, **occurrence.event.data})
    return True
