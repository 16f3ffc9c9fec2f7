"""``meterbridge``: serve the API and operate the store from a shell.

Store commands act as the admin, directly on the configured database (an operator on the box).
Output is a readable table by default and JSON with ``--json``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer

from bridge.bootstrap import Container, build_app
from bridge.cli_billing import periods_app, reconcile_app, scheduler
from bridge.cli_keys import keys_app
from bridge.cli_support import (
    ADMIN,
    ConfigOpt,
    JsonOpt,
    container,
    err,
    out,
    plain,
    record,
    show,
)
from bridge.cli_webhooks import webhook_thread, webhooks_app
from bridge.domain.access import LicenseAction
from bridge.domain.commands import NewLicense, NewMachine, NewPolicy, NewProduct
from bridge.domain.model import ExpirationBasis, UsageKind
from bridge.keys import SigningKeyInvalid, ensure_key
from bridge.service import licenses, policies, products
from bridge.service.auth import ensure_admin_token
from bridge.service.common import PageRequest
from bridge.service.relay import dead_letters, outbox_status, retry_dead_letters
from bridge.service.usage import UsageChange, usage_history

app = typer.Typer(
    help="Metering Bridge: Keygen-compatible usage limits, forwarded to billing.",
    no_args_is_help=True,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
product_app = typer.Typer(help="Products.", no_args_is_help=True)
policy_app = typer.Typer(help="Policies.", no_args_is_help=True)
license_app = typer.Typer(help="Licenses.", no_args_is_help=True)
usage_app = typer.Typer(help="Usage actions and history.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(product_app, name="product")
app.add_typer(policy_app, name="policy")
app.add_typer(license_app, name="license")
app.add_typer(usage_app, name="usage")
outbox_app = typer.Typer(
    help="The outbox: usage changes on their way to each sink.", no_args_is_help=True
)
app.add_typer(outbox_app, name="outbox")
app.add_typer(periods_app, name="periods")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(reconcile_app, name="reconcile")
app.command()(scheduler)

machine_app = typer.Typer(help="Machine activations and their cores.", no_args_is_help=True)
app.add_typer(machine_app, name="machine")
app.add_typer(keys_app, name="keys")

log = structlog.get_logger(__name__)
PageOpt = Annotated[int, typer.Option(help="Page number (100 per page)")]

# The shared helpers keep their private names here (every command below uses them).
_container, _show, _record, _plain = container, show, record, plain


# serve / db ---------------------------------------------------------------------------------
@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Listen address")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port")] = None,
) -> None:
    """Apply migrations and run the HTTP API (SQLite by default). SIGTERM or Ctrl-C stops it
    gracefully: open requests are answered, the relay finishes its batch, the scheduler stops,
    then it exits 0."""
    import uvicorn

    with _container(config, migrate=True) as container:
        if container.settings.admin_token is None:
            secret = ensure_admin_token(container.uows, container.clock)
            if secret is not None:
                out.print("[bold]Admin token created (shown once, only its hash is stored):[/bold]")
                out.print(secret, soft_wrap=True)
        try:
            key, created = ensure_key(container.settings)
        except SigningKeyInvalid as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
        if created is not None:
            out.print(f"Response-signing key created in {created} (mode 0600); public key (hex):")
            out.print(key.public_hex(), soft_wrap=True)
        server = uvicorn.Server(
            uvicorn.Config(
                build_app(container),
                host=host or container.settings.host,
                port=port or container.settings.port,
                log_level=container.settings.log_level,
                date_header=False,  # the signer sets the one Date header it signs
                # uvicorn's records go through bridge.logging (context, redaction, format);
                # the middleware logs each request as request_completed, with its id.
                log_config=None,
                access_log=False,
            )
        )
        # uvicorn takes the signals while it runs and then raises them again, for the handlers
        # it found: these, so that the relay and the scheduler still stop in order below.
        _on_stop_signals(lambda: setattr(server, "should_exit", True))
        with _relay_thread(container), webhook_thread(container), _scheduler(container):
            server.run()
            log.info("shutdown_started", command="serve")
    log.info("serve_stopped")


def _on_stop_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call ``stop`` (once is enough: the stop is bounded)."""

    def handler(signum: int, _frame: object) -> None:
        stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


@contextmanager
def _relay_thread(container: Container) -> Iterator[None]:
    """The outbox relay in a thread, stopped when the block ends: it finishes the batch in
    flight and records it; if that takes longer than ``relay.stop_timeout_s`` (a platform
    holding the request), what it holds is handed back, due again at once."""
    if not container.sinks:
        yield
        return
    relay = container.relay()
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), name="bridge-relay", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=relay.policy.stop_timeout_s)
        if thread.is_alive():
            log.warning("relay_stop_timed_out", timeout_s=relay.policy.stop_timeout_s)
            relay.flush()
            relay.release_held()


