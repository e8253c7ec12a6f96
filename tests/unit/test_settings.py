"""``shared.settings``: production refuses sandbox secrets. A provider with a real URL whose
callback secret is still the public default this repository ships stops the web app, the
workers and ``switchboard up`` with one line naming the variable to set; with the simulators
(no provider URL, as ``switchboard up`` runs them) the defaults keep working."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared import localrun
from shared.settings import (
    Settings,
    SandboxSecretError,
    exit_if_sandbox_secrets,
    refuse_sandbox_secrets,
    sandbox_secret_problems,
)
from tests.unit.conftest import clear_caches

REPO = Path(__file__).resolve().parents[2]
REAL = "https://provider.example/api"


@pytest.fixture(autouse=True)
def _only_our_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(name)
    clear_caches()


def _problems(**env: str) -> str:
    return "; ".join(sandbox_secret_problems(Settings(**env)))


def test_the_simulators_keep_every_sandbox_default() -> None:
    assert sandbox_secret_problems(Settings()) == []


@pytest.mark.parametrize(("env", "variable"), [
    ({"messaggio_url": REAL}, "set SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN"),
    ({"rogerthat_url": REAL}, "set SWITCHBOARD_ROGERTHAT_SERVICE_KEY"),
    ({"contactatonce_url": REAL},
     "set SWITCHBOARD_CONTACTATONCE_API_KEY (the inbound key defaults to it) or "
     "SWITCHBOARD_CONTACTATONCE_INBOUND_KEY"),
    ({"contactatonce_url": REAL, "contactatonce_inbound_key": ""},  # empty: the API key
     "set SWITCHBOARD_CONTACTATONCE_API_KEY"),
    ({"contactatonce_url": REAL, "contactatonce_api_key": "real-cao-key-1",
      "contactatonce_inbound_key": "sandbox-cao-key"}, "set SWITCHBOARD_CONTACTATONCE_INBOUND_KEY"),
])
def test_a_real_url_refuses_its_sandbox_callback_secret(env: dict[str, str],
                                                        variable: str) -> None:
    assert variable in _problems(**env)


@pytest.mark.parametrize("env", [
    {"messaggio_url": REAL, "messaggio_callback_token": "a-long-random-token"},
    {"rogerthat_url": REAL, "rogerthat_service_key": "a-long-random-key"},
    {"contactatonce_url": REAL, "contactatonce_api_key": "real-cao-key-1"},
    {"contactatonce_url": REAL, "contactatonce_inbound_key": "real-inbound-key-1"},
    {"rogerthat_url": REAL, "messaggio_callback_token": "sandbox-callback-token",
     "rogerthat_service_key": "a-long-random-key"},  # the gateway is still the simulator
])
def test_a_real_url_with_its_own_secret_starts(env: dict[str, str]) -> None:
    assert _problems(**env) == ""


def test_every_problem_is_named_on_one_line(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SWITCHBOARD_MESSAGGIO_URL", REAL)
    monkeypatch.setenv("SWITCHBOARD_ROGERTHAT_URL", REAL)
    with pytest.raises(SandboxSecretError):
        refuse_sandbox_secrets()
    with pytest.raises(SystemExit) as info:
        exit_if_sandbox_secrets("web")
    assert info.value.code == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("switchboard web: refusing to start: ")
    assert "SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN" in err
    assert "SWITCHBOARD_ROGERTHAT_SERVICE_KEY" in err


def test_switchboard_up_refuses_before_starting_anything(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SWITCHBOARD_API_KEYS", "k1")  # no generated secrets in os.environ
    monkeypatch.setenv("SWITCHBOARD_CALLBACK_SIGNING_SECRET", "whsec_dGVzdA==")
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "a:b")
    monkeypatch.setenv("SWITCHBOARD_MESSAGGIO_URL", REAL)

    def started(*_: object) -> None:
        raise AssertionError("redis was started")

    monkeypatch.setattr(localrun, "start_embedded_redis", started)
    with pytest.raises(SystemExit) as info:
        localrun.run("127.0.0.1", 8000, 5555, 1, False)
    assert info.value.code == 4


def _process_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    return {**env, "SWITCHBOARD_DATA_DIR": str(tmp_path), "PYTHONPATH": str(REPO), **extra}


@pytest.mark.parametrize("command", [
    [sys.executable, "-c", "import webhooks.wsgi"],  # what gunicorn's workers import
    [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", "send",
     "--pool", "solo", "--loglevel", "INFO"],
])
def test_the_web_app_and_the_worker_do_not_start(tmp_path: Path, command: list[str]) -> None:
    env = _process_env(tmp_path, SWITCHBOARD_CONTACTATONCE_URL=REAL)
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "refusing to start" in line]
    assert len(lines) == 1 and "SWITCHBOARD_CONTACTATONCE_API_KEY" in lines[0]


def test_the_web_app_starts_with_the_simulators(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import webhooks.wsgi"],
                          env=_process_env(tmp_path), cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
