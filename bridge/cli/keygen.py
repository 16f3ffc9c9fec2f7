"""``meterbridge keygen``: the relay of an existing Keygen account (its webhooks arrive at
``POST /v1/webhooks/keygen``; the scheduler runs the periodic check and the resets)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bridge.bootstrap import Container
from bridge.cli.support import ConfigOpt, JsonOpt, container, out, show
from bridge.domain.errors import KeygenNotConfigured, KeygenUnavailable
from bridge.service import keygen as uc

app = typer.Typer(help="Keygen relay: mirrored licenses, checks and resets.", no_args_is_help=True)


def _configured(c: Container) -> None:
    if not c.settings.keygen.enabled:
        raise KeygenNotConfigured


@app.command("status")
def keygen_status(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Mirrored licenses, the last delivery, the last check, the corrections made, the resets."""
    with container(config, migrate=False) as c:
        _configured(c)
        found = uc.status(c.uows, c.clock)
    row: dict[str, Any] = {
        "mirrored": found.mirrored,
        "deleted_in_keygen": found.deleted,
        "last_delivery": found.last_delivery_at,
        "last_check": found.last_check_at,
        "checks_due": found.checks_due,
        "corrections": found.corrections,
        "corrected": found.corrected,
        "forwarded": found.forwarded,
        "resets": " ".join(f"{k}={v}" for k, v in sorted(found.resets.items())) or "none",
    }
    if as_json:
        row["resets"] = found.resets
    show([row], list(row), as_json, "Keygen relay", one=True)


@app.command("sync")
def keygen_sync(
    license: Annotated[
        str | None,
        typer.Option(
            "--license", help="Check this license only (Keygen's id); mirrors it if it is new"
        ),
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the check against Keygen's API now (the licenses whose turn it is, or one), and
    make the Keygen resets that are due. A difference is forwarded as a correction."""
    with container(config) as c:
        _configured(c)
        relay = c.keygen_relay()
        resets = relay.reset_due()
        summary = relay.check(license)
    if license is not None and summary.stopped:
        raise KeygenUnavailable(summary.stopped)
    row: dict[str, Any] = {
        "checked": summary.checked,
        "corrections": summary.corrections,
        "corrected": summary.corrected,
        "gone": summary.gone,
        "failed": summary.failed,
        "resets_done": resets.resets_done,
        "resets_waiting": resets.resets_pending,
        "stopped": summary.stopped or "",
    }
    show([row], list(row), as_json, "Keygen sync", one=True)
    for line in summary.details:
        out.print(line)
    if summary.failed:
        raise typer.Exit(1)
