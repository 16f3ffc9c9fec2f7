"""The ``Dockerfile`` and ``config/compose.yaml`` against the code they run: every command exists
in the CLI, every ``BRIDGE_*`` variable is a setting, everything the bridge keeps lands in the
image's one volume, the healthcheck asks a real route on the configured port, and no secret is
written into either file. (``.ci/run`` also builds the image where Docker runs.)"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import typer.main
import yaml
from fastapi.testclient import TestClient
from pydantic import BaseModel

from bridge.cli import app
from bridge.keys import key_path
from bridge.settings import Settings, load_settings

ROOT = Path(__file__).parents[1]
SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|SIGNING__KEY$")


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return [(w.upper(), rest.strip()) for w, _, rest in (j.strip().partition(" ") for j in joined)]


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    return instructions[starts[-1] :]


def _one(stage: list[tuple[str, str]], word: str) -> str:
    found = [args for w, args in stage if w == word]
    assert len(found) == 1, f"{word}: {found}"
    return found[0]


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for word, args in stage:
        if word == "ENV":
            values.update(item.split("=", 1) for item in shlex.split(args))  # type: ignore[misc]
    return values


def _setting(name: str) -> Any:
    """The settings field a ``BRIDGE_*`` variable sets (KeyError if none)."""
    model: Any = Settings
    field: Any = None
    for part in name.removeprefix("BRIDGE_").lower().split("__"):
        assert isinstance(model, type), name
        assert issubclass(model, BaseModel), name
        field = model.model_fields[part]
        model = field.annotation
    return field


def _commands(argv: list[str]) -> None:
    """``meterbridge ARGV`` names a command of the CLI (through its groups)."""
    command: Any = typer.main.get_command(app)  # a click group (typer's own click)
    for word in argv:
        if not hasattr(command, "commands"):
            break
        assert word in command.commands, f"meterbridge {' '.join(argv)}: no {word!r}"
        command = command.commands[word]
    assert not hasattr(command, "commands"), f"meterbridge {' '.join(argv)} is a group"


DOCKERFILE = _instructions(ROOT / "Dockerfile")
FINAL = _final_stage(DOCKERFILE)
BUILD = DOCKERFILE[: len(DOCKERFILE) - len(FINAL)]


def test_the_image_is_multi_stage_slim_and_not_root() -> None:
    assert [w for w, _ in DOCKERFILE].count("FROM") >= 2
    assert _one(FINAL, "FROM").split()[0].endswith("-slim")
    user = _one(FINAL, "USER").split(":")[0]
    assert user not in ("root", "0")
    for word, args in DOCKERFILE:
        if word == "COPY" and not args.startswith("--from"):
            *sources, _ = shlex.split(args)
            assert all((ROOT / s).exists() for s in sources), args


def test_the_build_context_is_what_the_image_copies() -> None:
    """``.dockerignore`` sends the builder exactly what the Dockerfile copies: never a local
    database, signing key, usage file or virtual environment."""
    copied = set()
    for word, args in DOCKERFILE:
        if word == "COPY" and not args.startswith("--from"):
            copied |= {s.rstrip("/") for s in shlex.split(args)[:-1]}
    lines = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {line[1:].rstrip("/") for line in lines if line.startswith("!")} == copied


def test_the_image_installs_the_versions_ci_tests() -> None:
    """Every dependency comes from ``requirements/runtime.lock``, hash-checked, and that lock is
    ``ci.lock``'s pins for exactly what the bridge needs (``scripts/split_lock.py --check``
    against this environment, installed from ``ci.lock``); the bridge itself goes in last,
    without dependencies, as a wheel built by ``build.lock``'s backend."""
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "split_lock.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    runtime = (ROOT / "requirements" / "runtime.lock").read_text()
    assert "psycopg-binary==" in runtime  # the extras are followed: psycopg[binary]
    assert "uvloop==" in runtime  # uvicorn[standard]
    assert "pytest==" not in runtime  # nothing of dev
    assert "hatchling==" not in runtime  # nor of the build
    installs = [args for word, args in BUILD if word == "RUN" and "install" in args]
    assert any("--require-hashes -r requirements/runtime.lock" in a for a in installs)
    assert any("--require-hashes -r requirements/build.lock" in a for a in installs)
    for args in installs:  # no other install may resolve versions of its own
        for command in args.split("&&"):
            if " install " in command and "--require-hashes" not in command:
                assert "--no-deps" in command, command


def test_entrypoint_and_command_are_the_cli() -> None:
    """``meterbridge`` is the project's script; ``serve`` its default command."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["meterbridge"] == "bridge.entry:main"
    assert json.loads(_one(FINAL, "ENTRYPOINT")) == ["meterbridge"]
    command = json.loads(_one(FINAL, "CMD"))
    assert command == ["serve"]
    _commands(command)


def test_everything_kept_is_in_the_one_volume(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The SQLite file, the file sink's NDJSON and the signing key (beside the SQLite file) are
    under the volume, which is also the working directory; the settings read them as set."""
    (volume,) = json.loads(_one(FINAL, "VOLUME"))
    assert _one(FINAL, "WORKDIR") == volume
    env = _env(FINAL)
    for name, value in env.items():
        if name.startswith("BRIDGE_"):
            _setting(name)
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    settings = load_settings()
    under = PurePosixPath(volume)
    database = PurePosixPath(settings.database_url.removeprefix("sqlite:///"))
    assert settings.database_url.startswith("sqlite:///")
    assert under in database.parents
    assert under in PurePosixPath(settings.sinks.file.path).parents
    assert under in PurePosixPath(key_path(settings)).parents
    assert settings.host == "0.0.0.0"  # noqa: S104 - a container listens on its interface
    assert str(settings.port) == _one(FINAL, "EXPOSE")
    assert settings.log_format == "json"


def test_the_healthcheck_asks_readyz_on_the_configured_port(client: TestClient) -> None:
    check = _one(FINAL, "HEALTHCHECK")
    assert "'http://127.0.0.1:%s/readyz' % os.environ.get('BRIDGE_PORT', '8080')" in check
    assert client.get("/readyz").status_code == 200  # the route it asks exists


COMPOSE = yaml.safe_load((ROOT / "config" / "compose.yaml").read_text())


def test_compose_runs_postgresql_two_apis_one_worker_one_scheduler() -> None:
    services = COMPOSE["services"]
    bridge = {name: s for name, s in services.items() if "build" in s}
    commands = sorted(s["command"][0] for s in bridge.values())
    assert commands == ["scheduler", "serve", "serve", "worker"]
    for service in bridge.values():
        _commands(service["command"])
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert (ROOT / "config" / service["build"]["context"] / "Dockerfile").exists()
        assert service["environment"]["BRIDGE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "postgres" in services["postgres"]["image"]


def test_compose_settings_exist_and_secrets_come_from_the_environment() -> None:
    for name, service in COMPOSE["services"].items():
        for key, value in service.get("environment", {}).items():
            if key.startswith("BRIDGE_"):
                _setting(key)
            if SECRET.search(key):
                assert str(value).startswith("${"), f"{name}: {key} is written in the file"
            if key in ("BRIDGE_DATABASE_URL",):
                assert "${POSTGRES_PASSWORD:?" in value
    env = COMPOSE["services"]["api1"]["environment"]
    for required in ("BRIDGE_ADMIN_TOKEN", "BRIDGE_SIGNING__KEY"):
        assert ":?" in env[required], f"{required} must be required from the environment"
    assert env["BRIDGE_SCHEDULER__ENABLED"] == "false"  # only the scheduler service runs jobs
