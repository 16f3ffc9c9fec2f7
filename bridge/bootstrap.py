"""The composition root: the one place that wires settings, engine, use cases and the API."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from fastapi import FastAPI
from sqlalchemy import Engine

from bridge.api.app import create_app
from bridge.api.deps import ApiContext
from bridge.api.render import Renderer
from bridge.api.signing import Signing
from bridge.api.writes import UsageWrites
from bridge.clock import SystemClock
from bridge.domain.ports import Clock, PlatformReader, Sink, UsageUnitOfWorkFactory
from bridge.jobs.jobs import Jobs
from bridge.keys import AccountKey, load_key
from bridge.service.auth import Authenticator
from bridge.service.batch_writer import BatchWriter
from bridge.service.machines import MachineService
from bridge.service.reconcile import Reconciler
from bridge.service.relay import Relay, RelayPolicy
from bridge.service.usage import UsageService
from bridge.settings import Settings
from bridge.store.engine import make_engine, ping
from bridge.store.locks import JobLocks
from bridge.store.migrate import ensure_current, upgrade
from bridge.store.uow import SqlUnitOfWorkFactory
from connectors.file import FileSink
from connectors.lago import LagoSink
from connectors.lago.reader import LagoReader
from connectors.m3ter import M3terSink
from connectors.m3ter.reader import M3terReader


@dataclass
class Container:
    settings: Settings
    engine: Engine
    uows: SqlUnitOfWorkFactory
    clock: Clock
    sinks: tuple[Sink, ...] = field(default=())
    readers: dict[str, PlatformReader] = field(default_factory=dict)

    @property
    def usage_uows(self) -> UsageUnitOfWorkFactory:
        """The same units of work, seen through the usage path's narrower Protocol."""
        return self.uows.usage

    def usage(self) -> UsageService:
        return UsageService(self.usage_uows, self.clock, [s.name for s in self.sinks])

    def machines(self) -> MachineService:
        return MachineService(self.uows, self.clock, [s.name for s in self.sinks])

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
        )

    def authenticator(self) -> Authenticator:
        token = self.settings.admin_token
        return Authenticator(self.uows, token.get_secret_value() if token else None, self.clock)

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

    def dispose(self) -> None:
        for sink in self.sinks:
            close = getattr(sink, "close", None)  # sinks that own an HTTP client
            if close is not None:
                close()
        self.engine.dispose()


def build(settings: Settings, clock: Clock | None = None) -> Container:
    clock = clock or SystemClock()
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    sinks, readers = build_sinks(settings, clock)
    return Container(
        settings,
        engine,
        SqlUnitOfWorkFactory(engine),
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


def build_app(container: Container) -> FastAPI:
    service = container.usage()
    # SQLite has one writer: a writer thread commits concurrent changes in groups.
    sqlite = container.engine.dialect.name == "sqlite"
    batch = BatchWriter(container.usage_uows, service) if sqlite else None
    context = ApiContext(
        uows=container.uows,
        clock=container.clock,
        auth=container.authenticator(),
        usage=UsageWrites(service, batch),
        machines=container.machines(),
        render=Renderer(container.settings.account),
        account=container.settings.account,
        ready=container.ready,
    )
    signing = Signing(
        account=container.settings.account,
        key=container.account_key().private,
        now=container.clock.now,
        public_host=container.settings.public_host,
    )
    return create_app(context, signing)
