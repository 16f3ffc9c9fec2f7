"""The composition root: the one place that wires settings, engine, use cases and the API."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

import structlog
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from bridge.api.app import create_app
from bridge.api.deps import ApiContext
from bridge.api.render import Renderer
from bridge.api.signing import Signing
from bridge.api.writes import MachineWrites, UsageWrites
from bridge.clock import SystemClock
from bridge.domain.ports import (
    Clock,
    PlatformReader,
    Sink,
    UsageUnitOfWorkFactory,
    WriterUnitOfWorkFactory,
)
from bridge.jobs.jobs import Jobs
from bridge.keys import AccountKey, load_key
from bridge.observability.http import registry, renderer
from bridge.service.auth import Authenticator
from bridge.service.batch_writer import BatchWriter
from bridge.service.checkin import CheckInService
from bridge.service.checkout import CheckoutService
from bridge.service.keygen import KeygenPolicy, KeygenRelay
from bridge.service.machines import MachineService
from bridge.service.principal_cache import PrincipalCache
from bridge.service.reconcile import Reconciler
from bridge.service.relay import Relay, RelayPolicy
from bridge.service.signed_keys import KeyMint
from bridge.service.status import outbox_depth
from bridge.service.usage import UsageService
from bridge.service.webhook_worker import WebhookPolicy, WebhookWorker
from bridge.service.webhooks import reindex
from bridge.settings import Settings, access_log_on
from bridge.store import stats
from bridge.store.engine import make_engine, ping
from bridge.store.locks import JobLocks
from bridge.store.migrate import ensure_current, upgrade
from bridge.store.uow import SqlUnitOfWorkFactory
from bridge.webhooks.endpoints import (
    KeygenReceiver,
    LagoPublicKey,
    LagoReceiver,
    M3terReceiver,
    Receiver,
    Receivers,
    StandardReceiver,
    StripeReceiver,
)
from bridge.webhooks.subject_map import TemplateSubjects
from connectors.file import FileSink
from connectors.keygen import KeygenClient
from connectors.lago import LagoSink
from connectors.lago.reader import LagoReader
from connectors.lago.webhook_key import fetch_public_key
from connectors.m3ter import M3terSink
from connectors.m3ter.reader import M3terReader

# Writer threads per API process on PostgreSQL (each holds a pooled connection while it writes).
WRITER_LANES = 4


@dataclass
class Container:
    settings: Settings
    engine: Engine
    uows: SqlUnitOfWorkFactory
    clock: Clock
    sinks: tuple[Sink, ...] = field(default=())
    readers: dict[str, PlatformReader] = field(default_factory=dict)
    # Set when the process stops: long jobs (the Keygen check's paced calls) end early.
    stopping: threading.Event = field(default_factory=threading.Event)
    keygen_client: KeygenClient | None = None

    @property
    def usage_uows(self) -> UsageUnitOfWorkFactory:
        """The same units of work, seen through the usage path's narrower Protocol."""
        return self.uows.usage

    @property
    def writer_uows(self) -> WriterUnitOfWorkFactory:
        """The same units of work, seen as a ``BatchWriter`` transaction."""
        return self.uows.usage

    def usage(self) -> UsageService:
        return UsageService(self.usage_uows, self.clock, [s.name for s in self.sinks])

    def checkins(self) -> CheckInService:
        """Check-ins; each sink with a reader is sent offline records within its platform's
        dedupe window (older ones could not be resent safely), the file sink any record."""
        windows = {name: reader.dedupe_window for name, reader in self.readers.items()}
        tolerance = timedelta(seconds=self.settings.checkin.future_tolerance_s)
        sinks = [s.name for s in self.sinks]
        return CheckInService(self.uows, self.clock, sinks, windows, tolerance)

    def machines(self) -> MachineService:
        return MachineService(self.uows, self.clock, [s.name for s in self.sinks])

    def webhook_worker(self) -> WebhookWorker:
        hooks = self.settings.webhooks
        rules = {"lago": hooks.lago.rules, "stripe": hooks.stripe.rules, "m3ter": hooks.m3ter.rules}
        policy = WebhookPolicy(
            max_attempts=hooks.max_attempts,
            retry_base_s=hooks.retry_base_s,
            retry_cap_s=hooks.retry_cap_s,
            idle_s=self.settings.relay.idle_s,
        )
        readers = {}
        lago = self.readers.get("lago")
        if isinstance(lago, LagoReader):
            readers["lago"] = lago.subscription_period
        handlers = {}
        if self.settings.keygen.enabled:
            handlers["keygen"] = self.keygen_relay().handle
        return WebhookWorker(
            self.uows, self.clock, rules, policy, readers=readers, handlers=handlers
        )

    def keygen_relay(self) -> KeygenRelay:
        """The Keygen relay (its API calls need ``[keygen] token``)."""
        keygen = self.settings.keygen
        if self.keygen_client is None and keygen.account_id and keygen.token:
            self.keygen_client = KeygenClient(keygen)
        policy = KeygenPolicy(
            usage_period=keygen.rule,
            requests_per_s=keygen.requests_per_s,
            check_interval_s=keygen.check_interval_s,
            sweep_s=keygen.sweep_s,
            checks_per_run=keygen.checks_per_run,
            reset_retry_base_s=keygen.reset_retry_base_s,
            reset_retry_cap_s=keygen.reset_retry_cap_s,
        )
        sinks = [s.name for s in self.sinks]
        return KeygenRelay(
            self.uows, self.clock, sinks, self.keygen_client, policy, stop=self.stopping
        )

    def reindex_webhook_subjects(self) -> int:
        """Rebuild the subject index from every license (after a template changed)."""
        return reindex(self.uows)

    def relay(self) -> Relay:
        policy = RelayPolicy(**self.settings.relay.model_dump())  # the same fields, by design
        return Relay(self.uows, self.sinks, self.clock, policy)

    def reconciler(self) -> Reconciler:
        return Reconciler(self.uows, self.clock, self.sinks, self.readers)

    def jobs(self) -> Jobs:
        sqlite = self.engine.dialect.name == "sqlite"
        return Jobs(
            self.uows,
            self.clock,
            JobLocks(self.engine).hold,
            self.reconciler(),
            self.machines(),
            lookback_days=self.settings.scheduler.reconcile_lookback_days,
            close_batch=self.settings.scheduler.close_batch,
            # SQLite has one writer: more transactions at a time would only queue.
            close_workers=1 if sqlite else self.settings.scheduler.close_workers,
            key_retention_days=self.settings.scheduler.idempotency_retention_days,
            outbox_retention=self.outbox_retention(),
            webhook_retention=timedelta(days=self.settings.retention.webhook_days),
            purge_batch=self.settings.retention.batch,
            keygen=self.keygen_relay() if self.settings.keygen.enabled else None,
        )

    def outbox_retention(self) -> dict[str, timedelta]:
        """Each sink's retention of delivered items: the setting, or the platform's dedupe
        window if longer (a repair may re-enqueue an item inside it)."""
        days = timedelta(days=self.settings.retention.outbox_days)
        retention = {}
        for sink in self.sinks:
            reader = self.readers.get(sink.name)
            window = reader.dedupe_window if reader is not None else None
            retention[sink.name] = max(days, window) if window is not None else days
        return retention

    def authenticator(self) -> Authenticator:
        token = self.settings.admin_token
        auth = self.settings.auth
        cache = PrincipalCache(auth.cache_ttl_s, auth.cache_check_s, auth.cache_size)
        self.uows.on_revocation(cache.invalidate)
        secret = token.get_secret_value() if token else None
        return Authenticator(self.uows, secret, self.clock, cache)

    def account_key(self) -> AccountKey:
        """The configured or stored signing key (``serve`` creates one first). Without one, an
        ephemeral key: fine for tests and benches, never for clients that pin the public key."""
        key = load_key(self.settings)
        if key is None:
            structlog.get_logger(__name__).warning("signing_key_ephemeral")
            key = AccountKey.generate()
        return key

    def ready(self) -> bool:
        return ping(self.engine)

    def migrate(self) -> None:
        """Bring the schema to head, under a lock (several processes may start at once)."""
        upgrade(self.engine)

    def check_schema(self) -> None:
        """Raise ``SchemaBehind``/``SchemaUnknown`` unless the schema is at head; no migration."""
        ensure_current(self.engine)

    def schema_revision(self) -> tuple[str | None, str | None]:
        """The database's schema revision and this version's head."""
        return stats.schema_revision(self.engine)

    def table_sizes(self) -> list[stats.TableSize]:
        return stats.table_sizes(self.engine)

    def last_reconciliation(self) -> stats.LastReconciliation:
        return stats.last_reconciliation(self.engine)

    def dispose(self) -> None:
        self.stopping.set()
        if self.keygen_client is not None:
            self.keygen_client.close()
        for sink in self.sinks:
            close = getattr(sink, "close", None)  # sinks that own an HTTP client
            if close is not None:
                close()
        self.engine.dispose()


