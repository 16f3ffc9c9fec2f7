"""outbox retention and sink health: sink_health, each sink's circuit, pause and last error
as its relay last saw them (for `meterbridge status`); outbox_purges, each sink's purge
watermark (delivered items created before it may have been deleted); ix_outbox_dead, the dead
letters per sink (a partial index: counting them never reads the delivered history)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bridge.store.types import UtcDateTime

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DEAD = "status = 'dead'"


def upgrade() -> None:
    op.create_table(
        "outbox_purges",
        sa.Column("sink", sa.String(length=64), primary_key=True),
        sa.Column("purged_before", UtcDateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "sink_health",
        sa.Column("sink", sa.String(length=64), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("circuit_open_until", UtcDateTime(timezone=True), nullable=True),
        sa.Column("paused_until", UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", UtcDateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_outbox_dead",
        "outbox",
        ["sink"],
        sqlite_where=sa.text(_DEAD),
        postgresql_where=sa.text(_DEAD),
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_dead", table_name="outbox")
    op.drop_table("outbox_purges")
    op.drop_table("sink_health")
