"""``meterbridge serve``, ``worker`` and ``scheduler``: the long-running processes (the commands
without a group), and the threads they run beside (the outbox relay, the webhook worker, the
scheduled jobs). Each stops gracefully on SIGTERM or Ctrl-C and exits 0."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer

from bridge.bootstrap import Container, build, build_app
from bridge.cli.support import ConfigOpt, container, err, out
from bridge.keys import SigningKeyInvalid, ensure_key
from bridge.logging import configure
from bridge.service.auth import ensure_admin_token
from bridge.settings import load_settings

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

log = structlog.get_logger(__name__)
WEBHOOK_STOP_TIMEOUT_S = 10.0


def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Listen address")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="API processes sharing the port (PostgreSQL only); the relay, the webhook "
            "worker and the scheduler stay in this one",
        ),
    ] = 1,
) -> None:
    """Apply migrations and run the HTTP API (SQLite by default). SIGTERM or Ctrl-C stops it
    gracefully: open requests are answered, the relay finishes its batch, the scheduler stops,
    then it exits 0."""
    import uvicorn

    from bridge.observability.memory import bound_arenas

    bound_arenas()  # before the threads start: freed memory stays in a few arenas
    with container(config, migrate=True) as c:
        if workers > 1 and c.engine.dialect.name == "sqlite":
            err.print("[red]error:[/red] --workers needs PostgreSQL (SQLite has one writer)")
            raise typer.Exit(2)
        if c.settings.admin_token is None:
            secret = ensure_admin_token(c.uows, c.clock)
            if secret is not None:
                out.print("[bold]Admin token created (shown once, only its hash is stored):[/bold]")
                out.print(secret, soft_wrap=True)
        try:
            key, created = ensure_key(c.settings)
        except SigningKeyInvalid as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
        if created is not None:
            out.print(f"Response-signing key created in {created} (mode 0600); public key (hex):")
            out.print(key.public_hex(), soft_wrap=True)
        options: dict[str, Any] = {
            "host": host or c.settings.host,
            "port": port or c.settings.port,
            "log_level": c.settings.log_level,
            "date_header": False,  # the signer sets the one Date header it signs
            # uvicorn's records go through bridge.logging (context, redaction, format); the
            # middleware logs each request as request_completed (the access_log setting).
            "log_config": None,
            "access_log": False,
        }
        if workers > 1:
            if config is not None:  # the API processes read the same settings
                os.environ["BRIDGE_CONFIG"] = str(config.resolve())
            from bridge.observability.metrics import shared_directory

            # Before anything counts or a process is spawned: every process's counters go to
            # one directory, and /metrics of any API process sums them all.
            with (
                shared_directory(),
                _metrics_port(c),
                _relay_thread(c),
                _webhook_thread(c),
                _scheduler(c),
            ):
                supervised = uvicorn.Config(
                    WORKER_APP,
                    factory=True,
                    workers=workers,
                    # a process still importing and connecting is not a dead one (uvicorn's
                    # default, 5 s, kills workers that start slowly on a busy machine)
                    timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
                    **options,
                )
                _run_workers(supervised)
                log.info("shutdown_started", command="serve")
            log.info("serve_stopped")
            return
        server = uvicorn.Server(uvicorn.Config(build_app(c), **options))
        # uvicorn takes the signals while it runs and then raises them again, for the handlers
        # it found: these, so that the relay and the scheduler still stop in order below.
        _on_stop_signals(lambda: setattr(server, "should_exit", True))
        with _metrics_port(c), _relay_thread(c), _webhook_thread(c), _scheduler(c):
            server.run()
            log.info("shutdown_started", command="serve")
    log.info("serve_stopped")


WORKER_APP = "bridge.cli.processes:worker_app"
WORKER_HEALTHCHECK_S = 60


def worker_app() -> FastAPI:
    """The app of one API process of ``serve --workers N``: uvicorn calls this in each process
    it spawns. The settings come from the environment (and ``$BRIDGE_CONFIG``, which ``serve``
    sets from ``--config``); ``serve`` has migrated the schema and created the keys already."""
    settings = load_settings()
    configure(settings.log_level, settings.log_format)
    built = build(settings)
    built.check_schema()
    return build_app(built)


def _run_workers(config: uvicorn.Config) -> None:
    """uvicorn's supervisor: it binds the socket, spawns the processes, restarts one that dies,
    and on SIGTERM or SIGINT stops them all gracefully (each answers its open requests)."""
    from uvicorn.supervisors import Multiprocess

    sock = config.bind_socket()
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()


def worker(
    config: ConfigOpt = None,
    once: Annotated[
        bool, typer.Option("--once", help="Deliver what is due now, then exit")
    ] = False,
) -> None:
    """Run the outbox relay alone (any number on PostgreSQL; one per SQLite file). SIGTERM or
    Ctrl-C stops it after its batch in flight, recorded, then it exits 0."""
    from bridge.observability.memory import bound_arenas

    bound_arenas()
    with container(config) as c:
        if once:
            relay = c.relay()
            total = 0
            while handled := sum(r.handled for r in relay.run_once().values()):
                total += handled
            out.print(f"handled {total} outbox items")
            hooks = c.webhook_worker()
            handled_hooks = 0
            while claimed := hooks.run_once():
                handled_hooks += claimed
            if handled_hooks:
                out.print(f"handled {handled_hooks} webhook deliveries")
            return
        stopping = threading.Event()
        _on_stop_signals(stopping.set)
        with _relay_thread(c), _webhook_thread(c):
            stopping.wait()
            log.info("shutdown_started", command="worker")
    log.info("worker_stopped")


def scheduler(config: ConfigOpt = None) -> None:
    """Run the scheduled jobs alone: period closing, machine reaping and the daily
    reconciliation (any number of replicas on PostgreSQL; one per SQLite file)."""
    from bridge.jobs.scheduler import build_scheduler
    from bridge.observability.memory import bound_arenas

    bound_arenas()
    with container(config) as c:
        jobs = build_scheduler(c.jobs(), c.settings, blocking=False)
        # SIGTERM or Ctrl-C: stop taking jobs, let a running one finish, then exit 0.
        stopping = threading.Event()
        _on_stop_signals(stopping.set)
        jobs.start()
        out.print("scheduler running; Ctrl-C stops it")
        stopping.wait()
        log.info("shutdown_started", command="scheduler")
        c.stopping.set()  # a paced Keygen job in progress ends early
        jobs.shutdown(wait=True)
    log.info("scheduler_stopped")


def _on_stop_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call ``stop`` (once is enough: the stop is bounded)."""

    def handler(signum: int, _frame: object) -> None:
        stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


