"""Indexes that bound an incremental run by its change, not by the size of the store.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

* ``ix_remote_records_dirty`` becomes partial (only dirty rows): after a run it is nearly
  empty, so finding the dirty records is a look-up, and clearing a flag deletes an entry
  instead of moving it.
* ``ix_persons_dirty`` (partial): the persons waiting for reconcile, without scanning
  ``persons``.
* ``ix_remote_records_merged_into`` (partial, only merged records): the records merged into
  a given record of a connection, without reading all of that connection's records.

SQLite has no boolean type (a flag is 0/1) and matches a partial index only when the query
repeats its predicate: the predicate is ``dirty = 1`` there, ``dirty`` on PostgreSQL — what
SQLAlchemy renders for ``.where(table.c.dirty)`` on each.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DIRTY = {"sqlite_where": sa.text("dirty = 1"), "postgresql_where": sa.text("dirty")}
_MERGED = {"sqlite_where": sa.text("merged_into IS NOT NULL"), "postgresql_where": sa.text("merged_into IS NOT NULL")}


def upgrade() -> None:
    with op.batch_alter_table("remote_records", schema=None) as batch_op:
        batch_op.drop_index("ix_remote_records_dirty")
        batch_op.create_index("ix_remote_records_dirty", ["dirty"], unique=False, **_DIRTY)
        batch_op.create_index("ix_remote_records_merged_into", ["connection", "merged_into"], unique=False, **_MERGED)
    with op.batch_alter_table("persons", schema=None) as batch_op:
        batch_op.create_index("ix_persons_dirty", ["dirty"], unique=False, **_DIRTY)


def downgrade() -> None:
    with op.batch_alter_table("persons", schema=None) as batch_op:
        batch_op.drop_index("ix_persons_dirty")
    with op.batch_alter_table("remote_records", schema=None) as batch_op:
        batch_op.drop_index("ix_remote_records_merged_into")
        batch_op.drop_index("ix_remote_records_dirty")
        batch_op.create_index("ix_remote_records_dirty", ["dirty"], unique=False)
