"""keygen_licenses: the licenses mirrored from a Keygen account; keygen_snapshots: every usage
snapshot seen of them; keygen_resets: the Keygen reset of each of their closed periods

Revision ID: 0011
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from bridge.store.types import UtcDateTime

revision: str = "0011"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "keygen_licenses",
        sa.Column("license_id", sa.String(length=36), primary_key=True),
        sa.Column("baseline", sa.BigInteger(), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=True),
        sa.Column("keygen_uses", sa.BigInteger(), nullable=False),
        sa.Column("keygen_updated", UtcDateTime(timezone=True), nullable=False),
        sa.Column("forwarded", sa.BigInteger(), nullable=False),
        sa.Column("corrections", sa.Integer(), nullable=False),
        sa.Column("corrected", sa.BigInteger(), nullable=False),
        sa.Column("mirrored_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_delivery_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_check_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("next_check_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", UtcDateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_keygen_licenses_check", "keygen_licenses", ["next_check_at", "license_id"])
    op.create_table(
        "keygen_snapshots",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("license_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("uses", sa.BigInteger(), nullable=False),
        sa.Column("reset", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", UtcDateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_keygen_snapshots_order", "keygen_snapshots", ["license_id", "reset", "version", "id"]
    )
    op.create_table(
        "keygen_resets",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("license_id", sa.String(length=36), nullable=False),
        sa.Column("period_start", UtcDateTime(timezone=True), nullable=False),
        sa.Column("period_end", UtcDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("uses_before", sa.BigInteger(), nullable=True),
        sa.Column("reset_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("created", UtcDateTime(timezone=True), nullable=False),
        sa.Column("done_at", UtcDateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("license_id", "period_start", name="uq_keygen_resets_license_start"),
    )
    op.create_index("ix_keygen_resets_due", "keygen_resets", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("keygen_resets")
    op.drop_table("keygen_snapshots")
    op.drop_table("keygen_licenses")
