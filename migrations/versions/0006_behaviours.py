"""Measured platform behaviours and fields found not writable.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-06

* ``probe_findings``: what ``contactsync probe`` measured per connection and inferred
  behaviour (variant, evidence, when); the connector is given these as
  ``ConnectionSettings.behaviours``.
* ``unwritable_fields``: canonical fields a write to a connection did not hold (write
  verification); planning never writes them there again, and ``status`` lists them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "probe_findings",
        sa.Column("connection", sa.String(length=64), nullable=False),
        sa.Column("behaviour", sa.String(length=128), nullable=False),
        sa.Column("variant", sa.String(length=64), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("connection", "behaviour", name=op.f("pk_probe_findings")),
    )
    op.create_table(
        "unwritable_fields",
        sa.Column("connection", sa.String(length=64), nullable=False),
        sa.Column("field", sa.String(length=128), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("connection", "field", name=op.f("pk_unwritable_fields")),
    )


def downgrade() -> None:
    op.drop_table("unwritable_fields")
    op.drop_table("probe_findings")