@contextmanager
def _scheduler(container: Container) -> Iterator[None]:
    """The scheduled jobs beside the API (unless ``scheduler.enabled`` is false)."""
    if not container.settings.scheduler.enabled:
        yield
        return
    from bridge.jobs.scheduler import build_scheduler

    jobs = build_scheduler(container.jobs(), container.settings, blocking=False)
    jobs.start()
    try:
        yield
    finally:
        jobs.shutdown(wait=True)  # a running job finishes first
        log.info("scheduler_stopped")


@app.command()
def worker(
    config: ConfigOpt = None,
    once: Annotated[
        bool, typer.Option("--once", help="Deliver what is due now, then exit")
    ] = False,
) -> None:
    """Run the outbox relay alone (any number on PostgreSQL; one per SQLite file). SIGTERM or
    Ctrl-C stops it after its batch in flight, recorded, then it exits 0."""
    with _container(config) as container:
        if once:
            relay = container.relay()
            total = 0
            while handled := sum(r.handled for r in relay.run_once().values()):
                total += handled
            out.print(f"handled {total} outbox items")
            hooks = container.webhook_worker()
            handled_hooks = 0
            while claimed := hooks.run_once():
                handled_hooks += claimed
            if handled_hooks:
                out.print(f"handled {handled_hooks} webhook deliveries")
            return
        stopping = threading.Event()
        _on_stop_signals(stopping.set)
        with _relay_thread(container), webhook_thread(container):
            stopping.wait()
            log.info("shutdown_started", command="worker")
    log.info("worker_stopped")


