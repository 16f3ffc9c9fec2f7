"""What several ``meterbridge`` command modules share: the container, output, common options
and arguments, and the license row that ``license`` and ``usage`` print."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bridge.bootstrap import Container, build
from bridge.domain.access import Principal, Role
from bridge.domain.errors import BridgeError
from bridge.logging import configure
from bridge.settings import ConfigFileMissing, load_settings

ADMIN = Principal(Role.ADMIN, "cli")
out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (or $BRIDGE_CONFIG)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts")]
PageOpt = Annotated[int, typer.Option(help="Page number (100 per page)")]
SinkOpt = Annotated[str | None, typer.Option("--sink", help="Only this sink")]
LicenseArg = Annotated[str, typer.Argument(help="License id or key")]


@contextmanager
def container(
    config: Path | None, *, migrate: bool = True, check: bool = True
) -> Iterator[Container]:
    """The wired bridge for one command. ``migrate``: bring the schema to head first (under a
    lock); read-only commands pass False and fail with ``SCHEMA_BEHIND`` instead, unless they
    pass ``check=False`` too (``status`` shows the schema's revision, whatever it is)."""
    try:
        settings = load_settings(config)
    except ConfigFileMissing as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    configure(settings.log_level, settings.log_format)
    built = build(settings)
    try:
        if migrate:
            built.migrate()
        elif check:
            built.check_schema()
        yield built
    except BridgeError as exc:
        err.print(f"[red]error {exc.code}:[/red] {exc.detail}")
        raise typer.Exit(1) from exc
    finally:
        built.dispose()


def plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def record(obj: Any) -> dict[str, Any]:
    data = asdict(obj) if is_dataclass(obj) and not isinstance(obj, type) else dict(obj)
    return {k: plain(v) for k, v in data.items()}


def show(
    rows: Sequence[Any], columns: Sequence[str], as_json: bool, title: str, *, one: bool = False
) -> None:
    """A table, or JSON: an object for one resource (``one``), else an array."""
    records = [record(r) for r in rows]
    if as_json:
        out.print_json(json.dumps(records[0] if one else records))
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")  # ids must stay copyable
    for row in records:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    out.print(table)


def license_row(lic: Any) -> dict[str, Any]:
    """A license as ``license`` and ``usage`` print it: its columns, its effective max uses and
    ``mirror``, the server it is mirrored from (``keygen``; its usage is counted there)."""
    mirror = lic.mirror
    return {**record(lic), "max_uses": lic.terms.max_uses, "mirror": mirror and mirror.source}
