"""What an outbox row was planned against: the person's version and the remote base values.

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-24

* ``outbox.person_version``: the person's version once the plan that queued the row was
  saved. A row is sent only while the person still has that version (a manual resolution or
  a newer plan moved it on: the row is stale and re-planned).
* ``outbox.base``: the canonical values the target record held, for the fields the row
  writes, when it was planned. A row from an earlier run is sent only while the record (as
  last pulled) still holds them.

Both nullable: rows queued before this migration carry neither and are checked as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("person_version", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "base", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("base")
        batch_op.drop_column("person_version")
