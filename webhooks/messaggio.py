"""Callbacks from the Viber+SMS gateway: ``GET|POST /callbacks/messaggio/<token>``.

The gateway signs nothing (providers.md §2.5), so the unguessable path token is the secret,
compared in constant time, optionally backed by a source-IP allowlist. A wrong token gets the
same 404 as a path that does not exist, and nothing is stored.

Behind reverse proxies the source address is the client's only when the app trusts them
(``SWITCHBOARD_TRUSTED_PROXIES``, applied in ``webhooks.app.create_app``); otherwise it is the
nearest proxy's, and an allowlist of the gateway's addresses refuses every report.
"""

from __future__ import annotations

import hmac
import ipaddress

from flask import Blueprint, abort, request

from shared.providers import get_provider
from shared.settings import get_settings
from webhooks.inbound import request_params, store_and_enqueue

messaggio = Blueprint("messaggio", __name__)


def _ip_allowed(remote_addr: str | None, allowlist: list[str]) -> bool:
    """Whether the report's source address is on the allowlist (empty: any). An address
    that is not one (a proxy's ``X-Forwarded-For`` may carry anything) is not allowed."""
    if not allowlist:
        return True
    try:
        address = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(entry, strict=False) for entry in allowlist)


@messaggio.route("/callbacks/messaggio/<token>", methods=["GET", "POST"])
def report(token: str):  # type: ignore[no-untyped-def]
    """Store one report for a worker; 404 for a wrong token or source address."""
    settings = get_settings()
    expected = settings.messaggio_callback_token.get_secret_value()
    if not hmac.compare_digest(token.encode(), expected.encode()):
        abort(404)
    if not _ip_allowed(request.remote_addr, settings.messaggio_callback_ip_list):
        abort(404)
    return store_and_enqueue("messaggio", request_params(),
                             get_provider("messaggio").parse_callback)
