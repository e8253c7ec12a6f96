"""The deployment files (deploy/) checked against the code they deploy.

Every ``SWITCHBOARD_*`` name, every ``celery -A worker.app ...``, ``switchboard ...`` and
``gunicorn ...`` command found in deploy/ must exist in the code: a renamed setting, queue,
option or subcommand fails here rather than in production. The Celery side runs in a
subprocess (importing ``worker.app`` reads the settings once, for good), on a clean environment.

The YAML checks need PyYAML; without it they are skipped and the rest still runs.
"""

from __future__ import annotations

import configparser
import contextlib
import importlib.util
import io
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, TypeAdapter

from shared.cli import _parser as cli_parser
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
ENV_EXAMPLE = DEPLOY / ".env.example"
INSTALL_DIR = "/opt/switchboard"  # where the systemd units expect the checkout

SETTINGS = {"SWITCHBOARD_" + name.upper(): field for name, field in Settings.model_fields.items()}
SECRET_SETTINGS = {env for env, field in SETTINGS.items() if field.annotation is SecretStr}
SETTING_RE = re.compile(r"\bSWITCHBOARD_[A-Z0-9_]*[A-Z0-9]")
NO_YAML = "PyYAML is not installed: add pyyaml to the test extra"


def _rel(path: Path) -> str:
    return str(path.relative_to(DEPLOY))


def deploy_files() -> list[Path]:
    """Every file of deploy/, except a local .env (real secrets, never committed)."""
    return sorted(p for p in DEPLOY.rglob("*")
                  if p.is_file() and p.name != ".env" and "__pycache__" not in p.parts)


YAML_FILES = [p for p in deploy_files() if p.suffix in (".yml", ".yaml")]
UNIT_FILES = sorted(SYSTEMD.glob("*.service"))


def _yaml_module() -> Any | None:
    try:
        import yaml
    except ImportError:
        return None
    return yaml


def load_yaml(path: Path) -> list[Any]:
    yaml = _yaml_module()
    if yaml is None:
        pytest.skip(NO_YAML)
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    return [(_rel(path), doc) for path in sorted(K8S.glob("*.yaml")) for doc in load_yaml(path)]


def k8s_objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in k8s_docs() if doc.get("kind") == kind}


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def compose_services() -> dict[str, dict[str, Any]]:
    return load_yaml(COMPOSE)[0]["services"]


def settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A Settings built from exactly these SWITCHBOARD_* values (validates their types)."""
    for key in list(os.environ):
        if key.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("SWITCHBOARD_"):
            monkeypatch.setenv(key, value)
    return Settings()


def env_example() -> tuple[dict[str, str], set[str]]:
    """.env.example as (active NAME=value lines, names only present commented out)."""
    active: dict[str, str] = {}
    commented: set[str] = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        if m := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line.strip()):
            assert m[1] not in active, f".env.example sets {m[1]} twice"
            active[m[1]] = m[2]
        elif m := re.fullmatch(r"#\s*([A-Z][A-Z0-9_]*)=.*", line.strip()):
            commented.add(m[1])
    return active, commented - set(active)


# --- commands: collected from every kind of file ---------------------------------------------


@dataclass(frozen=True)
class Command:
    where: str  # file relative to deploy/, plus what in it
    argv: tuple[str, ...]

    @property
    def program(self) -> str:
        return Path(self.argv[0]).name

    @property
    def flavour(self) -> str:
        first = self.where.split("/")[0].split(":")[0]
        names = {"docker-compose.yml": "compose", "k8s": "k8s", "systemd": "systemd"}
        return names.get(first, first)


def _simple_commands(script: str) -> list[list[str]]:
    """Split a shell script into simple commands (argv lists), dropping redirections."""
    commands: list[list[str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        skip_next = False
        for token in lexer:
            if skip_next:
                skip_next = False
            elif token and set(token) <= set(";|&()"):
                if current:
                    commands.append(current)
                current = []
            elif token and set(token) <= set("<>&") or re.fullmatch(r"\d[<>]&?", token):
                skip_next = True
            else:
                current.append(token)
        if current:
            commands.append(current)
    return commands


def _expand(argv: list[str]) -> Iterator[list[str]]:
    """argv as run: leading exec/env/assignments dropped, `sh -c` and `python -m` unwrapped."""
    while argv and (argv[0] in ("exec", "env", "{", "}", "$")
                    or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0])):
        argv = argv[1:]
    if not argv:
        return
    program = Path(argv[0]).name
    if program in ("sh", "bash", "dash") and "-c" in argv[:-1]:
        for inner in _simple_commands(argv[argv.index("-c") + 1]):
            yield from _expand(inner)
    elif program.startswith("python") and argv[1:2] == ["-m"] and len(argv) > 2:
        yield [argv[2], *argv[3:]]
    else:
        yield argv


def _yaml_commands(where: str, node: Any) -> Iterator[Command]:
    if isinstance(node, list):
        for item in node:
            yield from _yaml_commands(where, item)
        return
    if not isinstance(node, dict):
        return
    argv: list[str] | None = None
    command, args = node.get("command"), node.get("args")
    if isinstance(command, list):  # Kubernetes container or probe, compose exec form
        argv = [str(x) for x in command] + [str(x) for x in args or []]
    elif isinstance(command, str):  # compose string form: split like a shell, no shell
        argv = shlex.split(command)
    elif isinstance(args, list):
        argv = [str(x) for x in args]
    if argv:
        for expanded in _expand(argv):
            yield Command(where, tuple(expanded))
    test = node.get("test")  # compose healthcheck
    if isinstance(test, list) and test and test[0] == "CMD":
        yield from (Command(where, tuple(a)) for a in _expand([str(x) for x in test[1:]]))
    elif (isinstance(test, list) and test and test[0] == "CMD-SHELL") or isinstance(test, str):
        script = test if isinstance(test, str) else " ".join(test[1:])
        for simple in _simple_commands(script):
            yield from (Command(where, tuple(a)) for a in _expand(simple))
    for key, value in node.items():
        if key not in ("command", "args"):
            yield from _yaml_commands(where, value)


def _unit_value_to_argv(value: str, unit: str) -> list[str]:
    value = value.lstrip("-@:+!")
    specifiers = {"%": "%", "i": "1", "I": "1", "H": "host", "n": unit, "N": unit}
    value = re.sub(r"%(.)", lambda m: specifiers.get(m[1], "x"), value)
    return shlex.split(value.replace("$$", "$"))


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _dockerfile_commands() -> Iterator[Command]:
    for keyword, rest in dockerfile_instructions():
        if keyword == "HEALTHCHECK":
            rest = rest.split(" CMD ", 1)[1] if " CMD " in rest else ""
        elif keyword not in ("CMD", "ENTRYPOINT", "RUN"):
            continue
        if rest.startswith("["):
            argvs = list(_expand(json.loads(rest)))
        else:
            argvs = [a for simple in _simple_commands(rest) for a in _expand(simple)]
        yield from (Command(f"Dockerfile:{keyword}", tuple(a)) for a in argvs)


def _readme_commands(path: Path) -> Iterator[Command]:
    for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", path.read_text(), re.DOTALL):
        for line in block.splitlines():
            for simple in _simple_commands(line.strip().removeprefix("$ ")):
                yield from (Command(f"{_rel(path)}:code", tuple(a)) for a in _expand(simple))


@cache
def all_commands() -> tuple[Command, ...]:
    """Every command in deploy/ (YAML files only when PyYAML is installed)."""
    found: list[Command] = []
    yaml = _yaml_module()
    for path in deploy_files():
        if path.suffix in (".yml", ".yaml"):
            if yaml is not None:
                for doc in yaml.safe_load_all(path.read_text()):
                    found += _yaml_commands(_rel(path), doc)
        elif path.parent == SYSTEMD and path.suffix == ".service":
            unit = read_unit(path)
            for section in unit.sections():
                for key, value in unit.items(section):
                    if key.startswith("Exec"):
                        found += (Command(f"{_rel(path)}:{key}", tuple(a))
                                  for a in _expand(_unit_value_to_argv(value, path.name)))
        elif path == DOCKERFILE:
            found += _dockerfile_commands()
        elif path.suffix == ".md":
            found += _readme_commands(path)
    return tuple(found)


def commands_of(program: str) -> list[Command]:
    return [c for c in all_commands() if c.program == program]


# The Celery side, in a clean subprocess: import the app named by -A, parse each command with
# Celery's own click commands (unknown options and bad values fail), report queues.
CELERY_CHECK = r"""
import contextlib, importlib, io, json, sys
import click
from celery.bin.base import CLIContext
from celery.bin.celery import celery as cli

