"""``meterbridge machine``: machine activations and their cores."""

from __future__ import annotations

from typing import Annotated

import typer

from bridge.cli.support import (
    ADMIN,
    ConfigOpt,
    JsonOpt,
    LicenseArg,
    PageOpt,
    container,
    out,
    show,
)
from bridge.domain.commands import NewMachine
from bridge.service.common import PageRequest

app = typer.Typer(help="Machine activations and their cores.", no_args_is_help=True)

_COLUMNS = ["id", "license_id", "fingerprint", "cores", "name", "last_heartbeat"]


@app.command("activate")
def machine_activate(
    license: LicenseArg,
    fingerprint: Annotated[str, typer.Option(help="Unique per license")],
    cores: Annotated[int | None, typer.Option(help="CPU cores, counted against maxCores")] = None,
    name: Annotated[str | None, typer.Option(help="Machine name")] = None,
    platform: Annotated[str | None, typer.Option(help="Platform, e.g. linux")] = None,
    hostname: Annotated[str | None, typer.Option(help="Hostname")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Activate a machine on a license, within its machine and core limits."""
    command = NewMachine(
        license_ref=license,
        fingerprint=fingerprint,
        cores=cores,
        name=name,
        platform=platform,
        hostname=hostname,
    )
    with container(config) as c:
        machine = c.machines().activate(ADMIN, command)
    show([machine], _COLUMNS, as_json, "Machine", one=True)


@app.command("list")
def machine_list(
    license: Annotated[str | None, typer.Option(help="Only this license's (id or key)")] = None,
    page: PageOpt = 1,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    with container(config, migrate=False) as c:
        found = c.machines().list(ADMIN, PageRequest(page, 100), license)
    show(found.items, _COLUMNS, as_json, f"Machines ({found.total})")


@app.command("deactivate")
def machine_deactivate(
    machine: Annotated[str, typer.Argument(help="Machine id")],
    config: ConfigOpt = None,
) -> None:
    """Deactivate a machine; its cores are freed (a ledger entry, forwarded to the sinks)."""
    with container(config) as c:
        c.machines().deactivate(ADMIN, machine)
    out.print(f"deactivated machine {machine}")


@app.command("reap")
def machine_reap(config: ConfigOpt = None) -> None:
    """Deactivate every machine whose heartbeat is overdue now (serve does this periodically)."""
    with container(config) as c:
        count = c.machines().reap_dead_machines()
    out.print(f"deactivated {count} dead machines")
