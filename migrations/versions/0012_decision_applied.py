"""Match decisions remember whether matching has applied them yet: ``applied_at`` stays NULL
from the moment a person answers an ambiguous match until the first match run that read the
answer has committed. Until then the records holding a linked key keep the dirty mark the
answer gave them: the echo check after a pull must not clear it (a record that reads exactly
as its snapshot is no news to reconciliation, but it is to matching).

Revision ID: 0012_decision
Revises: 0011_rt
Create Date: 2026-12-06

One nullable column added: the same statement serves SQLite and PostgreSQL. Answers stored
before this revision start as not yet applied, so the next match reads their records again
(harmless: matching follows them either way).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_decision"
down_revision: str | None = "0011_rt"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("match_decisions", sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("match_decisions") as batch:
        batch.drop_column("applied_at")
