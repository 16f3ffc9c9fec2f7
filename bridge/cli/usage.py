"""``meterbridge usage``: usage changes and a license's ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bridge.cli.support import (
    ADMIN,
    ConfigOpt,
    JsonOpt,
    LicenseArg,
    container,
    license_row,
    show,
)
from bridge.domain.model import UsageKind
from bridge.service.common import PageRequest
from bridge.service.usage import UsageChange, usage_history

app = typer.Typer(help="Usage actions and history.", no_args_is_help=True)

KeyOpt = Annotated[
    str | None, typer.Option("--idempotency-key", help="Replays the first answer on retry")
]


def _change(config: Path | None, change: UsageChange, as_json: bool) -> None:
    with container(config) as c:
        outcome = c.usage().apply(ADMIN, change)
    row = {**license_row(outcome.license), "entry_id": outcome.entry_id}
    show([row], ["key", "uses", "max_uses", "entry_id"], as_json, "Usage", one=True)


@app.command("increment")
def usage_increment(
    license: LicenseArg,
    by: Annotated[int, typer.Option(help="Amount")] = 1,
    idempotency_key: KeyOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    _change(config, UsageChange(license, UsageKind.INCREMENT, by, idempotency_key), as_json)


@app.command("decrement")
def usage_decrement(
    license: LicenseArg,
    by: Annotated[int, typer.Option(help="Amount")] = 1,
    idempotency_key: KeyOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    _change(config, UsageChange(license, UsageKind.DECREMENT, by, idempotency_key), as_json)


@app.command("reset")
def usage_reset(
    license: LicenseArg,
    idempotency_key: KeyOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    _change(config, UsageChange(license, UsageKind.RESET, 0, idempotency_key), as_json)


@app.command("history")
def usage_history_cmd(
    license: LicenseArg,
    page: Annotated[int, typer.Option(help="Page number (100 per page, newest first)")] = 1,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    with container(config, migrate=False) as c:
        _, entries = usage_history(c.uows, ADMIN, license, PageRequest(page, 100))
    columns = ["occurred_at", "kind", "delta", "uses_before", "uses_after", "actor", "id"]
    show(entries.items, columns, as_json, f"Usage ledger ({entries.total} entries)")
