"""``meterbridge license``: licenses."""

from __future__ import annotations

from typing import Annotated

import typer

from bridge.cli.support import ADMIN, ConfigOpt, JsonOpt, PageOpt, container, license_row, show
from bridge.domain.access import LicenseAction
from bridge.domain.commands import CheckIn, NewLicense
from bridge.keys import StoredKey
from bridge.service import licenses
from bridge.service.common import PageRequest
from bridge.service.signed_keys import KeyMint

app = typer.Typer(help="Licenses.", no_args_is_help=True)

_COLUMNS = ["id", "key", "policy_id", "uses", "max_uses", "expiry", "suspended", "mirror"]


@app.command("create")
def license_create(
    policy: Annotated[str, typer.Option(help="Policy id")],
    key: Annotated[str | None, typer.Option(help="License key (generated if omitted)")] = None,
    max_uses: Annotated[int | None, typer.Option(help="Override the policy's maxUses")] = None,
    name: Annotated[str | None, typer.Option(help="License name")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    # An empty option is not sent (the key is generated, the policy's maxUses applies).
    command = NewLicense(
        policy_id=policy, key=key or None, max_uses=max_uses or None, name=name or None
    )
    with container(config) as c:
        # A policy that signs its keys (ED25519_SIGN) needs the account key serve signs with.
        mint = KeyMint(StoredKey(c.settings), c.settings.account)
        lic = licenses.create_license(c.uows, c.clock, ADMIN, command, mint=mint)
    show([license_row(lic)], _COLUMNS, as_json, "License", one=True)


@app.command("list")
def license_list(
    policy: Annotated[str | None, typer.Option(help="Only this policy's licenses")] = None,
    page: PageOpt = 1,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    with container(config, migrate=False) as c:
        found = licenses.list_licenses(c.uows, ADMIN, PageRequest(page, 100), policy)
    rows = [license_row(lic) for lic in found.items]
    show(rows, _COLUMNS, as_json, f"Licenses ({found.total})")


@app.command("show")
def license_show(
    license: Annotated[str, typer.Argument(help="License id or key")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    with container(config, migrate=False) as c:
        lic = licenses.get_license(c.uows, ADMIN, license, LicenseAction.READ)
    columns = [*_COLUMNS, "created", "updated"]
    show([license_row(lic)], columns, as_json, "License", one=True)


@app.command("check-in")
def license_check_in(
    license: Annotated[str, typer.Argument(help="License id or key")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Keygen's check-in: set lastCheckIn (the policy must require check-ins)."""
    with container(config) as c:
        outcome = c.checkins().check_in(ADMIN, CheckIn(license))
    lic = outcome.license
    row = {**license_row(lic), "next_check_in": lic.next_check_in}
    show([row], ["id", "key", "last_check_in", "next_check_in"], as_json, "License", one=True)
