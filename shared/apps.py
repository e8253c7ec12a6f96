"""Producer apps: who may call the API, where their events go, and how they are signed.

API keys are stored as SHA-256 hashes (a leaked database does not leak keys; keys are long
random tokens, so a plain hash suffices); signing secrets are stored as they are, because we
need them to sign. The bootstrap keys in ``SWITCHBOARD_API_KEYS`` act as the ``default`` app,
whose callback URL and secret come from settings.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from shared.models import DEFAULT_APP, App, AppSettings, utcnow
from shared.settings import get_settings
from shared.signing import new_secret

# How long the previous secret keeps signing beside the new one after a rotation.
DEFAULT_OVERLAP = timedelta(hours=24)


@dataclass(frozen=True)
class NewApp:
    app: App
    api_key: str  # shown once
    signing_secret: str


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def create(session: Session, name: str, callback_url: str | None = None) -> NewApp:
    api_key = "sb_" + secrets.token_urlsafe(32)
    secret = new_secret()
    app = App(id=str(uuid.uuid4()), name=name, api_key_hash=hash_key(api_key),
              callback_url=callback_url, signing_secret=secret)
    session.add(app)
    session.flush()
    return NewApp(app, api_key, secret)


def find(session: Session, name_or_id: str) -> App | None:
    return session.scalars(select(App).where(
        or_(App.id == name_or_id, App.name == name_or_id))).first()


def rotate_secret(session: Session, app: App, overlap: timedelta = DEFAULT_OVERLAP) -> str:
    """A new signing secret for ``app``; the one it replaces keeps signing beside it for
    ``overlap`` (none when zero), so receivers can switch secrets without refusing webhooks.
    A rotation during an overlap drops the older previous secret: two secrets at most."""
    now = utcnow()
    keep = overlap > timedelta(0)
    app.previous_signing_secret = app.signing_secret if keep else None
    app.previous_secret_until = now + overlap if keep else None
    app.signing_secret = new_secret()
    app.secret_rotated_at = now
    return app.signing_secret


def app_for_key(session: Session, api_key: str) -> str | None:
    """The app id an API key belongs to, or None. Bootstrap keys map to ``default``."""
    import hmac

    bootstrap = False
    for key in get_settings().api_key_list:
        bootstrap |= hmac.compare_digest(api_key.encode(), key.encode())
    if bootstrap:
        return DEFAULT_APP
    return session.scalars(select(App.id).where(App.api_key_hash == hash_key(api_key))).first()


def delivery_target(session: Session, app_id: str) -> tuple[str | None, str]:
    """(default callback URL, signing secret) of an app."""
    if app_id == DEFAULT_APP:
        settings = get_settings()
        return settings.default_callback_url, settings.callback_signing_secret.get_secret_value()
    app = session.get(App, app_id)
    if app is None:
        return None, ""
    return app.callback_url, app.signing_secret


def signing_secrets(session: Session, app_id: str, now: datetime | None = None) -> list[str]:
    """Every secret a webhook of ``app_id`` is signed with now: the current one first, then the
    previous one while its rotation overlap lasts. Empty when the app has none (the
    ``default`` app without ``SWITCHBOARD_CALLBACK_SIGNING_SECRET``)."""
    current = delivery_target(session, app_id)[1]
    if not current:
        return []
    app = session.get(App, app_id) if app_id != DEFAULT_APP else None
    if (app is not None and app.previous_signing_secret and app.previous_secret_until
            and app.previous_secret_until > (now or utcnow())):
        return [current, app.previous_signing_secret]
    return [current]


def default_quiet_hours(session: Session, app_id: str) -> dict[str, Any] | None:
    """The app's default quiet hours (``{start, end, timezone}``) for messages naming none;
    there are none globally."""
    settings = session.get(AppSettings, app_id)
    return settings.quiet_hours if settings is not None and settings.quiet_hours else None


def set_quiet_hours(session: Session, app_id: str, quiet: dict[str, Any] | None) -> None:
    """Set (or with None, clear) an app's default quiet hours; the caller commits."""
    settings = session.get(AppSettings, app_id)
    if settings is None:
        session.add(AppSettings(app_id=app_id, quiet_hours=quiet))
    else:
        settings.quiet_hours = quiet


def display_name(session: Session, app_id: str) -> str:
    """An app's name (the bootstrap app's is its id, ``default``)."""
    app = session.get(App, app_id) if app_id != DEFAULT_APP else None
    return app.name if app is not None else app_id
