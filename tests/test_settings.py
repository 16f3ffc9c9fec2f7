"""Settings: defaults, BRIDGE_* environment, nested keys and the TOML file."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from bridge.settings import ConfigFileMissing, load_settings

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "bridge.example.toml"


def test_defaults_are_the_embedded_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing configured: SQLite in the working directory, account 'default'."""
    for name in ("BRIDGE_CONFIG", "BRIDGE_DATABASE_URL", "BRIDGE_ACCOUNT", "BRIDGE_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.database_url == "sqlite:///./meterbridge.db"
    assert settings.account == "default"
    assert settings.admin_token is None


def test_environment_overrides_the_toml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values come from the TOML file unless a BRIDGE_* variable says otherwise."""
    config = tmp_path / "bridge.toml"
    config.write_text('account = "acme"\nport = 9000\nadmin_token = "from-file"\n')
    monkeypatch.setenv("BRIDGE_CONFIG", str(config))
    monkeypatch.setenv("BRIDGE_PORT", "9100")
    settings = load_settings()
    assert (settings.account, settings.port) == ("acme", 9100)
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "from-file"
    assert "from-file" not in repr(settings)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    """A config path that does not exist is refused, not silently ignored."""
    with pytest.raises(ConfigFileMissing):
        load_settings(tmp_path / "nope.toml")


def test_unknown_setting_is_rejected(tmp_path: Path) -> None:
    """A typo in the TOML file fails loudly."""
    config = tmp_path / "bridge.toml"
    config.write_text("databse_url = 'x'\n")
    with pytest.raises(ValidationError):
        load_settings(config)


def test_example_file_loads_and_documents_every_setting() -> None:
    """config/bridge.example.toml is valid and mentions every setting."""
    from bridge.settings import Settings

    load_settings(EXAMPLE)
    text = EXAMPLE.read_text()
    for name in Settings.model_fields:
        assert name in text, f"{name} is not documented in {EXAMPLE.name}"


def test_the_image_keeps_the_database_and_the_file_sink_in_its_data_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the Dockerfile's environment, the SQLite file and the file sink's NDJSON both lie
    inside its VOLUME, as does its working directory (a relative path's base)."""
    dockerfile = (EXAMPLE.parents[1] / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    env = dict(re.findall(r"(BRIDGE_\w+)=(\S+)", final_stage))
    (volume,) = re.findall(r'VOLUME \["([^"]+)"\]', final_stage)
    (workdir,) = re.findall(r"^WORKDIR (\S+)", final_stage, re.MULTILINE)
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    database = Path(settings.database_url.removeprefix("sqlite:///"))
    assert settings.database_url.startswith("sqlite:///")
    for path in (database, settings.sinks.file.path, Path(workdir)):
        assert path.is_relative_to(volume), path


def test_the_access_log_defaults_to_on_with_console_logs_and_off_with_json() -> None:
    from bridge.settings import access_log_on

    assert access_log_on(load_settings(log_format="console"))
    assert not access_log_on(load_settings(log_format="json"))
    assert access_log_on(load_settings(log_format="json", access_log=True))
    assert not access_log_on(load_settings(log_format="console", access_log=False))
