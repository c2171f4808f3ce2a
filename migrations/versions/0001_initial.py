"""Initial schema of the staging store: every table of sync/store/models.py.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Types are spelled out here rather than imported from the models so this revision keeps
building the same schema when the models move on. Datetimes are stored as UTC (aware on
PostgreSQL, naive on SQLite; see models.UTCDateTime).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# JSON on SQLite, JSONB on PostgreSQL; 64-bit ids on PostgreSQL, INTEGER (rowid alias) on SQLite.
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conflicts",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("field", sa.String(length=128), nullable=False),
        sa.Column("candidates", JSON_TYPE, nullable=False),
        sa.Column("decision", JSON_TYPE, nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conflicts")),
    )
    with op.batch_alter_table("conflicts", schema=None) as batch_op:
        batch_op.create_index("ix_conflicts_person_id", ["person_id"], unique=False)

    op.create_table(
        "cursors",
        sa.Column("connection", sa.String(length=64), nullable=False),
        sa.Column("position", JSON_TYPE, nullable=True),
        sa.Column("checkpoint", JSON_TYPE, nullable=True),
        sa.Column("full_scan_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("connection", name=op.f("pk_cursors")),
    )
    op.create_table(
        "match_reviews",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("records", JSON_TYPE, nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_match_reviews")),
        sa.UniqueConstraint("kind", "key", name=op.f("uq_match_reviews_kind")),
    )
    op.create_table(
        "outbox",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("connection", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=True),
        sa.Column("op", sa.String(length=32), nullable=False),
        sa.Column("remote_id", sa.String(length=128), nullable=True),
        sa.Column("payload", JSON_TYPE, nullable=False),
        sa.Column("fields", JSON_TYPE, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("result_remote_id", sa.String(length=128), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_person_id", ["person_id"], unique=False)
        batch_op.create_index("ix_outbox_status_connection", ["status", "connection"], unique=False)

    op.create_table(
        "persons",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("fields", JSON_TYPE, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("merged_into", sa.BigInteger(), nullable=True),
        sa.Column("dirty", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_persons")),
    )
    op.create_table(
        "quarantine",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("connection", sa.String(length=64), nullable=False),
        sa.Column("remote_id", sa.String(length=128), nullable=True),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
    )
    op.create_table(
        "runs",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("counts", JSON_TYPE, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_table(
        "remote_records",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("connection", sa.String(length=64), nullable=False),
        sa.Column("remote_id", sa.String(length=128), nullable=False),
        sa.Column("payload", JSON_TYPE, nullable=False),
        sa.Column("payload_hash", sa.String(length=64), nullable=False),
        sa.Column("remote_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("merged_into", sa.String(length=128), nullable=True),
        sa.Column("person_id", BIG_ID, nullable=True),
        sa.Column("dirty", sa.Boolean(), nullable=False),
        sa.Column("invalid", JSON_TYPE, nullable=True),
        sa.Column("last_scan", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["person_id"], ["persons.id"], name=op.f("fk_remote_records_person_id_persons"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remote_records")),
        sa.UniqueConstraint("connection", "remote_id", name=op.f("uq_remote_records_connection")),
    )
    with op.batch_alter_table("remote_records", schema=None) as batch_op:
        batch_op.create_index("ix_remote_records_dirty", ["dirty"], unique=False)
        batch_op.create_index("ix_remote_records_person_id", ["person_id"], unique=False)

    op.create_table(
        "snapshots",
        sa.Column("person_id", BIG_ID, nullable=False),
        sa.Column("connection", sa.String(length=64), nullable=False),
        sa.Column("fields", JSON_TYPE, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["person_id"], ["persons.id"], name=op.f("fk_snapshots_person_id_persons"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("person_id", "connection", name=op.f("pk_snapshots")),
    )
    op.create_table(
        "identity_keys",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("record_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=320), nullable=False),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["remote_records.id"],
            name=op.f("fk_identity_keys_record_id_remote_records"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_keys")),
    )
    with op.batch_alter_table("identity_keys", schema=None) as batch_op:
        batch_op.create_index("ix_identity_keys_kind_value", ["kind", "value"], unique=False)
        batch_op.create_index("ix_identity_keys_record_id", ["record_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("identity_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_identity_keys_record_id")
        batch_op.drop_index("ix_identity_keys_kind_value")

    op.drop_table("identity_keys")
    op.drop_table("snapshots")
    with op.batch_alter_table("remote_records", schema=None) as batch_op:
        batch_op.drop_index("ix_remote_records_person_id")
        batch_op.drop_index("ix_remote_records_dirty")

    op.drop_table("remote_records")
    op.drop_table("runs")
    op.drop_table("quarantine")
    op.drop_table("persons")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_status_connection")
        batch_op.drop_index("ix_outbox_person_id")

    op.drop_table("outbox")
    op.drop_table("match_reviews")
    op.drop_table("cursors")
    with op.batch_alter_table("conflicts", schema=None) as batch_op:
        batch_op.drop_index("ix_conflicts_person_id")

    op.drop_table("conflicts")
