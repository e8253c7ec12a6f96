"""Action links: ``/l/<token>`` starts a flow for the contact the link was made for.

The token is the link row's random id plus an HMAC of it, so a guessed or altered token is
refused before any database read, and a leaked database alone cannot mint links. Single-use
links are claimed with a compare-and-set, so two clicks start one run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
import uuid
from datetime import timedelta
from functools import cache
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from shared.flows import runtime
from shared.models import Flow, FlowLink, FlowRun, utcnow
from shared.settings import get_settings


class LinkRefused(Exception):
    """The link cannot start a run; ``status`` is the HTTP answer (404 or 410)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def make_link(session: Session, flow: Flow, contact: dict[str, Any], single_use: bool,
              expires_in: int | None) -> tuple[FlowLink, str]:
    """A new link row and its token."""
    link = FlowLink(id=str(uuid.uuid4()), flow_id=flow.id, app_id=flow.app_id, contact=contact,
                    single_use=single_use,
                    expires_at=utcnow() + timedelta(seconds=expires_in) if expires_in else None)
    session.add(link)
    session.flush()
    return link, f"{link.id}.{_sign(link.id)}"


def follow(session: Session, token: str) -> FlowRun:
    """Start the link's flow (its latest version) for its contact; raises ``LinkRefused``."""
    link_id, _, signature = token.partition(".")
    if not signature or not hmac.compare_digest(signature, _sign(link_id)):
        raise LinkRefused(404, "unknown link")
    link = session.get(FlowLink, link_id)
    if link is None:
        raise LinkRefused(404, "unknown link")
    now = utcnow()
    if link.expires_at is not None and link.expires_at <= now:
        raise LinkRefused(410, "this link has expired")
    if link.single_use and session.execute(update(FlowLink).where(
            FlowLink.id == link.id, FlowLink.used_at.is_(None))
            .values(used_at=now)).rowcount != 1:
        raise LinkRefused(410, "this link has already been used")
    flow = session.get(Flow, link.flow_id)
    assert flow is not None
    latest = runtime.find_flow(session, flow.app_id, flow.name) or flow
    run = runtime.create_run(session, latest, link.contact, link.app_id, "link")
    link.run_id = run.id
    if not link.single_use:
        link.used_at = now
    return run


def _sign(link_id: str) -> str:
    digest = hmac.new(_key(), link_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


def _key() -> bytes:
    configured = get_settings().link_secret.get_secret_value()
    return configured.encode() if configured else _local_key()


@cache
def _local_key() -> bytes:
    """Without ``SWITCHBOARD_LINK_SECRET``: a random key kept in the data directory, so links
    survive restarts of a single-host install."""
    path = get_settings().data_dir / "link-secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL: of several processes starting at once, exactly one writes the key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    for _ in range(100):  # the writer may not have finished yet
        key = path.read_text().strip()
        if key:
            return key.encode()
        time.sleep(0.01)
    raise RuntimeError(f"{path} is empty; delete it or set SWITCHBOARD_LINK_SECRET")
