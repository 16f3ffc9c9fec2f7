"""Ports: what the domain and the use cases need from the outside, as Protocols.

The store implements the repositories and the unit of work; connectors implement ``Sink``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self

from bridge.domain.checkin import StoredRecord
from bridge.domain.delivery import (
    DeadLetter,
    ItemFailure,
    LicenseFacts,
    OutboxItem,
    OutboxStatus,
    Reason,
    SinkHealth,
    SinkStatus,
)
from bridge.domain.errors import Transient
from bridge.domain.keygen import KeygenRepository
from bridge.domain.machines import MachineTally
from bridge.domain.model import License, Machine, Policy, Product, UsageEntry
from bridge.domain.periods import ClosedPeriod, PeriodState, Rollover
from bridge.domain.reconcile import (
    ClosedPeriodRef,
    Finding,
    PlatformView,
    Reconciliation,
    Window,
)
from bridge.domain.webhooks import DeliveryStatus, NewDelivery, WebhookDelivery, WebhookEffect


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class Signer(Protocol):
    """The account's Ed25519 private key (``bridge.keys.AccountKey``): license and machine files
    and signed license keys are signed with it."""

    def sign(self, data: bytes) -> bytes: ...


class Sink(Protocol):
    """A billing platform (or file) that receives accepted usage changes.

    Contract for implementers:
    - ``deliver`` is idempotent per item: the same ``item.entry.id`` delivered twice is counted
      once by the platform (it is the platform's dedupe key).
    - It returns once every item is durably accepted except those it names in the returned
      failures (e.g. one event of a batch the platform rejected, or a license whose mapping is
      missing); the relay records the rest as delivered. Each failure is the error of the
      request that item was in (or its own, before sending): an outcome belongs to the items it
      is about, and ``bridge.domain.delivery.decide`` turns it into retry or dead, by reason.
    - An error about every item may be raised for the whole batch instead: only
      ``TransientDeliveryError`` (retry later) or ``PermanentDeliveryError`` (dead-letter) from
      ``bridge.domain.delivery``; anything else is a bug and is treated as transient.
    - It runs in the outbox relay, never in the request path, so it may block on I/O.
    - ``accepts`` is the sink's one answer to "is this change sent here at all?" (its policy and
      decrement filters), asked by the relay before ``deliver`` and by reconciliation alike; an
      item it does not accept counts as delivered. It is pure and never raises.
    """

    name: str

    def accepts(self, entry: UsageEntry, license: LicenseFacts | None) -> bool: ...

    def deliver(self, items: Sequence[OutboxItem]) -> Sequence[ItemFailure]: ...


class PlatformReader(Protocol):
    """What a billing platform holds, for reconciliation (the Lago and m3ter connectors)."""

    @property
    def dedupe_window(self) -> timedelta | None:
        """How long the platform deduplicates a resent id (``None``: never resend)."""
        ...

    def read(self, license: LicenseFacts, start: datetime, end: datetime) -> PlatformView:
        """The usage the platform holds for ``license`` timestamped in ``[start, end)``.
        Raises ``PlatformUnavailable`` when it cannot be read now."""
        ...


class PlatformUnavailable(Exception, Transient):
    """A platform's usage could not be read (a transport error, an error answer, no mapping)."""


class ReconciliationRepository(Protocol):
    def count_periods(self, window: Window) -> int: ...
    def periods(self, window: Window, after_id: int, limit: int) -> list[ClosedPeriodRef]: ...
    def changes(
        self, period_ids: Sequence[int], sink: str
    ) -> dict[int, list[tuple[UsageEntry, bool]]]: ...
    def save(
        self, period: ClosedPeriodRef, sink: str, finding: Finding, repaired: int, now: datetime
    ) -> None: ...
    def requeue(self, entry_ids: Sequence[str], sink: str, now: datetime) -> int: ...
    def results(
        self,
        window: Window | None,
        sink: str | None,
        status: str | None,
        *,
        offset: int,
        limit: int,
    ) -> tuple[list[Reconciliation], int]: ...


