"""SQLModel tables. Field names are the column names the migrations create."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlmodel import Field, SQLModel

from bridge.store.types import UtcDateTime

# 64-bit ids on PostgreSQL; SQLite autoincrements only an INTEGER PRIMARY KEY (64-bit anyway).
_BIGID = BigInteger().with_variant(Integer(), "sqlite")


def _utc(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(sa_column=Column(UtcDateTime(), nullable=nullable, index=index))


def _json() -> Any:
    return Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class ProductRow(SQLModel, table=True):
    __tablename__ = "products"

    id: str = Field(primary_key=True, max_length=36)
    name: str = Field(max_length=255)
    url: str | None = Field(default=None, max_length=2048)
    metadata_: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSON, nullable=False)
    )
    created: datetime = _utc()
    updated: datetime = _utc()


class PolicyRow(SQLModel, table=True):
    __tablename__ = "policies"

    id: str = Field(primary_key=True, max_length=36)
    product_id: str = Field(foreign_key="products.id", index=True, max_length=36)
    name: str = Field(max_length=255)
    max_uses: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    max_machines: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    max_cores: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    floating: bool = False
    strict: bool = False
    overage_strategy: str = Field(max_length=32)
    protected: bool = False
    duration: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    heartbeat_duration: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    expiration_basis: str = Field(max_length=32)
    require_heartbeat: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    heartbeat_cull_strategy: str = Field(
        default="DEACTIVATE_DEAD",
        max_length=32,
        sa_column_kwargs={"server_default": "DEACTIVATE_DEAD"},
    )
    heartbeat_resurrection_strategy: str = Field(
        default="NO_REVIVE", max_length=32, sa_column_kwargs={"server_default": "NO_REVIVE"}
    )
    heartbeat_basis: str = Field(
        default="FROM_FIRST_PING",
        max_length=32,
        sa_column_kwargs={"server_default": "FROM_FIRST_PING"},
    )
    expiration_strategy: str = Field(
        default="RESTRICT_ACCESS",
        max_length=32,
        sa_column_kwargs={"server_default": "RESTRICT_ACCESS"},
    )
    scheme: str | None = Field(default=None, max_length=32)  # ED25519_SIGN: signed keys
    usage_period: str | None = Field(default=None, max_length=255)  # PeriodRule JSON
    metadata_: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSON, nullable=False)
    )
    created: datetime = _utc()
    updated: datetime = _utc()
    # Keygen's check-in: required, and every count x interval (day, week, month, year).
    require_check_in: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    check_in_interval: str | None = Field(default=None, max_length=8)
    check_in_interval_count: int | None = Field(
        default=None, sa_column=Column(Integer, nullable=True)
    )


class LicenseRow(SQLModel, table=True):
    __tablename__ = "licenses"
    # The scheduler reads the licenses whose period ended off the front of this index, in order.
    __table_args__ = (
        Index("ix_licenses_period_due", "period_end", "id"),
        # Keys are found by digest: a signed key (up to ~22 KB) is too long for a B-tree entry.
        UniqueConstraint("key_digest", name="uq_licenses_key_digest"),
    )

    id: str = Field(primary_key=True, max_length=36)
    key: str = Field(sa_column=Column(Text, nullable=False))
    key_digest: str = Field(sa_column=Column(String(64), nullable=False))  # SHA-256, hex
    name: str | None = Field(default=None, max_length=255)
    policy_id: str = Field(foreign_key="policies.id", index=True, max_length=36)
    uses: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    max_uses_override: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    max_machines_override: int | None = Field(
        default=None, sa_column=Column(Integer, nullable=True)
    )
    max_cores_override: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    protected: bool = False
    suspended: bool = False
    expiry: datetime | None = _utc(nullable=True)
    metadata_: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSON, nullable=False)
    )
    created: datetime = _utc()
    updated: datetime = _utc()
    usage_period: str | None = Field(default=None, max_length=255)  # overrides the policy's
    period_anchor: datetime | None = _utc(nullable=True)
    period_start: datetime | None = _utc(nullable=True)
    period_end: datetime | None = _utc(nullable=True)
    period_open_uses: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    last_validated: datetime | None = _utc(nullable=True)  # Keygen's lastValidated
    last_check_in: datetime | None = _utc(nullable=True)  # Keygen's lastCheckIn
    last_check_out: datetime | None = _utc(nullable=True)  # Keygen's lastCheckOut


class MachineRow(SQLModel, table=True):
    """A machine activated on a license; a fingerprint is unique per license (Keygen)."""

    __tablename__ = "machines"
    __table_args__ = (
        UniqueConstraint("license_id", "fingerprint", name="uq_machines_license_fingerprint"),
    )

    id: str = Field(primary_key=True, max_length=36)
    license_id: str = Field(foreign_key="licenses.id", max_length=36)
    fingerprint: str = Field(max_length=255)
    cores: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    name: str | None = Field(default=None, max_length=255)
    platform: str | None = Field(default=None, max_length=255)
    hostname: str | None = Field(default=None, max_length=255)
    metadata_: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSON, nullable=False)
    )
    last_heartbeat: datetime | None = _utc(nullable=True)
    next_heartbeat: datetime | None = _utc(nullable=True, index=True)
    last_check_out: datetime | None = _utc(nullable=True)  # Keygen's lastCheckOut
    created: datetime = _utc()
    updated: datetime = _utc()


class TokenRow(SQLModel, table=True):
    """Admin, product and license tokens; only a SHA-256 digest of the secret is stored."""

    __tablename__ = "tokens"

    id: str = Field(primary_key=True, max_length=36)
    digest: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    role: str = Field(max_length=16)
    bearer_id: str = Field(index=True, max_length=36)
    created: datetime = _utc()


class UsageEntryRow(SQLModel, table=True):
    """The append-only usage ledger. No foreign key: history outlives a deleted license."""

    __tablename__ = "usage_ledger"
    __table_args__ = (
        Index("ix_usage_ledger_license_seq", "license_id", "seq"),
        # Period totals and reconciliation read one license's entries by time.
        Index("ix_usage_ledger_license_time", "license_id", "occurred_at"),
    )

    seq: int | None = Field(default=None, sa_column=Column(_BIGID, primary_key=True))
    id: str = Field(sa_column=Column(String(36), nullable=False, unique=True))
    license_id: str = Field(max_length=36)
    kind: str = Field(max_length=16)
    delta: int = Field(sa_column=Column(BigInteger, nullable=False))
    uses_before: int = Field(sa_column=Column(BigInteger, nullable=False))
    uses_after: int = Field(sa_column=Column(BigInteger, nullable=False))
    actor: str = Field(max_length=64)
    idempotency_key: str | None = Field(default=None, max_length=255)
    request_id: str | None = Field(default=None, max_length=64)
    occurred_at: datetime = _utc()
    machine_id: str | None = Field(default=None, max_length=36)  # machine entries only


class OutboxRow(SQLModel, table=True):
    """One row per (ledger entry, enabled sink), written in the ledger entry's transaction."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("entry_id", "sink", name="uq_outbox_entry_sink"),
        # Only undelivered rows, in the order the relay claims them: a claim reads its batch
        # off the front of this index however many delivered rows the table holds.
        Index(
            "ix_outbox_due",
            "sink",
            "next_attempt_at",
            "id",
            sqlite_where=text("status IN ('pending', 'inflight')"),
            postgresql_where=text("status IN ('pending', 'inflight')"),
        ),
        # Only dead letters: counted per sink without reading the delivered history.
        Index(
            "ix_outbox_dead",
            "sink",
            sqlite_where=text("status = 'dead'"),
            postgresql_where=text("status = 'dead'"),
        ),
    )

    id: int | None = Field(default=None, sa_column=Column(_BIGID, primary_key=True))
    entry_id: str = Field(max_length=36)
    sink: str = Field(max_length=64)
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = _utc()
    last_error: str | None = None
    created: datetime = _utc()
    reason: str | None = Field(default=None, max_length=32)  # bridge.domain.delivery.Reason


