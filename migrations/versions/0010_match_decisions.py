"""Match decisions: what a person decided about an ambiguous match (link the records that share
the key, or keep them apart), kept so matching follows it on every later run.

Revision ID: 0010
Revises: 0004
Create Date: 2026-12-06

A new table only (no change to an existing one), so the same statements serve SQLite and
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0010"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "match_decisions",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=320), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=128), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("review_id", BIG_ID, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_match_decisions")),
        sa.UniqueConstraint("kind", "value", name=op.f("uq_match_decisions_kind")),
    )


def downgrade() -> None:
    op.drop_table("match_decisions")
