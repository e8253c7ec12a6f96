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

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from shared.models import DEFAULT_APP, App, utcnow
from shared.settings import get_settings


@dataclass(frozen=True)
class NewApp:
    app: App
    api_key: str  # shown once
    signing_secret: str


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def create(session: Session, name: str, callback_url: str | None = None) -> NewApp:
    api_key = "sb_" + secrets.token_urlsafe(32)
    secret = "whsec_" + secrets.token_urlsafe(32)
    app = App(id=str(uuid.uuid4()), name=name, api_key_hash=hash_key(api_key),
              callback_url=callback_url, signing_secret=secret)
    session.add(app)
    session.flush()
    return NewApp(app, api_key, secret)


def find(session: Session, name_or_id: str) -> App | None:
    return session.scalars(select(App).where(
        or_(App.id == name_or_id, App.name == name_or_id))).first()


def rotate_secret(session: Session, app: App) -> str:
    app.signing_secret = "whsec_" + secrets.token_urlsafe(32)
    app.secret_rotated_at = utcnow()
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