class OutboxPurgeRow(SQLModel, table=True):
    """Per sink, the time before which its delivered outbox items may have been purged."""

    __tablename__ = "outbox_purges"

    sink: str = Field(primary_key=True, max_length=64)
    purged_before: datetime = _utc()


class SinkHealthRow(SQLModel, table=True):
    """Each sink's circuit, pause and last error, as its relay last recorded them."""

    __tablename__ = "sink_health"

    sink: str = Field(primary_key=True, max_length=64)
    failures: int = 0
    circuit_open_until: datetime | None = _utc(nullable=True)
    paused_until: datetime | None = _utc(nullable=True)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    last_error_at: datetime | None = _utc(nullable=True)
    updated_at: datetime = _utc()


class IdempotencyRow(SQLModel, table=True):
    """The first answer to a usage action sent with an ``Idempotency-Key``."""

    __tablename__ = "idempotency_keys"
    # The retention job deletes the oldest keys through this index.
    __table_args__ = (Index("ix_idempotency_keys_created", "created"),)

    scope: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=255)
    fingerprint: str = Field(max_length=64)
    result: dict[str, Any] = _json()
    created: datetime = _utc()


class UsagePeriodRow(SQLModel, table=True):
    """A closed usage period of one license. The unique key makes a second close impossible."""

    __tablename__ = "usage_periods"
    __table_args__ = (
        UniqueConstraint("license_id", "period_start", name="uq_usage_periods_license_start"),
        Index("ix_usage_periods_start", "period_start"),
    )

    id: int | None = Field(default=None, sa_column=Column(_BIGID, primary_key=True))
    license_id: str = Field(max_length=36)
    period_start: datetime = _utc()
    period_end: datetime = _utc()
    uses_at_open: int = Field(sa_column=Column(BigInteger, nullable=False))
    uses_at_close: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Ledger totals of the entries timestamped inside the period (the close's reset excluded).
    increments: int = Field(sa_column=Column(BigInteger, nullable=False))
    decrements: int = Field(sa_column=Column(BigInteger, nullable=False))
    resets: int = Field(sa_column=Column(Integer, nullable=False))
    entries: int = Field(sa_column=Column(Integer, nullable=False))
    reset_entry_id: str = Field(max_length=36)
    closed_by: str = Field(max_length=16)  # "usage" (lazy rollover) or "scheduler"
    closed_at: datetime = _utc()
    # Offline records dated inside the period that arrived after it closed (also counted above).
    late_increments: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    late_entries: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default="0")
    )


