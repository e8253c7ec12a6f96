"""The HTTP edge under test: the real app on a fresh, migrated database, every secret set to a
recognisable value, and (only where a test asks for it) the broker publish replaced by an
in-memory recorder, so no Redis or Celery is needed to fuzz the edge.

The database is a SQLite file in a temporary directory, or the PostgreSQL database named by
``SWITCHBOARD_TEST_DATABASE_URL`` (its tables are dropped and migrated first), as in the
integration suite. Every fixture here is module-scoped and restores the environment after.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, create_engine, func, select
from werkzeug.test import TestResponse

from shared import db
from shared.db import session_scope
from shared.migrations import upgrade
from shared.models import Callback, Contact, Delivery, Event, Message
from shared.providers import get_provider
from shared.settings import get_settings

# Recognisable, distinct values (none is a substring of another) so a leak is unmistakable.
SECRETS: dict[str, str] = {
    "SWITCHBOARD_API_KEYS": "rel-apikey-3b8e51d0c7",
    "SWITCHBOARD_MESSAGGIO_SECRET": "rel-mgsecret-9d21f4aa",
    "SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN": "rel-mgtoken-6a0c77e2",
    "SWITCHBOARD_ROGERTHAT_API_KEY": "rel-rtapikey-1e94b2f0",
    "SWITCHBOARD_ROGERTHAT_SERVICE_KEY": "rel-rtservice-5fd3a8c1",
    "SWITCHBOARD_CONTACTATONCE_API_KEY": "rel-caoapikey-72c1e9d4",
    "SWITCHBOARD_CONTACTATONCE_INBOUND_KEY": "rel-caoinbound-0b6d3f58",
    "SWITCHBOARD_CALLBACK_SIGNING_SECRET": "rel-whsec-c4e8a1b6",
}
API_KEY = SECRETS["SWITCHBOARD_API_KEYS"]
AUTH = {"Authorization": f"Bearer {API_KEY}"}
DEAD_URL = "http://127.0.0.1:9/"  # nothing listens: a provider call fails at once
MAX_BODY = 1024 * 1024  # webhooks.app: MAX_CONTENT_LENGTH

EXAMPLES = int(os.environ.get("SWITCHBOARD_FUZZ_EXAMPLES", "25"))
# Bounded and repeatable in CI: no example database written into the work tree.
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------------------
# Environment, database, app
# --------------------------------------------------------------------------------------

def clear_caches() -> None:
    """Settings, engines and adapters are cached per process; drop them after env changes."""
    if db.get_engine.cache_info().currsize:
        db.get_engine().dispose()
    get_settings.cache_clear()
    get_provider.cache_clear()
    db.reset()


def _database_url(tmp: Path) -> str:
    """PostgreSQL when the CI names one (reset first), else a SQLite file in ``tmp``."""
    url = os.environ.get("SWITCHBOARD_TEST_DATABASE_URL")
    if not url:
        return f"sqlite:///{tmp / 'switchboard.db'}"
    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    meta.drop_all(engine)
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def reliability_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Only our SWITCHBOARD_* variables (secrets, dead provider URLs), a migrated database."""
    tmp = tmp_path_factory.mktemp("reliability")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("SWITCHBOARD_") and not name.startswith("SWITCHBOARD_TEST_"):
                mp.delenv(name)
        for name, value in {**SECRETS, "SWITCHBOARD_DATA_DIR": str(tmp),
                            "SWITCHBOARD_DATABASE_URL": _database_url(tmp),
                            "SWITCHBOARD_MESSAGGIO_URL": DEAD_URL,
                            "SWITCHBOARD_ROGERTHAT_URL": DEAD_URL,
                            "SWITCHBOARD_CONTACTATONCE_URL": DEAD_URL,
                            "SWITCHBOARD_EGRESS_ALLOW": "127.0.0.1/32,::1/128"}.items():
            mp.setenv(name, value)
        clear_caches()
        upgrade()
        try:
            yield tmp
        finally:
            clear_caches()


