"""The gateway's report URL (webhooks/messaggio.py) behind reverse proxies: the source-IP
allowlist reads the client's address from ``X-Forwarded-For`` only for the
``SWITCHBOARD_TRUSTED_PROXIES`` hops the app factory trusts (webhooks/app.py, Werkzeug's
``ProxyFix``), never an entry the client wrote itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from pydantic import ValidationError
from sqlalchemy import select

from shared.db import session_scope
from shared.models import Callback
from shared.settings import Settings
from shared.uow import FollowUps
from tests.unit.conftest import clear_caches
from webhooks.app import create_app

URL = "/callbacks/messaggio/tok"
REPORT = {"msg_id": "aaaaaaaa-0000-0000-0000-000000000001", "p_transaction_id": "att-1",
          "type": "delivery", "status": "delivered"}
GATEWAY = "203.0.113.7"  # on the allowlist
PROXY = "10.0.0.5"  # our reverse proxy, the TCP peer of the app


@pytest.fixture
def app_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             published: list[FollowUps]) -> Iterator[Callable[[int], FlaskClient]]:
    """A client of the app built with ``SWITCHBOARD_TRUSTED_PROXIES`` hops trusted and the
    gateway's network on the allowlist."""
    monkeypatch.setenv("SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN", "tok")
    monkeypatch.setenv("SWITCHBOARD_MESSAGGIO_CALLBACK_IPS", "203.0.113.0/24, 192.0.2.1")

    def build(hops: int) -> FlaskClient:
        monkeypatch.setenv("SWITCHBOARD_TRUSTED_PROXIES", str(hops))
        clear_caches()
        app = create_app()
        app.config["TESTING"] = True
        return app.test_client()

    yield build
    clear_caches()


def _post(client: FlaskClient, peer: str, forwarded: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    return client.post(URL, data=REPORT, headers=headers,
                       environ_base={"REMOTE_ADDR": peer}).status_code


def _stored() -> list[str | None]:
    with session_scope() as session:
        return list(session.scalars(select(Callback.remote_addr)))


def test_by_default_no_proxy_is_trusted(app_with: Callable[[int], FlaskClient]) -> None:
    client = app_with(0)
    assert _post(client, PROXY, GATEWAY) == 404  # the proxy is not the gateway
    assert _post(client, "198.51.100.9", GATEWAY) == 404  # nor does a client's header count
    assert _stored() == []
    assert _post(client, GATEWAY) == 200  # the gateway calling us directly
    assert _stored() == [GATEWAY]


def test_behind_one_trusted_proxy_the_gateways_address_is_the_one_checked(
        app_with: Callable[[int], FlaskClient]) -> None:
    client = app_with(1)
    assert _post(client, PROXY, GATEWAY) == 200
    assert _stored() == [GATEWAY]  # and the stored callback names the gateway, not the proxy


def test_an_address_the_client_added_itself_is_not_believed(
        app_with: Callable[[int], FlaskClient]) -> None:
    """The proxy appends the address it saw; anything left of it is the client's own text."""
    client = app_with(1)
    assert _post(client, PROXY, f"{GATEWAY}, 198.51.100.9") == 404
    assert _stored() == []


def test_two_trusted_hops_read_the_address_before_both(
        app_with: Callable[[int], FlaskClient]) -> None:
    client = app_with(2)
    assert _post(client, PROXY, f"{GATEWAY}, 10.0.0.9") == 200
    assert _post(client, PROXY, f"198.51.100.9, {GATEWAY}") == 404  # one hop short
    assert _stored() == [GATEWAY]


def test_a_forwarded_value_that_is_no_address_is_refused_not_an_error(
        app_with: Callable[[int], FlaskClient]) -> None:
    client = app_with(1)
    assert _post(client, PROXY, "unknown") == 404
    assert _stored() == []


def test_trusted_proxies_is_a_count_of_hops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHBOARD_TRUSTED_PROXIES", raising=False)
    assert Settings().trusted_proxies == 0
    monkeypatch.setenv("SWITCHBOARD_TRUSTED_PROXIES", "-1")
    with pytest.raises(ValidationError, match="trusted_proxies"):
        Settings()
