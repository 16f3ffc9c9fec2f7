"""``meterbridge outbox``: usage changes on their way to each sink."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bridge.cli.support import ConfigOpt, JsonOpt, SinkOpt, container, out, show
from bridge.service.common import PageRequest
from bridge.service.relay import dead_letters, outbox_status, retry_dead_letters

app = typer.Typer(help="The outbox: usage changes on their way to each sink.", no_args_is_help=True)


@app.command("status")
def outbox_status_cmd(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Per sink: pending, in flight, delivered and dead items, counted by reason, and the
    oldest undelivered."""
    with container(config, migrate=False) as c:
        rows = outbox_status(c.uows)
        now = c.clock.now()
    records: list[dict[str, Any]] = [
        {
            "sink": r.sink,
            "status": r.status.value,
            "count": r.count,
            "mapping_missing": r.mapping_missing,
            "reasons": {reason.value: n for reason, n in sorted(r.reasons.items())},
            "oldest_age_s": (
                round((now - r.oldest_created).total_seconds(), 1)
                if r.oldest_created is not None and r.status.value != "delivered"
                else None
            ),
        }
        for r in rows
    ]
    if not as_json:  # one readable cell: "mapping_missing=2 rate_limited=5"
        for row in records:
            row["reasons"] = " ".join(f"{k}={v}" for k, v in row["reasons"].items())
    columns = ["sink", "status", "count", "reasons", "oldest_age_s"]
    show(records, columns, as_json, "Outbox")


@app.command("dead-letters")
def outbox_dead_letters(
    sink: SinkOpt = None,
    page: Annotated[int, typer.Option(help="Page number (100 per page, oldest first)")] = 1,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Items that will not be retried, with the platform's error."""
    with container(config, migrate=False) as c:
        letters = dead_letters(c.uows, sink, PageRequest(page, 100))
    rows = [
        {
            "id": d.item.id,
            "sink": d.item.sink,
            "entry_id": d.item.entry.id,
            "license_id": d.item.entry.license_id,
            "delta": d.item.entry.delta,
            "attempts": d.item.attempts,
            "reason": d.reason.value if d.reason is not None else None,
            "error": d.error,
        }
        for d in letters
    ]
    columns = ["id", "sink", "entry_id", "license_id", "delta", "attempts", "reason", "error"]
    show(rows, columns, as_json, f"Dead letters ({len(rows)})")


@app.command("retry")
def outbox_retry(
    sink: SinkOpt = None,
    ids: Annotated[list[int] | None, typer.Option("--id", help="Only these outbox ids")] = None,
    config: ConfigOpt = None,
) -> None:
    """Send dead letters again, with their original entry ids."""
    with container(config) as c:
        count = retry_dead_letters(c.uows, c.clock, sink, ids)
    out.print(f"requeued {count} dead letters")


@app.command("purge")
def outbox_purge(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Delete delivered items past their sink's retention (what the scheduler does daily), and
    webhook deliveries handled for good past theirs. Undelivered items are never deleted."""
    from datetime import timedelta

    from bridge.service.retention import purge_outbox, purge_webhooks

    with container(config) as c:
        batch = c.settings.retention.batch
        items = purge_outbox(c.uows, c.clock, c.outbox_retention(), batch=batch)
        hooks = timedelta(days=c.settings.retention.webhook_days)
        deliveries = purge_webhooks(c.uows, c.clock, hooks, batch=batch)
    if as_json:
        out.print_json(data={"outbox_items": items, "webhook_deliveries": deliveries})
    else:
        out.print(f"purged {items} delivered outbox items and {deliveries} webhook deliveries")
