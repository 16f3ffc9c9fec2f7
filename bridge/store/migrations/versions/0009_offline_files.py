"""Offline validation: policies.scheme (signed keys), keys found by digest, lastCheckOut

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

Signed license keys reach about 22 KB, more than a PostgreSQL B-tree entry holds, so the unique
index moves from ``licenses.key`` to ``licenses.key_digest`` (its SHA-256, filled here).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bridge.store.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 0001 created the key's unique constraint unnamed: PostgreSQL named it licenses_key_key, and
# SQLite's batch mode names it by this convention when it copies the table.
_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _old_key_constraint() -> str:
    return "licenses_key_key" if op.get_bind().dialect.name == "postgresql" else "uq_licenses_key"


def upgrade() -> None:
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scheme", sa.String(length=32), nullable=True))
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "last_check_out", bridge.store.types.UtcDateTime(timezone=True), nullable=True
            )
        )
    with op.batch_alter_table("licenses", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_digest", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column(
                "last_check_out", bridge.store.types.UtcDateTime(timezone=True), nullable=True
            )
        )
    bind = op.get_bind()
    licenses = sa.table("licenses", sa.column("id"), sa.column("key"), sa.column("key_digest"))
    rows = bind.execute(sa.select(licenses.c.id, licenses.c.key)).all()
    for license_id, key in rows:
        digest = hashlib.sha256(key.encode()).hexdigest()
        bind.execute(licenses.update().where(licenses.c.id == license_id).values(key_digest=digest))
    with op.batch_alter_table("licenses", schema=None, naming_convention=_NAMING) as batch_op:
        batch_op.drop_constraint(_old_key_constraint(), type_="unique")
        batch_op.alter_column(
            "key", existing_type=sa.String(length=255), type_=sa.Text(), existing_nullable=False
        )
        batch_op.alter_column("key_digest", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint("uq_licenses_key_digest", ["key_digest"])


def downgrade() -> None:
    with op.batch_alter_table("licenses", schema=None) as batch_op:
        batch_op.drop_constraint("uq_licenses_key_digest", type_="unique")
        batch_op.alter_column(
            "key", existing_type=sa.Text(), type_=sa.String(length=255), existing_nullable=False
        )
        batch_op.create_unique_constraint(_old_key_constraint(), ["key"])
        batch_op.drop_column("last_check_out")
        batch_op.drop_column("key_digest")
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.drop_column("last_check_out")
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.drop_column("scheme")
