"""``meterbridge policy``: policies."""

from __future__ import annotations

from typing import Annotated

import typer

from bridge.cli.support import ADMIN, ConfigOpt, JsonOpt, container, show
from bridge.domain.commands import NewPolicy
from bridge.domain.model import ExpirationBasis
from bridge.service import policies
from bridge.service.common import PageRequest

app = typer.Typer(help="Policies.", no_args_is_help=True)

_COLUMNS = ["id", "name", "product_id", "max_uses", "expiration_basis", "duration"]


@app.command("create")
def policy_create(
    product: Annotated[str, typer.Option(help="Product id")],
    name: Annotated[str, typer.Option(help="Policy name")],
    max_uses: Annotated[int | None, typer.Option(help="Maximum uses per license")] = None,
    duration: Annotated[int | None, typer.Option(help="License duration in seconds")] = None,
    first_use: Annotated[
        bool, typer.Option(help="Start the duration at the first increment")
    ] = False,
    period: Annotated[
        str | None, typer.Option(help="Reset usage every day, week, month, quarter or year")
    ] = None,
    period_count: Annotated[int, typer.Option(help="Intervals per period")] = 1,
    period_anchor: Annotated[str, typer.Option(help="CALENDAR or ANNIVERSARY")] = "CALENDAR",
    period_timezone: Annotated[str, typer.Option(help="IANA timezone of the periods")] = "UTC",
    floating: Annotated[bool, typer.Option(help="More than one machine per license")] = False,
    max_machines: Annotated[int | None, typer.Option(help="Machines per license")] = None,
    max_cores: Annotated[int | None, typer.Option(help="Cores summed over a license")] = None,
    check_in: Annotated[
        str | None,
        typer.Option(help="Require a check-in every day, week, month or year (Keygen's)"),
    ] = None,
    check_in_count: Annotated[int, typer.Option(help="Intervals between check-ins")] = 1,
    scheme: Annotated[
        str | None, typer.Option(help="ED25519_SIGN: sign the licenses' keys (offline checks)")
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    command = NewPolicy(
        product_id=product,
        name=name,
        max_uses=max_uses,
        duration=duration,
        floating=floating,
        max_machines=max_machines,
        max_cores=max_cores,
        scheme=scheme,
        expiration_basis=ExpirationBasis.FROM_FIRST_USE if first_use else None,
        require_check_in=check_in is not None or None,
        check_in_interval=check_in,
        check_in_interval_count=check_in_count if check_in is not None else None,
        usage_period=(
            {
                "interval": period,
                "count": period_count,
                "anchor": period_anchor,
                "timezone": period_timezone,
            }
            if period is not None
            else None
        ),
    )
    with container(config) as c:
        policy = policies.create_policy(c.uows, c.clock, ADMIN, command)
    show([policy], _COLUMNS, as_json, "Policy", one=True)


@app.command("list")
def policy_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    with container(config, migrate=False) as c:
        page = policies.list_policies(c.uows, ADMIN, PageRequest(1, 100), None)
    show(page.items, _COLUMNS, as_json, f"Policies ({page.total})")
