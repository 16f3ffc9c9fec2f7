"""``meterbridge webhooks``: the stored deliveries of webhooks in, and their replay (the worker
thread that handles them beside ``serve`` and ``worker`` is in ``processes.py``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bridge.cli.support import ConfigOpt, JsonOpt, container, out, show
from bridge.domain.webhooks import DeliveryStatus, WebhookDelivery
from bridge.service import webhooks as uc

app = typer.Typer(help="Webhooks in: stored deliveries.", no_args_is_help=True)


def _row(d: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "provider": d.provider,
        "delivery_id": d.delivery_id,
        "event_type": d.event_type,
        "status": d.status.value,
        "subject": d.subject,
        "attempts": d.attempts,
        "received_at": d.received_at,
        "handled_at": d.handled_at,
        "last_error": d.last_error,
        "effects": list(d.effects),
    }


@app.command("list")
def webhooks_list(
    provider: Annotated[str | None, typer.Option(help="Only this provider")] = None,
    status: Annotated[DeliveryStatus | None, typer.Option(help="Only this status")] = None,
    page: Annotated[int, typer.Option(help="Page number (100 per page, newest first)")] = 1,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stored deliveries, newest first."""
    with container(config, migrate=False) as c:
        found = uc.list_deliveries(c.uows, provider, status, offset=(page - 1) * 100, limit=100)
    columns = ["id", "provider", "delivery_id", "event_type", "status", "subject", "attempts"]
    show([_row(d) for d in found], columns, as_json, f"Webhook deliveries ({len(found)})")


@app.command("show")
def webhooks_show(id: int, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """One delivery: its status, effects and body."""
    with container(config, migrate=False) as c:
        d = uc.get_delivery(c.uows, id)
    row = _row(d) | {"body": d.body}
    show([row], list(row), as_json, f"Webhook delivery {id}", one=True)


@app.command("replay")
def webhooks_replay(id: int, config: ConfigOpt = None) -> None:
    """Handle a stored delivery again (an unmatched one whose license exists now, a parked one
    after its cause is mended). Its effects are idempotent."""
    with container(config) as c:
        uc.replay(c.uows, c.clock, id)
        worker = c.webhook_worker()
        while worker.run_once():
            pass
        d = uc.get_delivery(c.uows, id)
    out.print(f"delivery {id}: {d.status.value}")


@app.command("history")
def webhooks_history(license: str, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """What webhooks did to a license (by id or key), with the delivery behind each effect."""
    with container(config, migrate=False) as c:
        found = uc.license_effects(c.uows, license)
    columns = ["at", "provider", "delivery_id", "delivery", "action", "detail"]
    show(found, columns, as_json, f"Webhook history of {license}")


@app.command("reindex")
def webhooks_reindex(config: ConfigOpt = None) -> None:
    """Rebuild the index from subscriptions to licenses (the worker does it when it starts)."""
    with container(config) as c:
        count = c.reindex_webhook_subjects()
    out.print(f"indexed {count} licenses")
