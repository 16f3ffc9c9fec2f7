"""The CLI's layout rule (``bridge/cli/__init__.py``): ``meterbridge GROUP ...`` lives in
``bridge/cli/GROUP.py``, the commands without a group in ``processes.py``."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import bridge
import bridge.cli
from bridge.cli import app

_NOT_GROUPS = {"processes", "support"}


def test_each_group_is_the_module_named_as_it() -> None:
    """Every command of ``meterbridge GROUP`` is defined in ``bridge.cli.GROUP``, whose ``app``
    is the group, and every other module of the package is a group."""
    groups = {info.name: info.typer_instance for info in app.registered_groups}
    modules = {m.name for m in pkgutil.iter_modules(bridge.cli.__path__)} - _NOT_GROUPS
    assert set(groups) == modules, "a group bridge/cli/GROUP.py, listed in GROUPS"
    for name, group in groups.items():
        assert group is getattr(bridge.cli, name).app
        for command in group.registered_commands:
            assert command.callback is not None
            assert command.callback.__module__ == f"bridge.cli.{name}", command.name


def test_commands_without_a_group_are_the_processes() -> None:
    """``serve``, ``worker`` and ``scheduler`` (nothing else) are top-level, in processes.py."""
    commands = {
        c.callback.__name__: c.callback.__module__ for c in app.registered_commands if c.callback
    }
    assert commands == dict.fromkeys(("scheduler", "serve", "worker"), "bridge.cli.processes")


def test_no_command_module_outside_the_package() -> None:
    """No ``bridge/cli_*.py`` beside the package: a new group goes in ``bridge/cli/``."""
    strays = sorted(p.name for p in Path(bridge.__path__[0]).glob("cli_*.py"))
    assert strays == []