@outbox_app.command("status")
def outbox_status_cmd(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Per sink: pending, in flight, delivered and dead items, counted by reason, and the
    oldest undelivered."""
    with _container(config, migrate=False) as c:
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
    _show(records, columns, as_json, "Outbox")


SinkOpt = Annotated[str | None, typer.Option("--sink", help="Only this sink")]


@outbox_app.command("dead-letters")
def outbox_dead_letters(
    sink: SinkOpt = None,
    page: Annotated[int, typer.Option(help="Page number (100 per page, oldest first)")] = 1,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Items that will not be retried, with the platform's error."""
    with _container(config, migrate=False) as c:
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
    _show(rows, columns, as_json, f"Dead letters ({len(rows)})")


@outbox_app.command("retry")
def outbox_retry(
    sink: SinkOpt = None,
    ids: Annotated[list[int] | None, typer.Option("--id", help="Only these outbox ids")] = None,
    config: ConfigOpt = None,
) -> None:
    """Send dead letters again, with their original entry ids."""
    with _container(config) as c:
        count = retry_dead_letters(c.uows, c.clock, sink, ids)
    out.print(f"requeued {count} dead letters")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Apply all Alembic migrations."""
    with _container(config, migrate=True) as container:
        out.print(f"database at head: {container.engine.url.render_as_string(hide_password=True)}")


# products / policies / licenses -------------------------------------------------------------
@product_app.command("create")
def product_create(
    name: Annotated[str, typer.Option(help="Product name")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    with _container(config) as c:
        product = products.create_product(c.uows, c.clock, ADMIN, NewProduct(name=name))
    _show([product], ["id", "name", "created"], as_json, "Product", one=True)


@product_app.command("list")
def product_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    with _container(config, migrate=False) as c:
        page = products.list_products(c.uows, ADMIN, PageRequest(1, 100))
    _show(page.items, ["id", "name", "created"], as_json, f"Products ({page.total})")


_POLICY_COLUMNS = ["id", "name", "product_id", "max_uses", "expiration_basis", "duration"]


@policy_app.command("create")
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
        expiration_basis=ExpirationBasis.FROM_FIRST_USE if first_use else None,
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
    with _container(config) as c:
        policy = policies.create_policy(c.uows, c.clock, ADMIN, command)
    _show([policy], _POLICY_COLUMNS, as_json, "Policy", one=True)


@policy_app.command("list")
def policy_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    with _container(config, migrate=False) as c:
        page = policies.list_policies(c.uows, ADMIN, PageRequest(1, 100), None)
    _show(page.items, _POLICY_COLUMNS, as_json, f"Policies ({page.total})")


def _license_row(lic: Any) -> dict[str, Any]:
    return {**_record(lic), "max_uses": lic.terms.max_uses}


_LICENSE_COLUMNS = ["id", "key", "policy_id", "uses", "max_uses", "expiry", "suspended"]


@license_app.command("create")
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
    with _container(config) as c:
        lic = licenses.create_license(c.uows, c.clock, ADMIN, command)
    _show([_license_row(lic)], _LICENSE_COLUMNS, as_json, "License", one=True)


@license_app.command("list")
def license_list(
    policy: Annotated[str | None, typer.Option(help="Only this policy's licenses")] = None,
    page: PageOpt = 1,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    with _container(config, migrate=False) as c:
        found = licenses.list_licenses(c.uows, ADMIN, PageRequest(page, 100), policy)
    rows = [_license_row(lic) for lic in found.items]
    _show(rows, _LICENSE_COLUMNS, as_json, f"Licenses ({found.total})")


@license_app.command("show")
def license_show(
    license: Annotated[str, typer.Argument(help="License id or key")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    with _container(config, migrate=False) as c:
        lic = licenses.get_license(c.uows, ADMIN, license, LicenseAction.READ)
    columns = [*_LICENSE_COLUMNS, "created", "updated"]
    _show([_license_row(lic)], columns, as_json, "License", one=True)


# usage --------------------------------------------------------------------------------------
LicenseArg = Annotated[str, typer.Argument(help="License id or key")]
KeyOpt = Annotated[
    str | None, typer.Option("--idempotency-key", help="Replays the first answer on retry")
]


def _change(config: Path | None, change: UsageChange, as_json: bool) -> None:
    with _container(config) as c:
        outcome = c.usage().apply(ADMIN, change)
    row = {**_license_row(outcome.license), "entry_id": outcome.entry_id}
    _show([row], ["key", "uses", "max_uses", "entry_id"], as_json, "Usage", one=True)


@usage_app.command("increment")
def usage_increment(
    license: LicenseArg,
    by: Annotated[int, typer.Option(help="Amount")] = 1,
    idempotency_key: KeyOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    _change(config, UsageChange(license, UsageKind.INCREMENT, by, idempotency_key), as_json)


@usage_app.command("decrement")
def usage_decrement(
    license: LicenseArg,
    by: Annotated[int, typer.Option(help="Amount")] = 1,
    idempotency_key: KeyOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    _change(config, UsageChange(license, UsageKind.DECREMENT, by, idempotency_key), as_json)


@usage_app.command("reset")
def usage_reset(
    license: LicenseArg,
    idempotency_key: KeyOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    _change(config, UsageChange(license, UsageKind.RESET, 0, idempotency_key), as_json)


@usage_app.command("history")
def usage_history_cmd(
    license: LicenseArg,
    page: Annotated[int, typer.Option(help="Page number (100 per page, newest first)")] = 1,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    with _container(config, migrate=False) as c:
        _, entries = usage_history(c.uows, ADMIN, license, PageRequest(page, 100))
    columns = ["occurred_at", "kind", "delta", "uses_before", "uses_after", "actor", "id"]
    _show(entries.items, columns, as_json, f"Usage ledger ({entries.total} entries)")


# machines -----------------------------------------------------------------------------------
_MACHINE_COLUMNS = ["id", "license_id", "fingerprint", "cores", "name", "last_heartbeat"]


@machine_app.command("activate")
def machine_activate(
    license: LicenseArg,
    fingerprint: Annotated[str, typer.Option(help="Unique per license")],
    cores: Annotated[int | None, typer.Option(help="CPU cores, counted against maxCores")] = None,
    name: Annotated[str | None, typer.Option(help="Machine name")] = None,
    platform: Annotated[str | None, typer.Option(help="Platform, e.g. linux")] = None,
    hostname: Annotated[str | None, typer.Option(help="Hostname")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Activate a machine on a license, within its machine and core limits."""
    command = NewMachine(
        license_ref=license,
        fingerprint=fingerprint,
        cores=cores,
        name=name,
        platform=platform,
        hostname=hostname,
    )
    with _container(config) as c:
        machine = c.machines().activate(ADMIN, command)
    _show([machine], _MACHINE_COLUMNS, as_json, "Machine", one=True)


@machine_app.command("list")
def machine_list(
    license: Annotated[str | None, typer.Option(help="Only this license's (id or key)")] = None,
    page: PageOpt = 1,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    with _container(config, migrate=False) as c:
        found = c.machines().list(ADMIN, PageRequest(page, 100), license)
    _show(found.items, _MACHINE_COLUMNS, as_json, f"Machines ({found.total})")


@machine_app.command("deactivate")
def machine_deactivate(
    machine: Annotated[str, typer.Argument(help="Machine id")],
    config: ConfigOpt = None,
) -> None:
    """Deactivate a machine; its cores are freed (a ledger entry, forwarded to the sinks)."""
    with _container(config) as c:
        c.machines().deactivate(ADMIN, machine)
    out.print(f"deactivated machine {machine}")


@machine_app.command("reap")
def machine_reap(config: ConfigOpt = None) -> None:
    """Deactivate every machine whose heartbeat is overdue now (serve does this periodically)."""
    with _container(config) as c:
        count = c.machines().reap_dead_machines()
    out.print(f"deactivated {count} dead machines")


def main() -> None:
    app()
