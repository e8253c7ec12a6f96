"""Flask app factory: the producer API, provider callbacks and health, all answering JSON."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from sqlalchemy import text
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from shared import circuits, client, logredact, metrics, uow
from shared.db import get_engine
from shared.settings import get_settings

log = logging.getLogger(__name__)


def create_app() -> Flask:
    app = Flask("switchboard", static_folder=None)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024  # bigger bodies: 413 before any parsing
    app.url_map.merge_slashes = False  # "//" is a JSON 404, not an HTML redirect
    logredact.install(app.logger, logging.getLogger("gunicorn.error"),
                      logging.getLogger("gunicorn.access"))  # the token in a report's path
    _install_publisher()
    _trust_proxies(app)

    from webhooks.api import api
    from webhooks.campaigns import campaigns_api
    from webhooks.consent import consent_api
    from webhooks.console_consent import console_consent
    from webhooks.console import console
    from webhooks.console_cancel import console_cancel
    from webhooks.contactatonce import contactatonce
    from webhooks.conversations import conversations
    from webhooks.designer import designer
    from webhooks.flows import flows
    from webhooks.messaggio import messaggio
    from webhooks.openapi import openapi
    from webhooks.rogerthat import rogerthat
    from webhooks.templates_api import templates_api
    from webhooks.console_templates import console_templates
    from webhooks.stats import stats_api

    app.register_blueprint(api)
    app.register_blueprint(campaigns_api)
    app.register_blueprint(consent_api)
    app.register_blueprint(console_consent)
    app.register_blueprint(console)
    app.register_blueprint(console_cancel)
    app.register_blueprint(designer)
    app.register_blueprint(contactatonce)
    app.register_blueprint(conversations)
    app.register_blueprint(flows)
    app.register_blueprint(messaggio)
    app.register_blueprint(rogerthat)
    app.register_blueprint(templates_api)
    app.register_blueprint(console_templates)
    app.register_blueprint(stats_api)
    app.register_blueprint(openapi)
    app.add_url_rule("/healthz", "healthz", healthz)
    app.add_url_rule("/metrics", "metrics", metrics_view)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    return app


def _trust_proxies(app: Flask) -> None:
    """Behind ``SWITCHBOARD_TRUSTED_PROXIES`` reverse proxies, ``request.remote_addr`` is the
    client's address from their ``X-Forwarded-For`` (the callback IP allowlist reads it),
    not the nearest proxy's. Only that many hops, counted from ours, are believed: the
    entries a client adds itself sit further left and are never read. Zero trusts none."""
    hops = get_settings().trusted_proxies
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops)  # type: ignore[method-assign]


def _install_publisher() -> None:
    """Committed follow-ups of this process leave through the producer-side publisher (tasks
    by name on their queues), unless one is installed already: a test's recorder, or the
    worker's when the app runs inside a worker process."""
    previous = uow.set_publisher(client.publish_followups)
    if previous is not None:
        uow.set_publisher(previous)


def healthz():  # type: ignore[no-untyped-def]
    """Liveness plus a database round trip; the broker is checked by the workers themselves.
    ``providers`` shows each provider's circuit breaker: informational, an open circuit (sends
    waiting) is not an unhealthy web process."""
    providers = circuits.describe()
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - report, don't crash the probe
        return jsonify(status="error", database=type(exc).__name__, providers=providers), 503
    return jsonify(status="ok", database="ok", providers=providers)


def metrics_view() -> Response:
    """Prometheus scrape: the counts of every process on this host (shared/metrics.py) plus
    queue depth, stuck messages and circuit states read now."""
    body, content_type = metrics.exposition(_circuit_states)
    return Response(body, content_type=content_type)


def _http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
    name = (exc.name or "error").lower().replace(" ", "_")
    return jsonify(error=name, message=exc.description), exc.code or 500


def _unexpected_error(exc: Exception):  # type: ignore[no-untyped-def]
    log.exception("unhandled error")
    return jsonify(error="internal_error", message="the server hit an unexpected error"), 500


def _circuit_states() -> dict[str, tuple[str, str | None]]:
    """Each provider's circuit state and the reason it opened, for the scrape."""
    return {p: (c.state, c.reason) for p, c in circuits.circuit_states().items()}
