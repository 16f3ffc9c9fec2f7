"""``meterbridge status``: one screen with the health of every part: the database and its
schema, each sink (circuit, pause, backlog, oldest item, last error), the scheduled jobs and
their next runs, the last reconciliation, the webhook inbox, and the tables' sizes and oldest
rows. ``--json`` for scripts; ``--watch`` refreshes until SIGTERM or Ctrl-C (exit 0)."""

from __future__ import annotations

import json
import signal
import threading
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url

from bridge.bootstrap import Container
from bridge.cli.support import ConfigOpt, JsonOpt, container, out, plain
from bridge.service.status import sinks_overview, webhook_counts

app = typer.Typer(help="The health of every part, on one screen.", invoke_without_command=True)

WatchOpt = Annotated[
    float | None,
    typer.Option("--watch", "-w", min=0.5, help="Refresh every this many seconds until stopped"),
]


@app.callback()
def status(config: ConfigOpt = None, as_json: JsonOpt = False, watch: WatchOpt = None) -> None:
    """Database and schema, sinks, scheduled jobs, last reconciliation, webhook inbox and table
    sizes. Read-only: it never migrates, and shows a schema behind or ahead as such. Exits 1
    when the database cannot be reached."""
    with container(config, migrate=False, check=False) as c:
        if watch is None:
            data = gather(c)
            show(data, as_json)
            if not data["database"]["reachable"]:
                raise typer.Exit(1)
            return
        stopping = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda _signum, _frame: stopping.set())
        if as_json:  # one JSON document per line and refresh
            while not stopping.is_set():
                out.print(json.dumps(gather(c)), soft_wrap=True, highlight=False)
                stopping.wait(watch)
            return
        with Live(render(gather(c)), console=out, auto_refresh=False) as live:
            while not stopping.wait(watch):
                live.update(render(gather(c)), refresh=True)


def gather(c: Container) -> dict[str, Any]:
    """Everything the screen shows, as plain data (what ``--json`` prints). A part that cannot
    be read says why instead of failing the whole screen."""
    now = c.clock.now()
    data: dict[str, Any] = {"at": now.isoformat(), "database": _database(c)}
    if not data["database"]["reachable"]:
        return data
    data["sinks"] = _part(lambda: _sinks(c))
    data["scheduler"] = _scheduler(c, now)
    data["reconciliation"] = _part(lambda: _reconciliation(c))
    data["webhooks"] = _part(
        lambda: [
            {"provider": p, "status": s, "count": n}
            for (p, s), n in sorted(webhook_counts(c.uows).items())
        ]
    )
    data["tables"] = _part(
        lambda: [
            {
                "table": t.name,
                "rows": t.rows,
                "estimated": t.estimated,
                "oldest": plain(t.oldest),
                "oldest_age_s": _age(now, t.oldest),
            }
            for t in c.table_sizes()
        ]
    )
    return data


def _part(read: Any) -> Any:
    try:
        return read()
    except Exception as exc:  # one part failing (a lock, a timeout) leaves the others
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def _age(now: datetime, then: datetime | None) -> float | None:
    return round((now - then).total_seconds(), 1) if then is not None else None


def _database(c: Container) -> dict[str, Any]:
    url = make_url(c.settings.database_url).render_as_string(hide_password=True)
    info: dict[str, Any] = {"url": url, "dialect": c.engine.dialect.name}
    try:
        current, head = c.schema_revision()
    except Exception as exc:  # unreachable: the one thing to say
        info.update(reachable=False, error=f"{type(exc).__name__}: {exc}"[:300])
        return info
    info.update(
        reachable=True,
        schema=current,
        head=head,
        schema_state="current" if current == head else ("empty" if current is None else "other"),
    )
    return info


def _sinks(c: Container) -> list[dict[str, Any]]:
    configured = [s.name for s in c.sinks]
    now = c.clock.now()
    rows = []
    for s in sinks_overview(c.uows, c.clock, configured):
        h = s.health
        open_until = h.circuit_open_until if h is not None else None
        paused = h.paused_until if h is not None else None
        rows.append(
            {
                "sink": s.sink,
                "configured": s.configured,
                "circuit": "open" if open_until is not None and open_until > now else "closed",
                "circuit_open_until": plain(open_until)
                if open_until and open_until > now
                else None,
                "paused_until": plain(paused) if paused is not None and paused > now else None,
                "failures": h.failures if h is not None else 0,
                "pending": s.pending,
                "inflight": s.inflight,
                "dead": s.dead,
                "oldest_age_s": round(s.oldest_age_s, 1) if s.oldest_age_s is not None else None,
                "last_error": h.last_error if h is not None else None,
                "last_error_at": plain(h.last_error_at) if h is not None else None,
            }
        )
    return rows


