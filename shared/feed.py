"""The producers' event feed (``GET /v1/events``): positions given in commit order.

Event ids are taken when a row is inserted, so on PostgreSQL an event with a lower id can
commit after one with a higher id; a poller paging by id would skip it forever. Instead one
sweeper (every second) numbers committed public events; a late commit simply gets a later
position. Two sweepers racing collide on the unique ``feed_pos`` and one of them retries.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared.messages import PUBLIC_EVENTS
from shared.models import Event


def number_events(session: Session, batch: int = 5000) -> int:
    """Give committed, unnumbered public events the next positions, in id order."""
    top = session.scalar(select(func.max(Event.feed_pos))) or 0
    ids = session.scalars(select(Event.id).where(
        Event.feed_pos.is_(None), Event.type.in_(sorted(PUBLIC_EVENTS)))
        .order_by(Event.id).limit(batch)).all()
    for position, event_id in enumerate(ids, start=top + 1):
        session.execute(update(Event).where(Event.id == event_id).values(feed_pos=position))
    return len(ids)


def page(session: Session, app_id: str, after: int, limit: int) -> list[Event]:
    return list(session.scalars(
        select(Event).where(Event.feed_pos > after, Event.app_id == app_id)
        .order_by(Event.feed_pos).limit(limit)))
