"""OAuth tokens (encrypted at rest) and per-connection states (needs_reauth, daily-quota pause).

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-06

* ``oauth_tokens``: one row per connection in GoHighLevel OAuth mode; the tokens are Fernet
  ciphertext; ``version`` moves with every rotation; ``lease_owner``/``lease_until`` make one
  process at a time spend the refresh token.
* ``connection_states``: ``auth_state`` (ok | needs_reauth) with its reason, and a daily-quota
  pause (``quota_paused_until``) with the last daily figures seen.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oauth_tokens",
        sa.Column("connection", sa.String(length=64), nullable=False),
        sa.Column("access_token", sa.Text(), nullable=False),
        sa.Column("refresh_token", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_type", sa.String(length=16), nullable=False),
        sa.Column("company_id", sa.String(length=128), nullable=True),
        sa.Column("location_id", sa.String(length=128), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("connection", name=op.f("pk_oauth_tokens")),
    )
    op.create_table(
        "connection_states",
        sa.Column("connection", sa.String(length=64), nullable=False),
        sa.Column("auth_state", sa.String(length=16), nullable=False),
        sa.Column("auth_reason", sa.Text(), nullable=True),
        sa.Column("quota_paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("quota_reason", sa.Text(), nullable=True),
        sa.Column("daily_limit", sa.Integer(), nullable=True),
        sa.Column("daily_remaining", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("connection", name=op.f("pk_connection_states")),
    )


def downgrade() -> None:
    op.drop_table("connection_states")
    op.drop_table("oauth_tokens")