def build(settings: Settings, clock: Clock | None = None) -> Container:
    clock = clock or SystemClock()
    engine = make_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        sqlite_cache_mib=settings.sqlite_cache_mib,
        pool_timeout_s=settings.db_pool_timeout_s,
    )
    sinks, readers = build_sinks(settings, clock)
    return Container(
        settings,
        engine,
        SqlUnitOfWorkFactory(engine, webhook_subjects(settings)),
        clock,
        sinks,
        readers,
    )


def build_sinks(
    settings: Settings, clock: Clock
) -> tuple[tuple[Sink, ...], dict[str, PlatformReader]]:
    """The enabled sinks, in the order their outbox rows are written, and the readers of the
    platforms that can report what they hold (sharing each sink's HTTP client)."""
    sinks: list[Sink] = []
    readers: dict[str, PlatformReader] = {}
    if settings.sinks.file.enabled:
        sinks.append(FileSink(settings.sinks.file.path))
    if settings.sinks.lago.enabled:
        lago = LagoSink(settings.sinks.lago)
        sinks.append(lago)
        readers[lago.name] = LagoReader(settings.sinks.lago, lago.client)
    if settings.sinks.m3ter.enabled:
        m3ter = M3terSink(settings.sinks.m3ter, clock=clock)
        sinks.append(m3ter)
        readers[m3ter.name] = M3terReader(settings.sinks.m3ter, m3ter.client, m3ter.auth)
    return tuple(sinks), readers