class ProductRepository(Protocol):
    def add(self, product: Product) -> None: ...
    def get(self, product_id: str) -> Product | None: ...
    def list(self, *, offset: int, limit: int, only: str | None) -> tuple[list[Product], int]: ...
    def update(self, product: Product) -> None: ...
    def delete(self, product_id: str) -> None: ...
    def has_policies(self, product_id: str) -> bool: ...


class PolicyRepository(Protocol):
    def add(self, policy: Policy) -> None: ...
    def get(self, policy_id: str) -> Policy | None: ...
    def list(
        self, *, offset: int, limit: int, product_id: str | None
    ) -> tuple[list[Policy], int]: ...
    def update(self, policy: Policy) -> None: ...
    def delete(self, policy_id: str) -> None: ...


class LicenseLookup(Protocol):
    def find(self, id_or_key: str) -> License | None:
        """By id or by key; an id match wins."""
        ...


class UsageCounters(LicenseLookup, Protocol):
    """What a usage change needs of the licenses table."""

    def try_add_uses(self, license_id: str, delta: int, now: datetime) -> int | None:
        """Atomically add ``delta`` if Keygen's limit rule allows it; the new count, else None."""
        ...

    def lock_uses(self, license_id: str) -> int | None:
        """Lock the license row for this unit of work and return its current count."""
        ...

    def set_uses(self, license_id: str, uses: int, now: datetime) -> bool:
        """Set the counter if ``now`` is inside the license's usage period; False if not."""
        ...

    def set_expiry_if_unset(self, license_id: str, expiry: datetime) -> None: ...


class LicenseLocks(LicenseLookup, Protocol):
    """What a change of a license's machines needs of the licenses table."""

    def lock(self, license_id: str) -> bool:
        """Hold the license row until the unit of work ends, serializing its machine changes
        (PostgreSQL: ``SELECT ... FOR UPDATE``; a SQLite write transaction already holds the
        whole database). False if the license is gone."""
        ...


class LicenseRepository(LicenseLocks, Protocol):
    def add(self, license: License) -> None: ...
    def touch_validated(self, license_id: str, now: datetime) -> None:
        """Set lastValidated; a no-op while another transaction holds the row (PostgreSQL)."""
        ...

    def touch_checked_out(self, license_id: str, now: datetime) -> None:
        """Set lastCheckOut (a license file was issued)."""
        ...

    def get(self, license_id: str) -> License | None: ...
    def key_exists(self, key: str) -> bool: ...
    def list(
        self, *, offset: int, limit: int, product_id: str | None, policy_id: str | None
    ) -> tuple[list[License], int]: ...
    def update(self, license: License) -> None:
        """Write the license's own columns; never its count or its open period (the usage
        actions and rollovers write those)."""
        ...

    def delete(self, license_id: str) -> None: ...
    def any_of_policy(self, policy_id: str) -> bool: ...


class MachineRepository(Protocol):
    def add(self, machine: Machine) -> None: ...
    def get(self, machine_id: str) -> Machine | None: ...
    def fingerprint_taken(self, license_id: str, fingerprint: str) -> bool: ...
    def with_fingerprint(
        self, fingerprint: str, *, license_id: str | None, product_id: str | None
    ) -> Machine | None:
        """The oldest machine with this fingerprint, within one license or product if given."""
        ...

    def of_license(self, license_id: str) -> list[Machine]: ...
    def tally(self, license_id: str) -> MachineTally: ...
    def update(self, machine: Machine) -> None: ...
    def delete(self, machine_id: str) -> None: ...
    def touch_checked_out(self, machine_id: str, now: datetime) -> None: ...
    def dead(self, now: datetime, limit: int) -> list[Machine]:
        """Machines whose next heartbeat was due before ``now`` (a ping, or a required first one)
        on policies that deactivate the dead (DEACTIVATE_DEAD), oldest due first."""
        ...

    def list(
        self,
        *,
        offset: int,
        limit: int,
        license_id: str | None,
        product_id: str | None,
        fingerprint: str | None = None,
    ) -> tuple[list[Machine], int]: ...