def _scheduler(c: Container, now: datetime) -> dict[str, Any]:
    from bridge.jobs.scheduler import triggers

    jobs = [
        {"job": name, "schedule": words, "next_run": plain(trigger.get_next_fire_time(None, now))}
        for name, (words, trigger) in triggers(c.settings).items()
    ]
    return {"in_serve": c.settings.scheduler.enabled, "jobs": jobs}


def _reconciliation(c: Container) -> dict[str, Any]:
    last = c.last_reconciliation()
    return {
        "checked_at": plain(last.checked_at),
        "findings": [
            {"sink": sink, "status": st, "count": n}
            for (sink, st), n in sorted(last.findings.items())
        ],
    }


def show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(data))
    else:
        out.print(render(data))


def _cell(value: Any, column: str) -> str:
    """A cell in few characters: times to the second, ages in units."""
    if value is None or value == "":
        return ""
    if column.endswith("age_s"):
        seconds = float(value)
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"{seconds / size:.1f}{unit}"
        return f"{seconds:.0f}s"
    if isinstance(value, str) and len(value) >= 19 and value[10:11] == "T":
        return value[:10] + " " + value[11:19]  # ISO time, UTC, to the second
    return str(value)


def _table(title: str, rows: Any, columns: list[tuple[str, str]]) -> Any:
    """``columns``: (key, heading)."""
    if isinstance(rows, dict) and "error" in rows:
        return Text(f"{title}: {rows['error']}", style="red")
    table = Table(title=title, title_justify="left", title_style="bold")
    for _key, heading in columns:
        table.add_column(heading, no_wrap=True)
    for row in rows:
        table.add_row(*(_cell(row.get(key), key) for key, _heading in columns))
    if not rows:
        table.add_row(*(["none"] + [""] * (len(columns) - 1)))
    return table


_SINK_COLUMNS = [
    ("sink", "sink"),
    ("circuit", "circuit"),
    ("paused_until", "paused until"),
    ("failures", "fails"),
    ("pending", "pending"),
    ("inflight", "inflight"),
    ("dead", "dead"),
    ("oldest_age_s", "oldest"),
]
_TABLE_COLUMNS = [
    ("table", "table"),
    ("rows", "rows"),
    ("oldest", "oldest row"),
    ("oldest_age_s", "age"),
]


def render(data: dict[str, Any]) -> Group:
    """The screen: a line for the database, then one table per part."""
    db = data["database"]
    if not db["reachable"]:
        line = f"database {db['url']} ({db['dialect']}): unreachable: {db['error']}"
        return Group(Text(line, style="bold red"))
    state = db["schema_state"]
    style = "green" if state == "current" else "bold red"
    parts: list[Any] = [
        Text.assemble(
            ("database ", "bold"),
            f"{db['url']} ({db['dialect']}), schema ",
            (f"{db['schema']} ({state}; this version: {db['head']})", style),
            f", at {_cell(data['at'], 'at')}",
        )
    ]
    parts.append(_table("Sinks", data["sinks"], _SINK_COLUMNS))
    if isinstance(data["sinks"], list):  # errors below the table: they are long
        for sink in data["sinks"]:
            if sink["last_error"]:
                at = _cell(sink["last_error_at"], "at")
                parts.append(Text(f"  {sink['sink']} last error ({at}): {sink['last_error']}"))
    scheduler = data["scheduler"]
    where = "inside serve" if scheduler["in_serve"] else "in `meterbridge scheduler` only"
    columns = [("job", "job"), ("schedule", "schedule"), ("next_run", "next run (UTC)")]
    parts.append(_table(f"Scheduled jobs ({where})", scheduler["jobs"], columns))
    rec = data["reconciliation"]
    findings = [("sink", "sink"), ("status", "status"), ("count", "findings")]
    if isinstance(rec, dict) and "error" not in rec:
        title = f"Last reconciliation: {_cell(rec['checked_at'], 'at') or 'never'}"
        parts.append(_table(title, rec["findings"], findings))
    else:
        parts.append(_table("Last reconciliation", rec, findings))
    columns = [("provider", "provider"), ("status", "status"), ("count", "deliveries")]
    parts.append(_table("Webhook inbox", data["webhooks"], columns))
    tables = data["tables"]
    estimated = isinstance(tables, list) and any(t["estimated"] for t in tables)
    title = "Tables (rows estimated by PostgreSQL)" if estimated else "Tables"
    parts.append(_table(title, tables, _TABLE_COLUMNS))
    return Group(*parts)
