"""Held deletes: deletes a full scan implied that the mass-delete circuit breaker holds for a
human (``contactsync deletes approve|reject``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

A new table only (no change to an existing one), so the same statements serve SQLite and
PostgreSQL; the downgrade drops it in batch mode like the other revisions.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "held_deletes",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("connection", sa.String(length=64), nullable=False),
        sa.Column("remote_id", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_held_deletes")),
        sa.UniqueConstraint("connection", "remote_id", name=op.f("uq_held_deletes_connection")),
    )


def downgrade() -> None:
    op.drop_table("held_deletes")