class TokenRepository(Protocol):
    def add(self, token_id: str, digest: str, role: str, bearer_id: str, now: datetime) -> None: ...
    def find(self, digest: str) -> tuple[str, str] | None:
        """(role, bearer id) of the token with this digest."""
        ...

    def any_admin(self) -> bool: ...
    def delete_for(self, bearer_id: str) -> None:
        """Remove the bearer's tokens; counts as a revocation (``generation`` moves)."""
        ...

    def generation(self) -> int:
        """How many revocations the database has seen: cached principals older than a change
        of this counter may be stale."""
        ...


class PeriodWriter(Protocol):
    def write(
        self,
        rollovers: Sequence[tuple[PeriodState, Rollover]],
        now: datetime,
        closed_by: str,
        *,
        skip_stale: bool = False,
    ) -> int:
        """Write the rollovers (close and open usage periods as planned); how many periods were
        closed. A stale license (its count or period changed since it was read) raises
        ``StoreConflict``, or is left out (``skip_stale``)."""
        ...

    def due(
        self, now: datetime, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[PeriodState]:
        """Licenses whose usage period is due (ended by ``now``), by (period end, id), after
        ``after`` (keyset paging)."""
        ...

    def unopened(self, policy_id: str) -> list[PeriodState]:
        """The policy's licenses that have no usage period open."""
        ...

    def align(self, license_id: str, old_end: datetime, start: datetime, end: datetime) -> bool:
        """Set the open period's bounds to ``[start, end)``, closing nothing; guarded by its
        old end: False if the license is stale."""
        ...


class LedgerWriter(Protocol):
    def add(self, entry: UsageEntry) -> None: ...


class LedgerRepository(LedgerWriter, Protocol):
    def history(
        self, license_id: str, *, offset: int, limit: int
    ) -> tuple[list[UsageEntry], int]: ...
    def total(self, license_id: str) -> int: ...


class OutboxWriter(Protocol):
    def add(self, entry: UsageEntry, sinks: Sequence[str]) -> None: ...


class OutboxRepository(OutboxWriter, Protocol):
    def pending_count(self) -> int: ...
    def claim(
        self, sink: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[OutboxItem]:
        """Lease up to ``limit`` due items of ``sink`` until ``lease_until``."""
        ...

    def mark(
        self,
        ids: Sequence[int],
        status: OutboxStatus,
        *,
        next_attempt_at: datetime | None = None,
        error: str | None = None,
        reason: Reason | None = None,
    ) -> None: ...
    def release(self, ids: Sequence[int], now: datetime) -> None:
        """Items of these ids still in flight back to pending, due ``now``."""
        ...

    def status(self, *, undelivered: bool = False) -> list[SinkStatus]: ...
    def save_health(self, health: SinkHealth) -> None: ...
    def health(self) -> list[SinkHealth]: ...
    def id_bounds(self) -> tuple[int, int] | None: ...
    def purge_delivered(self, low: int, high: int, before: dict[str, datetime]) -> int:
        """Delete delivered items with ids in [low, high) created before their sink's time."""
        ...

    def range_oldest(self, low: int, high: int) -> datetime | None: ...
    def purged_before(self) -> dict[str, datetime]: ...
    def mark_purged(self, before: dict[str, datetime]) -> None:
        """Raise (never lower) each sink's purge watermark."""
        ...

    def dead_letters(self, sink: str | None, *, offset: int, limit: int) -> list[DeadLetter]: ...
    def reject_after_acceptance(
        self, entry_ids: Sequence[str], sink: str, error: str
    ) -> dict[str, int]:
        """Dead-letter these entries' items of ``sink`` as rejected after acceptance; how many
        items each license had among them."""
        ...

    def requeue_dead(self, sink: str | None, ids: Sequence[int] | None, now: datetime) -> int:
        """Dead letters back to pending (all, a sink's, or these ids); how many."""
        ...


class IdempotencyRepository(Protocol):
    def get(self, scope: str, key: str) -> tuple[str, dict[str, Any]] | None:
        """(request fingerprint, stored result) of an earlier request with this key."""
        ...

    def claim(self, scope: str, key: str, fingerprint: str, now: datetime) -> None:
        """Take the key for this transaction. A concurrent claim of the same key waits for this
        transaction and then fails with ``StoreConflict`` (PostgreSQL's unique index)."""
        ...

    def record(self, scope: str, key: str, result: dict[str, Any]) -> None:
        """Store the answer under a key claimed in this transaction."""
        ...


class IdempotencyRetention(Protocol):
    def purge(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` stored answers older than ``before``; how many."""
        ...


class WebhookInbox(Protocol):
    """Verified webhook deliveries, unique per (provider, delivery id)."""

    def record(self, delivery: NewDelivery, now: datetime) -> WebhookDelivery:
        """Store ``delivery`` unless one with its key is stored; either way return the stored
        one (a redelivery is answered from the store)."""
        ...

    def get(self, id: int) -> WebhookDelivery | None: ...

    def search(
        self, provider: str | None, status: DeliveryStatus | None, *, offset: int, limit: int
    ) -> list[WebhookDelivery]:
        """Newest first."""
        ...

    def claim(self, now: datetime, lease_until: datetime, limit: int) -> list[WebhookDelivery]:
        """Take up to ``limit`` due deliveries (received, or in flight with an expired lease),
        leased until ``lease_until``; concurrent workers on PostgreSQL skip each other's."""
        ...

    def finish(
        self,
        id: int,
        status: DeliveryStatus,
        *,
        now: datetime,
        next_attempt_at: datetime | None = None,
        error: str | None = None,
        effects: Sequence[str] = (),
        attempt: int | None = None,
    ) -> bool:
        """Record the outcome; with ``attempt``, only if the delivery is still in flight under
        that claim (False: another worker took it over after the lease)."""
        ...

    def requeue(self, id: int, now: datetime) -> bool:
        """Make a delivery due again now (``webhooks replay``); False if there is none."""
        ...

    def purge_handled(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` applied or ignored deliveries received before ``before``."""
        ...

    def counts(self) -> dict[tuple[str, str], int]:
        """How many deliveries each (provider, status) has."""
        ...


class WebhookLicenses(Protocol):
    """What webhook handling reads and writes about licenses."""

    def licenses_for(self, provider: str, subject: str) -> list[str]:
        """The ids of the licenses whose mapping for ``provider`` resolves to ``subject``
        (through the subject index, not a scan)."""
        ...

    def reindex(self, licenses: Sequence[License]) -> None: ...

    def record_effect(self, effect: WebhookEffect) -> None: ...

    def effects(self, license_id: str) -> list[WebhookEffect]: ...


class Transaction(Protocol):
    """A ``with`` block around one transaction: leaving it without ``commit()`` rolls back."""

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    def commit(self) -> None: ...


class UnitOfWork(Transaction, Protocol):
    """One transaction over every repository."""

    @property
    def products(self) -> ProductRepository: ...
    @property
    def policies(self) -> PolicyRepository: ...
    @property
    def licenses(self) -> LicenseRepository: ...
    @property
    def machines(self) -> MachineRepository: ...
    @property
    def tokens(self) -> TokenRepository: ...
    @property
    def ledger(self) -> LedgerRepository: ...
    @property
    def outbox(self) -> OutboxRepository: ...
    @property
    def periods(self) -> PeriodWriter: ...
    @property
    def reconciliation(self) -> ReconciliationRepository: ...
    @property
    def idempotency(self) -> IdempotencyRetention: ...
    @property
    def webhooks(self) -> WebhookInbox: ...
    @property
    def webhook_licenses(self) -> WebhookLicenses: ...
    @property
    def keygen(self) -> KeygenRepository: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, *, write: bool = ...) -> UnitOfWork:
        """A new unit of work; ``write=True`` takes the write lock up front on SQLite."""
        ...


class UsageUnitOfWork(Transaction, Protocol):
    """The one transaction of a usage change: a narrower view of the same unit of work, naming
    only what a change touches."""

    @property
    def licenses(self) -> UsageCounters: ...
    @property
    def ledger(self) -> LedgerWriter: ...
    @property
    def outbox(self) -> OutboxWriter: ...
    @property
    def idempotency(self) -> IdempotencyRepository: ...
    @property
    def periods(self) -> PeriodWriter: ...

    def savepoint(self) -> AbstractContextManager[None]:
        """A nested scope whose writes are undone if the block raises."""
        ...

    def writes_together(self) -> AbstractContextManager[None]:
        """A scope of writes whose results nothing in it reads: the store may send them
        together (one round trip); an error of any of them is raised when the scope ends."""
        ...


class UsageUnitOfWorkFactory(Protocol):
    def __call__(self) -> UsageUnitOfWork: ...


class ActivationUnitOfWork(Transaction, Protocol):
    """The one transaction of a machine activation: a narrower view of the unit of work, naming
    only what an activation touches."""

    @property
    def licenses(self) -> LicenseLocks: ...
    @property
    def machines(self) -> MachineRepository: ...
    @property
    def policies(self) -> PolicyRepository: ...
    @property
    def ledger(self) -> LedgerWriter: ...
    @property
    def outbox(self) -> OutboxWriter: ...


class WriterLicenses(UsageCounters, LicenseLocks, Protocol):
    """The licenses table as a ``BatchWriter`` transaction sees it."""


class WriterUnitOfWork(UsageUnitOfWork, ActivationUnitOfWork, Protocol):
    """A ``BatchWriter`` transaction: usage changes and machine activations, each in its own
    savepoint."""

    @property
    def licenses(self) -> WriterLicenses: ...


class WriterUnitOfWorkFactory(Protocol):
    def __call__(self) -> WriterUnitOfWork: ...


class CheckInLicenses(UsageCounters, Protocol):
    """What a check-in needs of the licenses table."""

    def lock(self, license_id: str) -> bool: ...
    def check_in(self, license_id: str, now: datetime) -> None:
        """Set the license's lastCheckIn."""
        ...


class CheckInOutbox(OutboxWriter, Protocol):
    def add_dead(
        self, entry: UsageEntry, sinks: Sequence[str], reason: Reason, error: str
    ) -> None: ...


class CheckInPeriods(PeriodWriter, Protocol):
    def closed_at(self, license_id: str, at: datetime) -> ClosedPeriod | None:
        """The license's closed usage period that holds ``at`` (``uses_at_open`` unread)."""
        ...

    def add_late(self, license_id: str, start: datetime, n: int) -> None:
        """Count a late record of ``n`` uses in the closed period starting at ``start``."""
        ...


class UsageRecords(Protocol):
    """The accepted offline usage records, by their client id (``bridge.domain.checkin``)."""

    def get(self, record_id: str) -> StoredRecord | None: ...
    def add(self, record: StoredRecord, received_at: datetime) -> None:
        """Raises ``StoreConflict`` when a concurrent transaction took the id (PostgreSQL)."""
        ...


class CheckInUnitOfWork(Transaction, Protocol):
    """The one transaction of a check-in and its offline usage records."""

    @property
    def licenses(self) -> CheckInLicenses: ...
    @property
    def ledger(self) -> LedgerWriter: ...
    @property
    def outbox(self) -> CheckInOutbox: ...
    @property
    def periods(self) -> CheckInPeriods: ...
    @property
    def records(self) -> UsageRecords: ...

    def savepoint(self) -> AbstractContextManager[None]: ...
    def writes_together(self) -> AbstractContextManager[None]: ...


class CheckInUnitOfWorkFactory(Protocol):
    def __call__(self, *, write: bool = ...) -> CheckInUnitOfWork: ...


class StoreConflict(Exception, Transient):
    """A unique key was taken by a concurrent transaction; the use case may retry once."""
