"""check-ins and offline usage: Keygen's requireCheckIn, checkInInterval and
checkInIntervalCount on policies, lastCheckIn on licenses, the offline usage records (one row per
accepted client record id), and the late-record totals of closed usage periods

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import bridge.store.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("require_check_in", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column(
                "check_in_interval", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True
            )
        )
        batch_op.add_column(sa.Column("check_in_interval_count", sa.Integer(), nullable=True))
    with op.batch_alter_table("licenses", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_check_in", bridge.store.types.UtcDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("usage_periods", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("late_increments", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("late_entries", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("reconciliations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("late", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "usage_records",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("license_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("increment", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", bridge.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("entry_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("period_start", bridge.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("received_at", bridge.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("usage_records")
    with op.batch_alter_table("reconciliations", schema=None) as batch_op:
        batch_op.drop_column("late")
    with op.batch_alter_table("usage_periods", schema=None) as batch_op:
        batch_op.drop_column("late_entries")
        batch_op.drop_column("late_increments")
    with op.batch_alter_table("licenses", schema=None) as batch_op:
        batch_op.drop_column("last_check_in")
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.drop_column("check_in_interval_count")
        batch_op.drop_column("check_in_interval")
        batch_op.drop_column("require_check_in")
