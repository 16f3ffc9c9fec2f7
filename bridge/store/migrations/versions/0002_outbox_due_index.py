"""outbox: partial index of the undelivered rows, in claim order

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DUE = sa.text("status IN ('pending', 'inflight')")


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_sink_status_due")
        batch_op.create_index(
            "ix_outbox_due",
            ["sink", "next_attempt_at", "id"],
            unique=False,
            sqlite_where=_DUE,
            postgresql_where=_DUE,
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_due", sqlite_where=_DUE, postgresql_where=_DUE)
        batch_op.create_index(
            "ix_outbox_sink_status_due", ["sink", "status", "next_attempt_at"], unique=False
        )
