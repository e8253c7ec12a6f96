"""Callbacks from the Viber+SMS gateway: ``GET|POST /callbacks/messaggio/<token>``.

The gateway signs nothing (providers.md §2.5), so the unguessable path token is the secret,
compared in constant time, optionally backed by a source-IP allowlist. A wrong token gets the
same 404 as a path that does not exist, and nothing is stored.
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
    if not allowlist:
        return True
    if not remote_addr:
        return False
    address = ipaddress.ip_address(remote_addr)
    return any(address in ipaddress.ip_network(entry, strict=False) for entry in allowlist)


@messaggio.route("/callbacks/messaggio/<token>", methods=["GET", "POST"])
def report(token: str):  # type: ignore[no-untyped-def]
    settings = get_settings()
    expected = settings.messaggio_callback_token.get_secret_value()
    if not hmac.compare_digest(token.encode(), expected.encode()):
        abort(404)
    if not _ip_allowed(request.remote_addr, settings.messaggio_callback_ip_list):
        abort(404)
    return store_and_enqueue("messaggio", request_params(),
                             get_provider("messaggio").parse_callback)
