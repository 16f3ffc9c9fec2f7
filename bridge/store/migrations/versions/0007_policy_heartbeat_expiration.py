"""policies: Keygen's requireHeartbeat, heartbeatCullStrategy, heartbeatResurrectionStrategy,
heartbeatBasis and expirationStrategy (existing policies take Keygen's defaults)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STRATEGIES = (
    ("heartbeat_cull_strategy", "DEACTIVATE_DEAD"),
    ("heartbeat_resurrection_strategy", "NO_REVIVE"),
    ("heartbeat_basis", "FROM_FIRST_PING"),
    ("expiration_strategy", "RESTRICT_ACCESS"),
)


def upgrade() -> None:
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("require_heartbeat", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        for name, default in _STRATEGIES:
            batch_op.add_column(
                sa.Column(
                    name,
                    sqlmodel.sql.sqltypes.AutoString(length=32),
                    nullable=False,
                    server_default=default,
                )
            )


def downgrade() -> None:
    with op.batch_alter_table("policies", schema=None) as batch_op:
        for name, _ in reversed(_STRATEGIES):
            batch_op.drop_column(name)
        batch_op.drop_column("require_heartbeat")