request = json.load(sys.stdin)
result = {"errors": [], "commands": [], "imports": {}, "queues": []}
for target in request["imports"]:
    module, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module)
        obj = getattr(obj, attr) if attr else obj
        result["imports"][target] = type(obj).__name__
        if target == "worker.app:app":
            result["queues"] = sorted(q.name for q in obj.conf.task_queues or [])
    except Exception as exc:
        result["errors"].append(f"cannot import {target}: {type(exc).__name__}: {exc}")
apps = {}
for job in request["commands"]:
    where, args = job["where"], job["argv"][1:]
    def fail(message):
        result["errors"].append(f"{where}: {' '.join(job['argv'])}: {message}")
    split = next((i for i, a in enumerate(args) if a in cli.commands
                  and not (i and args[i - 1] in ("-A", "--app", "-b", "--broker", "--workdir"))),
                 None)
    if split is None:
        fail("no Celery subcommand"); continue
    sub, sub_args = args[split], args[split + 1:]
    try:
        app_name = cli.make_context("celery", [*args[:split], "report"]).params.get("app")
    except (click.ClickException, click.exceptions.Exit) as exc:
        fail(f"bad global options: {exc}"); continue
    if not app_name:
        fail("no -A/--app"); continue
    if app_name not in apps:
        module, _, attr = app_name.partition(":")
        try:
            mod = importlib.import_module(module)
            apps[app_name] = getattr(mod, attr or "app", None) or getattr(mod, "celery")
        except Exception as exc:
            fail(f"cannot import the Celery app {app_name}: {type(exc).__name__}: {exc}"); continue
    app = apps[app_name]
    queues = sorted(q.name for q in app.conf.task_queues or [])
    parent = click.Context(cli, obj=CLIContext(app=app, no_color=True, workdir=None, quiet=True))
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            ctx = cli.commands[sub].make_context(sub, list(sub_args), parent=parent)
    except (click.ClickException, click.exceptions.Exit) as exc:
        fail(f"celery {sub}: {exc}"); continue
    params = ctx.params
    entry = {"where": where, "argv": job["argv"], "sub": sub, "queues": None, "beat": False}
    if sub == "worker":
        entry["queues"] = list(params.get("queues") or queues)
        entry["beat"] = bool(params.get("beat"))
        unknown = set(entry["queues"]) - set(queues)
        if unknown:
            fail(f"queues {sorted(unknown)} are not in app.conf.task_queues {queues}")
    if sub == "flower":
        from flower.options import options
        for opt in params.get("tornado_argv", ()):
            name = opt.lstrip("-").split("=", 1)[0]
            if name.replace("_", "-") not in options._options:
                fail(f"unknown Flower option --{name}")
    result["commands"].append(entry)
