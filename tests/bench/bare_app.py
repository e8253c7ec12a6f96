"""The baselines' code: a bare Celery task and a bare Flask callback handler.

``bare_send`` runs in the SAME Celery app as the pipeline (``worker.app``: same broker,
database, acks-late/prefetch-1/events settings), so a worker started with
``-A tests.bench.bare_app`` serves both and only the task body differs: one HTTP POST of a
real send request to the simulator and one INSERT, which is the least any dispatcher must do.
``wsgi`` is a Flask app that answers the callback route 200 and does nothing else, served by
the same gunicorn settings as the real receiver.
"""

from __future__ import annotations

from functools import cache

from flask import Flask
from sqlalchemy import text

from shared.db import session_scope
from shared.models import utcnow
from shared.providers.base import OutboundMessage
from shared.providers.messaggio import MessaggioGateway
from shared.settings import get_settings
from worker.app import app

__all__ = ["app", "bare_send", "noop", "wsgi"]


@cache
def _gateway() -> MessaggioGateway:
    return MessaggioGateway.from_settings(get_settings())


@app.task(name="bench.bare_send", acks_late=True)
def bare_send(n: int) -> None:
    """One provider request (the same form fields a Viber send carries) and one INSERT."""
    gateway = _gateway()
    message = OutboundMessage(attempt_id=f"bare-{n}", channel="viber",
                              phones=(f"32470{n % 1000000:06d}",), text="Bench", sms_text="B")
    gateway.send(message)  # the adapter's own request and reply parsing, nothing else
    with session_scope() as session:
        session.execute(text("INSERT INTO bench_rows (n, created_at) VALUES (:n, :at)"),
                        {"n": n, "at": utcnow()})


@app.task(name="bench.noop", acks_late=True)
def noop(n: int) -> None:
    """The enqueue baseline publishes this: Celery's own publish cost, nothing of ours."""


wsgi = Flask("bare")


@wsgi.route("/callbacks/messaggio/<token>", methods=["GET", "POST"])
def bare_callback(token: str) -> tuple[str, int]:
    return "ok", 200


@wsgi.route("/healthz")
def healthz() -> tuple[str, int]:
    return "ok", 200