class UsageRecordRow(SQLModel, table=True):
    """An offline usage record the bridge accepted, by its client id: the key that applies each
    record at most once, whichever request brings it (``bridge.service.checkin``)."""

    __tablename__ = "usage_records"

    id: str = Field(sa_column=Column(String(36), primary_key=True))
    license_id: str = Field(max_length=36)
    increment: int = Field(sa_column=Column(BigInteger, nullable=False))
    occurred_at: datetime = _utc()
    entry_id: str = Field(max_length=36)  # its ledger entry
    period_start: datetime | None = _utc(nullable=True)  # the usage period it was counted in
    late: bool = Field(sa_column=Column(Boolean, nullable=False))  # that period had closed
    received_at: datetime = _utc()


class ReconciliationRow(SQLModel, table=True):
    """The latest comparison of one closed period with one sink."""

    __tablename__ = "reconciliations"
    __table_args__ = (
        UniqueConstraint("period_id", "sink", name="uq_reconciliations_period_sink"),
        Index("ix_reconciliations_start", "period_start"),
    )

    id: int | None = Field(default=None, sa_column=Column(_BIGID, primary_key=True))
    period_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    license_id: str = Field(max_length=36)
    sink: str = Field(max_length=64)
    period_start: datetime = _utc()
    period_end: datetime = _utc()
    ledger_total: int = Field(sa_column=Column(BigInteger, nullable=False))
    ledger_count: int = Field(sa_column=Column(Integer, nullable=False))
    delivered_total: int = Field(sa_column=Column(BigInteger, nullable=False))
    delivered_count: int = Field(sa_column=Column(Integer, nullable=False))
    undelivered_count: int = Field(sa_column=Column(Integer, nullable=False))
    platform_total: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    platform_count: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    missing: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    unknown: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    repaired: int = 0
    unrepairable: int = 0
    resendable: int = 0  # lost changes inside the platform's dedupe window
    status: str = Field(max_length=16)  # "ok" or "mismatch"
    checked_at: datetime = _utc()
    late: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))


class WebhookDeliveryRow(SQLModel, table=True):
    """A verified webhook delivery (the inbox). The unique key makes a redelivery a no-op."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("provider", "delivery_id", name="uq_webhook_deliveries_provider_delivery"),
        # Only deliveries waiting to be handled, in the order the worker claims them.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            "id",
            sqlite_where=text("status IN ('received', 'inflight')"),
            postgresql_where=text("status IN ('received', 'inflight')"),
        ),
        Index("ix_webhook_deliveries_received", "received_at"),
    )

    id: int | None = Field(default=None, sa_column=Column(_BIGID, primary_key=True))
    provider: str = Field(max_length=64)  # lago, stripe, m3ter, standard/<source>
    delivery_id: str = Field(max_length=255)
    event_type: str = Field(max_length=128)
    status: str = Field(default="received", max_length=16)
    subject: str | None = Field(default=None, max_length=255)  # the platform's subscription
    body: str = Field(sa_column=Column(Text, nullable=False))
    attempts: int = 0
    next_attempt_at: datetime = _utc()
    last_error: str | None = None
    effects: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    received_at: datetime = _utc()
    handled_at: datetime | None = _utc(nullable=True)


class WebhookSubjectRow(SQLModel, table=True):
    """Which licenses a platform's subscription (or account) maps to, per webhook provider:
    kept current whenever a license is written, so a webhook finds its licenses by key."""

    __tablename__ = "webhook_subjects"
    __table_args__ = (Index("ix_webhook_subjects_license", "license_id"),)

    provider: str = Field(primary_key=True, max_length=64)
    subject: str = Field(primary_key=True, max_length=255)
    license_id: str = Field(primary_key=True, max_length=36)


class WebhookEffectRow(SQLModel, table=True):
    """What a webhook delivery did to a license: the license's webhook history."""

    __tablename__ = "webhook_effects"
    __table_args__ = (Index("ix_webhook_effects_license", "license_id", "id"),)

    id: int | None = Field(default=None, sa_column=Column(_BIGID, primary_key=True))
    license_id: str = Field(max_length=36)
    delivery: int = Field(sa_column=Column(BigInteger, nullable=False))  # webhook_deliveries.id
    provider: str = Field(max_length=64)
    delivery_id: str = Field(max_length=255)
    action: str = Field(max_length=32)
    detail: str | None = None
    at: datetime = _utc()


