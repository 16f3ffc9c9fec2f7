"""machines: activations per license, machine limit overrides, heartbeats, machine ledger entries

Revision ID: 0003_machines
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import bridge.store.types

revision: str = "0003_machines"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "machines",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("license_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("fingerprint", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("cores", sa.Integer(), nullable=True),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("platform", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("hostname", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("last_heartbeat", bridge.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("next_heartbeat", bridge.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created", bridge.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated", bridge.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["license_id"], ["licenses.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("license_id", "fingerprint", name="uq_machines_license_fingerprint"),
    )
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_machines_next_heartbeat"), ["next_heartbeat"], unique=False
        )
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_duration", sa.Integer(), nullable=True))
    with op.batch_alter_table("licenses", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_machines_override", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_cores_override", sa.Integer(), nullable=True))
    with op.batch_alter_table("usage_ledger", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("machine_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_ledger", schema=None) as batch_op:
        batch_op.drop_column("machine_id")
    with op.batch_alter_table("licenses", schema=None) as batch_op:
        batch_op.drop_column("max_cores_override")
        batch_op.drop_column("max_machines_override")
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_duration")
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_machines_next_heartbeat"))
    op.drop_table("machines")
