"""``meterbridge reconcile``: compare each closed period's ledger, deliveries and platform usage."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from typing import Annotated

import structlog
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from bridge.cli.support import ConfigOpt, JsonOpt, SinkOpt, container, err, out, record, show
from bridge.domain.errors import ReconcileWindowInvalid
from bridge.domain.ports import UnitOfWorkFactory
from bridge.domain.reconcile import MISMATCH, OK, UNCHECKED, Reconciliation, Window
from bridge.service.common import PageRequest
from bridge.service.reconcile import Progress as ProgressFn
from bridge.service.reconcile import reconciliation_report

log = structlog.get_logger(__name__)

app = typer.Typer(
    help="Compare each closed period's ledger, deliveries and platform usage.",
    invoke_without_command=True,
)

PeriodOpt = Annotated[str | None, typer.Option("--period", help="A calendar month, YYYY-MM")]
FromOpt = Annotated[str | None, typer.Option("--from", help="Start, ISO-8601 (UTC if bare)")]
ToOpt = Annotated[str | None, typer.Option("--to", help="End (exclusive), ISO-8601")]

_REPORT_COLUMNS = (
    "period_start",
    "license_id",
    "sink",
    "status",
    "ledger_total",
    "delivered_total",
    "platform_total",
    "undelivered_count",
    "missing",
    "unknown",
    "repaired",
    "resendable",
    "unrepairable",
    "late",
)


@app.callback()
def reconcile(
    ctx: typer.Context,
    config: ConfigOpt = None,
    period: PeriodOpt = None,
    start: FromOpt = None,
    end: ToOpt = None,
    sink: SinkOpt = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair", help="Resend what a platform is missing, inside its dedupe window"
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Reconcile the closed periods that started in a window (``--period`` or ``--from`` and
    ``--to``), then print the run's summary. ``reconcile report`` shows the findings."""
    if ctx.invoked_subcommand is not None:
        return
    window = _window(period, start, end)
    with container(config) as c:
        reconciler = c.reconciler()
        if sys.stderr.isatty() and not as_json:
            columns = ("reconciling", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, transient=True) as bar:
                task = bar.add_task("periods", total=None)
                summary = reconciler.run(
                    window,
                    sink=sink,
                    repair=repair,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
        else:
            summary = reconciler.run(window, sink=sink, repair=repair, progress=_log_progress())
    if as_json:
        out.print_json(json.dumps(record(summary)))
    else:
        out.print(
            f"{summary.periods} periods, {summary.checked} checks: "
            f"[green]{summary.ok} {OK}[/green], [red]{summary.mismatched} {MISMATCH}[/red], "
            f"{summary.unchecked} {UNCHECKED}; resent {summary.resent}, "
            + ("" if repair else f"--repair would resend {summary.resendable}, ")
            + f"beyond the dedupe window {summary.unrepairable}"
        )
    if summary.mismatched:
        raise typer.Exit(3)  # scripts and cron see a discrepancy


@app.command("report")
def report(
    config: ConfigOpt = None,
    period: PeriodOpt = None,
    start: FromOpt = None,
    end: ToOpt = None,
    sink: SinkOpt = None,
    status: Annotated[
        str | None, typer.Option("--status", help="ok, mismatch or unchecked")
    ] = None,
    as_json: JsonOpt = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV for spreadsheets")] = False,
) -> None:
    """The stored findings, period by period (all of them without a window)."""
    window = _window(period, start, end) if (period or start or end) else None
    with container(config, migrate=False) as c:
        findings = _findings(c.uows, window, sink, status)
        if as_csv:  # streamed: a month of a large fleet is many rows
            writer = csv.DictWriter(
                sys.stdout, fieldnames=list(_REPORT_COLUMNS), extrasaction="ignore"
            )
            writer.writeheader()
            for item in findings:
                row = record(item)
                row["missing"] = " ".join(item.missing)
                row["unknown"] = " ".join(item.unknown)
                writer.writerow(row)
            return
        items = list(findings)
    show(items, _REPORT_COLUMNS, as_json, f"Reconciliation ({len(items)} findings)")


def _findings(
    uows: UnitOfWorkFactory, window: Window | None, sink: str | None, status: str | None
) -> Iterator[Reconciliation]:
    number = 1
    while True:
        page = reconciliation_report(uows, window, sink, status, PageRequest(number, 100))
        yield from page.items
        if number >= page.last:
            return
        number += 1


def _window(period: str | None, start: str | None, end: str | None) -> Window:
    try:
        return Window.parse(period, start, end)
    except ReconcileWindowInvalid as exc:
        err.print(f"[red]error {exc.code}:[/red] {exc.detail}")
        raise typer.Exit(2) from exc


def _log_progress() -> ProgressFn:
    """Plain progress lines for logs: every tenth of the way."""
    step = {"next": 0.0}

    def report(done: int, total: int) -> None:
        if total and done / total >= step["next"]:
            log.info("reconciliation_progressed", periods=done, of=total)
            step["next"] = done / total + 0.1

    return report
