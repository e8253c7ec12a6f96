"""WSGI entry point for gunicorn: ``gunicorn webhooks.wsgi:app``.

A provider with a real URL and its sandbox callback secret stops the server here with one
line naming the variable to set (``shared.settings.exit_if_sandbox_secrets``), before any
request can be accepted with a secret published in this repository.
"""

from shared.settings import exit_if_sandbox_secrets
from webhooks.app import create_app

exit_if_sandbox_secrets("web")
app = create_app()
