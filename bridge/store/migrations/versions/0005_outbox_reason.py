"""outbox: the reason an item waits or is dead, as a column (was parsed out of last_error);
reconciliations: how many lost changes a repair would resend

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
        )
    # Items waiting for a mapping were told apart by their error's prefix until now.
    op.execute(
        "UPDATE outbox SET reason = 'mapping_missing' "
        "WHERE status = 'pending' AND last_error LIKE 'MAPPING_MISSING%'"
    )
    op.execute(
        "UPDATE outbox SET reason = 'horizon_passed' "
        "WHERE status = 'dead' AND last_error LIKE 'retry horizon passed%'"
    )
    op.execute("UPDATE outbox SET reason = 'rejected' WHERE status = 'dead' AND reason IS NULL")
    with op.batch_alter_table("reconciliations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("resendable", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("reconciliations", schema=None) as batch_op:
        batch_op.drop_column("resendable")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("reason")