def webhook_subjects(settings: Settings) -> TemplateSubjects | None:
    """The templates that map a license to each configured provider's subscription (or
    account), each defaulting to its sink's; ``None`` when no webhook provider is configured."""
    hooks = settings.webhooks
    templates: dict[str, str] = {}
    if hooks.lago.enabled:
        lago = hooks.lago.subscription_template or settings.sinks.lago.subscription_template
        templates["lago"] = lago
    if hooks.stripe.enabled:
        templates["stripe"] = hooks.stripe.subscription_template
    if hooks.m3ter.enabled:
        templates["m3ter"] = hooks.m3ter.account_template or settings.sinks.m3ter.account_template
    return TemplateSubjects(templates) if templates else None


def build_receivers(settings: Settings) -> Receivers:
    """A receiver for each configured webhook provider (the others answer 404)."""
    hooks = settings.webhooks
    receivers: dict[str, Receiver] = {}
    if hooks.lago.enabled:
        fetch = None
        if hooks.lago.public_key_url:
            url, key = hooks.lago.public_key_url, settings.sinks.lago.api_key
            fetch = partial(fetch_public_key, url, key.get_secret_value() if key else None)
        receivers["lago"] = LagoReceiver(hooks.lago, LagoPublicKey(hooks.lago.public_key, fetch))
    if hooks.stripe.enabled:
        receivers["stripe"] = StripeReceiver(hooks.stripe)
    if hooks.m3ter.enabled:
        receivers["m3ter"] = M3terReceiver(hooks.m3ter)
    keygen = settings.keygen
    if keygen.enabled:
        assert keygen.account_id is not None
        receivers["keygen"] = KeygenReceiver(
            keygen.account_id, keygen.key, keygen.algorithm, keygen.tolerance_s, keygen.public_host
        )
    for source, standard in hooks.standard.items():
        receiver = StandardReceiver(source, standard)
        receivers[receiver.provider] = receiver
    return Receivers(receivers)


def build_app(container: Container, *, fast_usage: bool = True) -> FastAPI:
    service = container.usage()
    # A writer thread commits concurrent changes in groups (one transaction, a savepoint each):
    # SQLite has one writer anyway, and on PostgreSQL a commit per change costs more than the
    # change (a WAL flush, a pooled connection and a threadpool hop each).
    sqlite = container.engine.dialect.name == "sqlite"
    lanes = 1 if sqlite else max(1, min(WRITER_LANES, container.settings.db_pool_size // 2))
    machines = container.machines()
    batch = BatchWriter(container.writer_uows, service, lanes=lanes, machines=machines)
    key = container.account_key()
    context = ApiContext(
        uows=container.uows,
        clock=container.clock,
        auth=container.authenticator(),
        usage=UsageWrites(service, batch),
        machines=machines,
        activations=MachineWrites(batch),
        render=Renderer(container.settings.account),
        account=container.settings.account,
        ready=container.ready,
        checkout=CheckoutService(container.uows, container.clock, key),
        mint=KeyMint(key, container.settings.account),
        webhooks=build_receivers(container.settings),
        metrics=metrics_renderer(container) if metrics_on_api(container.settings) else None,
        checkins=container.checkins(),
    )
    signing = Signing(
        account=container.settings.account,
        key=key.private,
        now=container.clock.now,
        public_host=container.settings.public_host,
    )
    return create_app(
        context, signing, fast_usage=fast_usage, access_log=access_log_on(container.settings)
    )


def metrics_registry(container: Container) -> CollectorRegistry:
    """The metrics ``/metrics`` shows, with the outbox read from this container's store."""
    depth = partial(outbox_depth, container.uows, container.clock)
    return registry(depth, [s.name for s in container.sinks])


def metrics_renderer(container: Container) -> Callable[[], tuple[bytes, str]]:
    return renderer(metrics_registry(container))


def metrics_on_api(settings: Settings) -> bool:
    """Whether ``/metrics`` is served by the API (else on ``metrics.port``, or not at all)."""
    return settings.metrics.enabled and settings.metrics.port is None
