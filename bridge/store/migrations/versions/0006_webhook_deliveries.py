"""webhook_deliveries: the inbox of verified webhook deliveries, unique per (provider, id);
webhook_subjects: the index from a platform's subscription to its licenses; webhook_effects:
what each delivery did to a license

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from bridge.store.types import UtcDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DUE = "status IN ('received', 'inflight')"


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("delivery_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("effects", sa.JSON(), nullable=False),
        sa.Column("received_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("handled_at", UtcDateTime(timezone=True), nullable=True),
        sa.UniqueConstraint(
            "provider", "delivery_id", name="uq_webhook_deliveries_provider_delivery"
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at", "id"],
        sqlite_where=sa.text(_DUE),
        postgresql_where=sa.text(_DUE),
    )
    op.create_index("ix_webhook_deliveries_received", "webhook_deliveries", ["received_at"])
    op.create_table(
        "webhook_subjects",
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("license_id", sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint("provider", "subject", "license_id"),
    )
    op.create_index("ix_webhook_subjects_license", "webhook_subjects", ["license_id"])
    op.create_table(
        "webhook_effects",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("license_id", sa.String(length=36), nullable=False),
        sa.Column("delivery", sa.BigInteger(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("delivery_id", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("at", UtcDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_webhook_effects_license", "webhook_effects", ["license_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_effects_license", table_name="webhook_effects")
    op.drop_table("webhook_effects")
    op.drop_index("ix_webhook_subjects_license", table_name="webhook_subjects")
    op.drop_table("webhook_subjects")
    op.drop_index("ix_webhook_deliveries_received", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