json.dump(result, sys.stdout)
"""


@pytest.fixture(scope="module")
def celery_check(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("celery-check")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["SWITCHBOARD_DATA_DIR"] = str(tmp / "var")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    gunicorn_apps = [a for c in commands_of("gunicorn") for a in _gunicorn_args(c).args]
    request = {"commands": [{"where": c.where, "argv": list(c.argv)}
                            for c in commands_of("celery")],
               "imports": sorted({"worker.app:app", *gunicorn_apps})}
    proc = subprocess.run([sys.executable, "-c", CELERY_CHECK], input=json.dumps(request),
                          capture_output=True, text=True, cwd=tmp, env=env, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _gunicorn_args(command: Command) -> Any:
    from gunicorn.config import Config

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return Config().parser().parse_args(list(command.argv[1:]))
    except SystemExit:
        pytest.fail(f"{command.where}: {' '.join(command.argv)}: {stderr.getvalue().strip()}")


# --- every file ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=_rel)
def test_yaml_files_parse(path: Path) -> None:
    assert load_yaml(path), f"{_rel(path)} has no YAML document"


def test_every_switchboard_name_is_a_setting() -> None:
    unknown = {f"{_rel(path)}: {name}"
               for path in deploy_files()
               for name in SETTING_RE.findall(path.read_text())
               if name not in SETTINGS}
    assert not unknown, f"not fields of shared.settings.Settings: {sorted(unknown)}"


def test_commands_are_found_in_every_flavour() -> None:
    """Guards the collector: if it missed commands, the checks below would pass vacuously."""
    flavours = {"systemd", "Dockerfile"} | ({"compose", "k8s"} if _yaml_module() else set())
    for flavour in flavours:
        programs = {c.program for c in all_commands() if c.flavour == flavour}
        assert programs & {"celery", "gunicorn", "switchboard"}, f"no commands in {flavour}"


# --- commands --------------------------------------------------------------------------------


def test_celery_commands_parse_and_name_existing_queues(celery_check: dict[str, Any]) -> None:
    assert commands_of("celery"), "no celery command found in deploy/"
    assert not celery_check["errors"], "\n".join(celery_check["errors"])
    assert len(celery_check["commands"]) == len(commands_of("celery"))


@pytest.mark.parametrize("flavour", ["compose", "k8s", "systemd"])
def test_each_flavour_runs_every_queue_and_exactly_one_beat(
        flavour: str, celery_check: dict[str, Any]) -> None:
    if flavour in ("compose", "k8s") and _yaml_module() is None:
        pytest.skip(NO_YAML)
    mine = [c for c in celery_check["commands"] if c["where"].startswith(
        {"compose": "docker-compose.yml", "k8s": "k8s/", "systemd": "systemd/"}[flavour])]
    subs = [c["sub"] for c in mine]
    assert "worker" in subs and "flower" in subs, subs
    assert subs.count("beat") == 1, f"{flavour}: exactly one beat, found {subs.count('beat')}"
    consumed = {q for c in mine if c["sub"] == "worker" for q in c["queues"]}
    assert consumed == set(celery_check["queues"]), (
        f"{flavour}: queues nobody consumes: {sorted(set(celery_check['queues']) - consumed)}")
    embedded = [c["where"] for c in mine if c["beat"]]
    assert not embedded, f"worker with an embedded beat (-B) runs beat once per worker: {embedded}"


def test_switchboard_commands_exist() -> None:
    parser = cli_parser()
    subcommands = next(a.choices for a in parser._actions if hasattr(a, "choices")
                       and isinstance(a.choices, dict))
    commands = commands_of("switchboard")
    assert commands, "no `switchboard ...` command found in deploy/"
    for command in commands:
        assert command.argv[1:2] and command.argv[1] in subcommands, (
            f"{command.where}: {' '.join(command.argv)}: no such subcommand "
            f"(known: {sorted(subcommands)})")
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                parser.parse_args(list(command.argv[1:]))
        except SystemExit:
            pytest.fail(f"{command.where}: {' '.join(command.argv)}: {stderr.getvalue()}")


def test_gunicorn_commands_name_existing_config_and_app(celery_check: dict[str, Any]) -> None:
    commands = commands_of("gunicorn")
    assert commands, "no gunicorn command found in deploy/"
    for command in commands:
        args = _gunicorn_args(command)
        assert args.config, f"{command.where}: gunicorn without -c deploy/gunicorn.conf.py"
        config = args.config.removeprefix(INSTALL_DIR + "/")
        assert (ROOT / config).is_file(), f"{command.where}: no config file {args.config}"
        assert args.args, f"{command.where}: gunicorn names no app"
        for target in args.args:
            module = target.partition(":")[0]
            assert importlib.util.find_spec(module), f"{command.where}: no module {module}"
            assert target in celery_check["imports"], celery_check["errors"]


def test_app_modules_import(celery_check: dict[str, Any]) -> None:
    assert celery_check["imports"].get("worker.app:app") == "Celery", celery_check["errors"]
    assert not [e for e in celery_check["errors"] if e.startswith("cannot import")]


# --- settings files --------------------------------------------------------------------------


def test_env_example_lists_every_setting() -> None:
    active, commented = env_example()
    listed = {n for n in {*active, *commented} if n.startswith("SWITCHBOARD_")}
    assert listed == set(SETTINGS), (f"missing: {sorted(set(SETTINGS) - listed)}; "
                                     f"not settings: {sorted(listed - set(SETTINGS))}")
    extra = {"FLOWER_BASIC_AUTH", "GUNICORN_BIND", "GUNICORN_WORKERS", "GUNICORN_THREADS",
             "GUNICORN_TIMEOUT"}
    assert extra <= {*active, *commented}, sorted(extra - {*active, *commented})


def test_env_example_values_are_the_code_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    active, commented = env_example()
    settings_from_env(active, monkeypatch)  # every active value is valid for its field
    lines = ENV_EXAMPLE.read_text().splitlines()
    for name, field in SETTINGS.items():
        if name in commented:
            assert field.default is None, (
                f"{name} is commented out but defaults to {field.default!r}")
        elif name in SECRET_SETTINGS:
            assert active[name] == "" or "REPLACE" in active[name].upper(), (
                f"{name}: leave secrets empty or an obvious placeholder")
        else:
            assert field.default is not None, f"{name} is unset by default: comment it out"
            value = TypeAdapter(field.annotation).validate_python(active[name])
            assert value == field.default, f"{name}={active[name]}, the code says {field.default!r}"
        index = next(i for i, line in enumerate(lines) if re.match(rf"#?\s*{name}=", line))
        above = lines[index - 1]
        assert above.startswith("# ") and not re.match(r"#\s*[A-Z][A-Z0-9_]*=", above), (
            f"{name} needs a one-line comment above it")


def test_gunicorn_conf_executes_and_yields_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from gunicorn.config import Config

    active, _ = env_example()
    for key in ("GUNICORN_BIND", "GUNICORN_WORKERS", "GUNICORN_THREADS", "GUNICORN_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    for values in ({}, {k: v for k, v in active.items() if k.startswith("GUNICORN_")}):
        for key, value in values.items():
            monkeypatch.setenv(key, value)
        namespace = runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))
        assert isinstance(namespace.get("bind"), str) and ":" in namespace["bind"]
        config = Config()
        names = {k for k, v in namespace.items()
                 if not k.startswith("_") and not isinstance(v, type(os))}
        unknown = names - set(config.settings)
        assert not unknown, f"not gunicorn settings: {unknown}"
        for name in names:
            config.set(name, namespace[name])  # validates the value
    assert namespace["bind"] == active["GUNICORN_BIND"]


# --- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for kw, rest in instructions if kw == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms), froms
    final = instructions[max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM"):]
    users = [rest for kw, rest in final if kw == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]
    assert any(kw == "RUN" and re.search(r"pip install \.(\s|$)", rest)
               for kw, rest in instructions), "no `pip install .`"
    assert ("EXPOSE", "8000") in final
    cmd = [json.loads(rest) for kw, rest in final if kw == "CMD"]
    assert cmd == [["gunicorn", "-c", "deploy/gunicorn.conf.py", "webhooks.wsgi:app"]]
    health = [rest for kw, rest in final if kw == "HEALTHCHECK"]
    assert health and "/healthz" in health[0] and "python" in health[0]
    assert "curl" not in health[0], "python:3.11-slim has no curl"


def test_dockerfile_bakes_in_no_secret_and_copies_only_allowed_files() -> None:
    secretish = re.compile(r"SECRET|TOKEN|PASSWORD|API_KEYS|BASIC_AUTH|DATABASE_URL")
    for keyword, rest in dockerfile_instructions():
        if keyword in ("ENV", "ARG"):
            assert not secretish.search(rest), f"{keyword} {rest}: secrets come at run time"
    allowed = [line[1:].strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.startswith("!")]
    for keyword, rest in dockerfile_instructions():
        if keyword != "COPY" or "--from=" in rest:
            continue
        for source in shlex.split(rest)[:-1]:
            source = source.rstrip("/").removeprefix("./")
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert any(source == a or source.startswith(a + "/") for a in allowed), (
                f"COPY {source}: excluded by {_rel(DOCKERIGNORE)}")
            assert not Path(source).name.startswith(".env"), f"COPY {source}: secrets"


# --- docker compose --------------------------------------------------------------------------

APP_SERVICES = ("migrate", "web", "worker", "notifier", "beat", "flower")


def test_compose_services() -> None:
    services = compose_services()
    assert {"postgres", "redis", *APP_SERVICES} <= set(services), sorted(services)
    assert services["postgres"]["image"].split(":")[1].startswith("16")
    assert services["postgres"]["healthcheck"]["test"]
    assert services["redis"]["image"].split(":")[1].startswith("7")
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--maxmemory-policy noeviction" in redis_cmd
    assert services["migrate"]["command"] == ["switchboard", "db", "upgrade"]
    for name in ("web", "worker", "notifier", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    assert any(str(p).split(":")[-1] == "8000" for p in services["web"]["ports"])
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1


def test_compose_app_environment() -> None:
    services = compose_services()
    for name in APP_SERVICES:
        service = services[name]
        assert service["env_file"] in (".env", [".env"]), name
        env = service["environment"]
        assert env["SWITCHBOARD_DATABASE_URL"] == (
            "postgresql+psycopg2://switchboard:switchboard@postgres:5432/switchboard"), name
        assert env["SWITCHBOARD_REDIS_URL"] == "redis://redis:6379/0", name
        build = service["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT, name
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE, name


def test_compose_flower_is_never_open() -> None:
    flower = compose_services()["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    for port in flower.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"Flower published beyond loopback: {port}"


# --- Kubernetes ------------------------------------------------------------------------------


def test_k8s_documents_have_kind_and_name() -> None:
    docs = k8s_docs()
    assert docs
    for where, doc in docs:
        assert isinstance(doc, dict), where
        assert isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str), where
        assert isinstance(doc.get("metadata", {}).get("name"), str), where


def test_k8s_workloads_take_env_from_configmap_and_secret() -> None:
    (configmap,) = k8s_objects("ConfigMap")
    (secret,) = k8s_objects("Secret")
    workloads = {**k8s_objects("Deployment"), **k8s_objects("Job")}
    assert {"switchboard-web", "switchboard-worker", "switchboard-beat", "switchboard-flower",
            "switchboard-migrate"} <= set(workloads)
    for name, doc in workloads.items():
        for container in pod_spec(doc)["containers"]:
            refs = {(k, v["name"]) for ref in container.get("envFrom", []) for k, v in ref.items()}
            assert refs == {("configMapRef", configmap), ("secretRef", secret)}, name
        if doc["kind"] == "Deployment":
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
    assert k8s_objects("Job")["switchboard-migrate"]["spec"]["template"]["spec"][
        "containers"][0]["command"] == ["switchboard", "db", "upgrade"]


def test_k8s_configmap_and_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    (configmap,) = k8s_objects("ConfigMap").values()
    (secret,) = k8s_objects("Secret").values()
    config, secrets = configmap["data"], secret["stringData"]
    assert all(isinstance(v, str) for v in config.values()), "ConfigMap values must be strings"
    assert set(config) <= set(SETTINGS), sorted(set(config) - set(SETTINGS))
    assert not set(config) & (SECRET_SETTINGS | {"SWITCHBOARD_DATABASE_URL"}), "secret in ConfigMap"
    assert not set(config) & set(secrets), "a key in both: one silently overrides the other"
    required = {"SWITCHBOARD_API_KEYS", "SWITCHBOARD_MESSAGGIO_SECRET",
                "SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN", "SWITCHBOARD_DATABASE_URL",
                "FLOWER_BASIC_AUTH"}
    missing = (required | SECRET_SETTINGS) - set(secrets)
    assert not missing, f"not in the example Secret: {sorted(missing)}"
    for key, value in secrets.items():
        assert "REPLACE_ME" in value, f"{key}: example values must be marked REPLACE_ME"
    settings_from_env({**config, **secrets}, monkeypatch)  # values valid for their fields


def test_k8s_web() -> None:
    web = k8s_objects("Deployment")["switchboard-web"]
    assert web["spec"]["replicas"] == 2
    (container,) = pod_spec(web)["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz", probe
    service = k8s_objects("Service")["switchboard-web"]
    assert service["spec"]["selector"].items() <= web["spec"]["template"]["metadata"][
        "labels"].items()


def test_k8s_exactly_one_beat() -> None:
    beat = k8s_objects("Deployment")["switchboard-beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"
    assert "exactly one" in (K8S / "beat.yaml").read_text().lower()
    assert "switchboard-beat" not in {
        o["spec"]["scaleTargetRef"]["name"] for o in k8s_objects("ScaledObject").values()}


def test_k8s_flower_is_cluster_internal_and_needs_a_login() -> None:
    flower = k8s_objects("Deployment")["switchboard-flower"]
    service = k8s_objects("Service")["switchboard-flower"]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert service["spec"]["selector"].items() <= flower["spec"]["template"]["metadata"][
        "labels"].items()
    (container,) = pod_spec(flower)["containers"]
    (auth,) = [e for e in container.get("env", []) if e["name"] == "FLOWER_BASIC_AUTH"]
    ref = auth["valueFrom"]["secretKeyRef"]
    assert ref["key"] == "FLOWER_BASIC_AUTH" and not ref.get("optional", False)
    assert ref["name"] in k8s_objects("Secret")


def test_k8s_keda_scales_workers_on_the_send_queue(celery_check: dict[str, Any]) -> None:
    text = (K8S / "worker-hpa.yaml").read_text()
    assert "requires keda" in text.lower(), "say that KEDA is required"
    (scaled,) = k8s_objects("ScaledObject").values()
    assert scaled["apiVersion"].startswith("keda.sh/")
    target = k8s_objects("Deployment")[scaled["spec"]["scaleTargetRef"]["name"]]
    assert scaled["spec"].get("minReplicaCount", 0) >= 1, "never 0: events and sweep need it"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == "send"
    worker_queues = {q for c in celery_check["commands"] if c["sub"] == "worker"
                     and c["where"] == "k8s/worker.yaml" for q in c["queues"]}
    assert trigger["metadata"]["listName"] in worker_queues
    assert target["metadata"]["name"] == "switchboard-worker"


# --- systemd ---------------------------------------------------------------------------------

LONG_RUNNING = ("switchboard-web.service", "switchboard-worker@.service",
                "switchboard-notifier.service", "switchboard-beat.service",
                "switchboard-flower.service")


def test_systemd_units_exist() -> None:
    names = {p.name for p in UNIT_FILES}
    assert {*LONG_RUNNING, "switchboard-migrate.service"} <= names, sorted(names)


@pytest.mark.parametrize("path", UNIT_FILES, ids=lambda p: p.name)
def test_systemd_unit(path: Path) -> None:
    unit = read_unit(path)
    oneshot = unit.get("Service", "Type", fallback="simple") == "oneshot"
    assert unit.has_section("Unit") and unit.has_section("Service")
    assert unit.has_section("Install") != oneshot, "[Install] on services, not on the oneshot"
    service = unit["Service"]
    assert service["User"] == "switchboard"
    assert service["WorkingDirectory"] == INSTALL_DIR
    assert service["EnvironmentFile"].lstrip("-") == "/etc/switchboard/env"
    argv = _unit_value_to_argv(service["ExecStart"], path.name)
    assert argv[0].startswith(f"{INSTALL_DIR}/.venv/bin/"), argv[0]
    program = Path(argv[0]).name
    assert (Path(sys.executable).parent / program).exists(), (
        f"{program} is not a console script installed with the package")
    if not oneshot:
        assert service["Restart"] == "on-failure"
        assert service["KillSignal"] == "SIGTERM"


def test_systemd_dependencies_and_shutdown() -> None:
    units = {p.name: read_unit(p) for p in UNIT_FILES}
    assert units["switchboard-migrate.service"]["Service"]["Type"] == "oneshot"
    for name in ("switchboard-web.service", "switchboard-worker@.service",
                 "switchboard-notifier.service", "switchboard-beat.service"):
        for key in ("Requires", "After"):
            assert "switchboard-migrate.service" in units[name]["Unit"][key].split(), (name, key)
    for name in ("switchboard-worker@.service", "switchboard-notifier.service"):
        assert units[name]["Service"]["TimeoutStopSec"] == "60", name
    beat = [name for name in units if any(
        c.program == "celery" and "beat" in c.argv for c in all_commands()
        if c.where == f"systemd/{name}:ExecStart")]
    assert beat == ["switchboard-beat.service"], "beat must be one plain (non-template) unit"
    flower = units["switchboard-flower.service"]["Service"]
    assert "FLOWER_BASIC_AUTH" in flower["ExecStartPre"]
    assert "--address=127.0.0.1" in flower["ExecStart"]


# --- every queue has a consumer ----------------------------------------------------------------

def _queues_in(text: str) -> set[str]:
    """Queues named by ``-Q a,b`` in Celery worker command lines (shell or JSON-list form)."""
    found: set[str] = set()
    for match in re.finditer(r'-Q"?,?\s*"?([a-z,]+)', text):
        found.update(q for q in match.group(1).split(",") if q)
    return found


@pytest.mark.parametrize("files", [
    [ROOT / "Procfile"],
    [COMPOSE],
    sorted((DEPLOY / "k8s").glob("*.yaml")),
    sorted(SYSTEMD.glob("*.service")),
], ids=["procfile", "compose", "k8s", "systemd"])
def test_every_queue_has_a_worker(files: list[Path]) -> None:
    """A task routed to a queue nobody consumes would wait forever: each deployment style
    must run a worker for every queue in ``shared.tasknames.ALL_QUEUES`` (the critical one
    included)."""
    from shared.tasknames import ALL_QUEUES

    consumed = set().union(*(_queues_in(f.read_text()) for f in files))
    assert ALL_QUEUES <= consumed, sorted(ALL_QUEUES - consumed)


def test_local_run_consumes_every_queue(tmp_path: Path) -> None:
    from shared.localrun import _commands
    from shared.settings import Settings
    from shared.tasknames import QUEUE_OF

    commands = _commands(Settings(data_dir=tmp_path), "127.0.0.1", 8000, 5555, 2)
    consumed = set().union(*(_queues_in(c) for c in commands.values()))
    assert set(QUEUE_OF.values()) <= consumed