class KeygenLicenseRow(SQLModel, table=True):
    """A license mirrored from Keygen (its ``licenses`` row has the same id): what the relay
    knows of it in Keygen, and when it was last heard of and checked."""

    __tablename__ = "keygen_licenses"
    __table_args__ = (Index("ix_keygen_licenses_check", "next_check_at", "license_id"),)

    license_id: str = Field(primary_key=True, max_length=36)
    baseline: int = Field(sa_column=Column(BigInteger, nullable=False))  # uses when first seen
    max_uses: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    keygen_uses: int = Field(sa_column=Column(BigInteger, nullable=False))  # latest known
    keygen_updated: datetime = _utc()  # Keygen's time of that value
    forwarded: int = Field(sa_column=Column(BigInteger, nullable=False))  # total forwarded
    corrections: int = 0  # deltas forwarded by a check (a delivery was lost)
    corrected: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    mirrored_at: datetime = _utc()
    last_delivery_at: datetime | None = _utc(nullable=True)
    last_check_at: datetime | None = _utc(nullable=True)
    next_check_at: datetime = _utc()  # the periodic check's turn
    deleted_at: datetime | None = _utc(nullable=True)  # license.deleted in Keygen


class KeygenSnapshotRow(SQLModel, table=True):
    """Every usage snapshot the relay has seen of a license (bridge.domain.keygen)."""

    __tablename__ = "keygen_snapshots"
    __table_args__ = (Index("ix_keygen_snapshots_order", "license_id", "reset", "version", "id"),)

    id: int | None = Field(default=None, sa_column=Column(_BIGID, primary_key=True))
    license_id: str = Field(max_length=36)
    version: str = Field(max_length=64)  # bridge.domain.keygen.Version.key
    uses: int = Field(sa_column=Column(BigInteger, nullable=False))
    reset: bool = False
    source: str = Field(max_length=16)  # webhook, check, reset (the bridge's own)
    delta: int = Field(sa_column=Column(BigInteger, nullable=False))  # what it changed
    recorded_at: datetime = _utc()


class KeygenResetRow(SQLModel, table=True):
    """The Keygen reset of one closed usage period (the period record's Keygen part)."""

    __tablename__ = "keygen_resets"
    __table_args__ = (
        UniqueConstraint("license_id", "period_start", name="uq_keygen_resets_license_start"),
        Index("ix_keygen_resets_due", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, sa_column=Column(_BIGID, primary_key=True))
    license_id: str = Field(max_length=36)
    period_start: datetime = _utc()
    period_end: datetime = _utc()
    status: str = Field(max_length=16)  # pending, done, superseded, gone
    attempts: int = 0
    next_attempt_at: datetime = _utc()
    uses_before: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    reset_at: datetime | None = _utc(nullable=True)  # Keygen's time of the reset
    last_error: str | None = None
    created: datetime = _utc()
    done_at: datetime | None = _utc(nullable=True)


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


# The Core handles of the tables, for the modules that use SQLAlchemy Core.
products = _table(ProductRow)
policies = _table(PolicyRow)
licenses = _table(LicenseRow)
machines = _table(MachineRow)
ledger = _table(UsageEntryRow)
outbox = _table(OutboxRow)
outbox_purges = _table(OutboxPurgeRow)
sink_health = _table(SinkHealthRow)
periods = _table(UsagePeriodRow)
usage_records = _table(UsageRecordRow)
reconciliations = _table(ReconciliationRow)
webhook_deliveries = _table(WebhookDeliveryRow)
webhook_subjects = _table(WebhookSubjectRow)
webhook_effects = _table(WebhookEffectRow)
idempotency_keys = _table(IdempotencyRow)
keygen_licenses = _table(KeygenLicenseRow)
keygen_snapshots = _table(KeygenSnapshotRow)
keygen_resets = _table(KeygenResetRow)
