"""``meterbridge db``: the database schema."""

from __future__ import annotations

import typer

from bridge.cli.support import ConfigOpt, container, out

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Apply all Alembic migrations."""
    with container(config, migrate=True) as c:
        out.print(f"database at head: {c.engine.url.render_as_string(hide_password=True)}")
