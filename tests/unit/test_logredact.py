"""The log filter: a configured secret in a message or a traceback never reaches the output."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from shared import logredact
from tests.unit.conftest import clear_caches

SECRET = "s3cr3t-api-key-value-123"


@pytest.fixture()
def captured(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SWITCHBOARD_ROGERTHAT_API_KEY", SECRET)
    clear_caches()
    stream = io.StringIO()
    logger = logging.getLogger("test.logredact")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    logredact.install(logger)
    logredact.install(logger)  # idempotent
    yield logger, stream, handler
    logger.removeHandler(handler)
    clear_caches()


def test_secret_in_message_args_and_traceback_is_redacted(captured) -> None:  # type: ignore[no-untyped-def]
    logger, stream, handler = captured
    assert sum(isinstance(f, logredact.RedactSecrets) for f in handler.filters) == 1
    logger.error("calling with key %s", SECRET)
    try:
        raise RuntimeError(f"header X-Nuntiuz-API-Key: {SECRET}")
    except RuntimeError:
        logger.exception("unexpected")
    output = stream.getvalue()
    assert SECRET not in output
    assert output.count("[redacted]") >= 2 and "RuntimeError" in output


def test_other_messages_pass_unchanged(captured) -> None:  # type: ignore[no-untyped-def]
    logger, stream, _ = captured
    logger.warning("sent %d messages", 3)
    assert stream.getvalue() == "sent 3 messages\n"


def test_secret_path_segments_are_redacted_whatever_their_value() -> None:
    line = ('127.0.0.1 - - "GET /callbacks/messaggio/old-rotated-token?msg_id=1 HTTP/1.1" 200 '
            '"https://x.example/l/link-token-9"')
    redacted = logredact.redact_text(line)
    assert "old-rotated-token" not in redacted and "link-token-9" not in redacted
    assert "/callbacks/messaggio/[redacted]?msg_id=1 HTTP/1.1" in redacted
    assert "/l/[redacted]\"" in redacted


def _unix_get(sock_path: Path, path: str) -> int:
    """One GET over gunicorn's unix socket; returns the status."""
    import http.client
    import socket

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(10)
            self.sock.connect(str(sock_path))

    conn = Connection("localhost", timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def _wait_for(predicate, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_gunicorn_access_log_never_shows_the_callback_token(temp_db: Path, tmp_path: Path,
                                                             ) -> None:
    """The real server, with deploy/gunicorn.conf.py: the gateway's report URL carries the
    token as a path segment, and gunicorn's access log writes the request line."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    token, sock, access, errors = ("tok-" + "7f3a9c" * 4, tmp_path / "g.sock",
                                   tmp_path / "access.log", tmp_path / "error.log")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
           "SWITCHBOARD_DATA_DIR": str(temp_db), "SWITCHBOARD_API_KEYS": "k1",
           "SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN": token, "PYTHONPATH": str(repo)}
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(repo / "deploy" / "gunicorn.conf.py"),
         "--bind", f"unix:{sock}", "--workers", "1", "--access-logfile", str(access),
         "--error-logfile", str(errors), "webhooks.wsgi:app"], env=env, cwd=tmp_path)
    try:
        _wait_for(lambda: "Booting worker" in _read(errors), "gunicorn to boot")
        _wait_for(lambda: _status_or_none(sock, "/healthz") == 200, "the app to answer")
        _unix_get(sock, f"/callbacks/messaggio/{token}?msg_id=x&status=delivered")
        _wait_for(lambda: "/callbacks/messaggio/" in _read(access), "the access log line")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "/callbacks/messaggio/[redacted]?msg_id=x" in _read(access)
    assert token not in _read(access) and token not in _read(errors)


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _status_or_none(sock: Path, path: str) -> int | None:
    try:
        return _unix_get(sock, path)
    except OSError:
        return None