class Recorder:
    """Stands in for the Celery producer app: remembers what would have been published."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def send_task(self, name: str, args: Any = (), **_: Any) -> None:
        self.calls.append((name, tuple(args or ())))


@pytest.fixture(scope="module")
def published(reliability_env: Path) -> Iterator[Recorder]:
    """Every publish through ``shared.client.send_task`` (whatever module imported it)."""
    recorder = Recorder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("shared.client.producer_app", lambda broker_url=None: recorder)
        yield recorder


@pytest.fixture(scope="module")
def app(reliability_env: Path) -> Flask:
    """The production app factory as is (not TESTING: errors go through the real handlers)."""
    from webhooks.app import create_app

    return create_app()


@dataclass
class Edge:
    """What a fuzz test needs: a client, the publish recorder, and row counts."""

    app: Flask
    published: Recorder
    client: Any = field(init=False)

    def __post_init__(self) -> None:
        self.client = self.app.test_client()

    def routed(self, method: str, path: str) -> bool:
        """Whether the app serves this (for table entries whose route may not exist yet)."""
        from webhooks.openapi import Operation, is_routed

        return is_routed(self.app, Operation(method.lower(), path, "", "", {}))


@pytest.fixture(scope="module")
def edge(app: Flask, published: Recorder) -> Edge:
    return Edge(app, published)


TABLES = (Message, Event, Callback, Contact, Delivery)


def row_counts() -> dict[str, int]:
    """Rows per table: compared before/after a request that must store nothing."""
    with session_scope() as session:
        return {model.__tablename__: session.scalar(select(func.count()).select_from(model))
                or 0 for model in TABLES}


# --------------------------------------------------------------------------------------
# What a refusal must look like
# --------------------------------------------------------------------------------------

def json_body(resp: TestResponse) -> Any:
    """The body as JSON (any JSON media type: the messenger's is application/json-rpc)."""
    assert "json" in (resp.mimetype or ""), f"{resp.status_code} is {resp.mimetype}, not JSON"
    return json.loads(resp.get_data())


def _named_fields(body: dict[str, Any]) -> list[str]:
    """Every field name a refusal names, in any of our three error shapes."""
    names = [e.get("field") for e in body.get("errors") or [] if isinstance(e, dict)]
    names.append(body.get("field"))
    if isinstance(body.get("error"), dict):
        names.append(body["error"].get("name"))
    return [n for n in names if isinstance(n, str) and n]


def refusal_message(body: Any) -> str | None:
    """The human message of a refusal in any shape we answer with, or None if there is none:
    ``{"error", "message"}`` (our API), JSON-RPC ``{"error": {"message"}}`` (the messenger),
    ``{"Status": 1, "FailureDescription"}`` (the in-app provider's own shape)."""
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("error"), dict):
        return body["error"].get("message") or None
    if body.get("Status") == 1:
        return body.get("FailureDescription") or None
    if isinstance(body.get("error"), str) and body["error"]:
        return body.get("message") or None
    return None


def assert_edge_answer(resp: TestResponse) -> None:
    """Never a 5xx; any 4xx is a JSON refusal with a message, naming a field on 400/422."""
    assert resp.status_code < 500, f"{resp.status_code}: {resp.get_data()[:500]!r}"
    if resp.status_code < 400:
        return
    body = json_body(resp)
    assert isinstance(refusal_message(body), str), f"no message in {body!r}"
    if resp.status_code in (400, 422):
        assert _named_fields(body), f"{resp.status_code} names no field: {body!r}"


# --------------------------------------------------------------------------------------
# Inputs shared by the fuzz modules
# --------------------------------------------------------------------------------------

# Any text, lone surrogates and NUL included (JSON can carry both as \u escapes).
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT
                | st.sampled_from([2**63, -(2**63) - 1, 10**30, "", " ", "\x00", "\ud800"]))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(ANY_TEXT, inner, max_size=4), max_leaves=12)
LATIN1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                               exclude_characters="\x7f"), max_size=60)
CONTENT_TYPES = st.sampled_from([
    "application/json", "application/json; charset=latin-1", "text/plain",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml",
    "application/octet-stream", "application/json; charset=utf-16", ""])
RAW_BODIES = st.one_of(st.binary(max_size=300), JSON_VALUES.map(json.dumps),
                       st.just(b"\xff\xfe{"), st.just(b""))


def _deep(depth: int) -> str:
    """A JSON object whose ``metadata`` nests ``depth`` objects deep."""
    return '{"metadata": ' + '{"a": ' * depth + "1" + "}" * depth + "}"


# Wrongly encoded or oddly built bodies: (raw bytes, content type).
ENCODINGS: dict[str, tuple[bytes, str]] = {
    "invalid-utf8": (b'{"text": "\xff\xfe\xc3\x28"}', "application/json"),
    "utf16": ('{"text": "hi"}'.encode("utf-16"), "application/json"),
    "bom": (b'\xef\xbb\xbf{"text": "hi"}', "application/json"),
    "latin1-declared": ('{"text": "caf\xe9"}'.encode("latin-1"),
                        "application/json; charset=latin-1"),
    "json-as-text-plain": (json.dumps({"text": "hi"}).encode(), "text/plain"),
    "form": (b"to=x&route=sms&text=hi", "application/x-www-form-urlencoded"),
    "multipart": (b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n--x--\r\n",
                  "multipart/form-data; boundary=x"),
    "array": (b"[1, 2]", "application/json"),
    "string": (b'"hello"', "application/json"),
    "null": (b"null", "application/json"),
    "number": (b"1e400", "application/json"),
    "deep-array": (b"[" * 200_000 + b"]" * 200_000, "application/json"),
    "deep-object": (_deep(5000).encode(), "application/json"),
    "deep-just-parseable": (_deep(900).encode(), "application/json"),
    "deep-yaml": (b"[" * 200_000 + b"]" * 200_000, "application/yaml"),
    "yaml-alias-bomb": (b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
        b"%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n" % ((n + 1, n + 1) + (n,) * 9)
        for n in range(ord("a"), ord("j"))), "application/yaml"),
    "nan": (b'{"metadata": {"a": NaN, "b": Infinity, "c": 1e400}}', "application/json"),
    "huge-int": (b'{"dlr_timeout": 1' + b"0" * 5000 + b"}", "application/json"),
    "nul": (b'{"text": "a\\u0000b", "idempotency_key": "k\\u0000"}', "application/json"),
    "lone-surrogate": (b'{"text": "\\ud800", "idempotency_key": "\\udfff"}',
                       "application/json"),
    "duplicate-keys": (b'{"text": "a", "text": "b"}', "application/json"),
    "control-chars": (b'{"text": "a\x01\x02b"}', "application/json"),
}
