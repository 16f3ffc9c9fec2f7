"""``meterbridge periods``: usage periods."""

from __future__ import annotations

import json

import typer

from bridge.cli.support import ConfigOpt, JsonOpt, container, out
from bridge.service.periods import close_due_periods

app = typer.Typer(help="Usage periods.", no_args_is_help=True)


@app.command("close")
def close_periods(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Close every usage period that has ended now (what the scheduler does each minute)."""
    with container(config) as c:
        closed = close_due_periods(c.uows, c.clock)
    if as_json:
        out.print_json(json.dumps({"closed": closed}))
    else:
        out.print(f"closed {closed} usage periods")
