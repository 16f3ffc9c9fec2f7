"""The composition root builds the sinks the settings enable, in order."""

from __future__ import annotations

from pathlib import Path

from bridge.bootstrap import build
from bridge.settings import load_settings


def test_default_is_the_file_sink_only(tmp_path: Path) -> None:
    """With no configuration, usage goes to the local NDJSON file and nowhere else."""
    container = build(load_settings(database_url=f"sqlite:///{tmp_path / 'b.db'}"))
    assert [s.name for s in container.sinks] == ["file"]
    container.dispose()


def test_enabled_platform_sinks_are_built(tmp_path: Path) -> None:
    """Enabling Lago and m3ter adds their sinks; disabling the file sink removes it."""
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 'b.db'}",
        sinks={
            "file": {"enabled": False},
            "lago": {"enabled": True, "api_key": "key", "default_metric_code": "calls"},
            "m3ter": {
                "enabled": True,
                "org_id": "org",
                "client_id": "id",
                "client_secret": "secret",
                "default_meter_code": "calls",
            },
        },
    )
    container = build(settings)
    assert [s.name for s in container.sinks] == ["lago", "m3ter"]
    container.dispose()