@contextmanager
def _metrics_port(c: Container) -> Iterator[None]:
    """``/metrics`` on a port of its own, when ``metrics.port`` is set."""
    port = c.settings.metrics.port
    if not c.settings.metrics.enabled or port is None:
        yield
        return
    from bridge.bootstrap import metrics_registry
    from bridge.observability.http import serve_port

    stop = serve_port(metrics_registry(c), c.settings.metrics.host, port)
    log.info("metrics_served", host=c.settings.metrics.host, port=port)
    try:
        yield
    finally:
        stop()


@contextmanager
def _relay_thread(c: Container) -> Iterator[None]:
    """The outbox relay in a thread, stopped when the block ends: it finishes the batch in
    flight and records it; if that takes longer than ``relay.stop_timeout_s`` (a platform
    holding the request), what it holds is handed back, due again at once."""
    if not c.sinks:
        yield
        return
    relay = c.relay()
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


def _webhooks_configured(c: Container) -> bool:
    hooks = c.settings.webhooks
    return bool(
        hooks.lago.enabled
        or hooks.stripe.enabled
        or hooks.m3ter.enabled
        or hooks.standard
        or c.settings.keygen.enabled
    )


@contextmanager
def _webhook_thread(c: Container) -> Iterator[None]:
    """The webhook worker in a thread (when a provider is configured), stopped when the block
    ends after the delivery in hand. It first brings the subject index up to date."""
    if not _webhooks_configured(c):
        yield
        return
    worker = c.webhook_worker()
    stop = threading.Event()

    def run() -> None:
        try:
            c.reindex_webhook_subjects()
        except Exception:  # the store is down: lookups use the index as it is
            log.exception("webhook_reindex_failed")
        worker.run(stop)

    thread = threading.Thread(target=run, name="bridge-webhooks", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=WEBHOOK_STOP_TIMEOUT_S)


@contextmanager
def _scheduler(c: Container) -> Iterator[None]:
    """The scheduled jobs beside the API (unless ``scheduler.enabled`` is false)."""
    if not c.settings.scheduler.enabled:
        yield
        return
    from bridge.jobs.scheduler import build_scheduler

    jobs = build_scheduler(c.jobs(), c.settings, blocking=False)
    jobs.start()
    try:
        yield
    finally:
        c.stopping.set()  # a paced Keygen job in progress ends early
        jobs.shutdown(wait=True)  # a running job finishes first
        log.info("scheduler_stopped")
