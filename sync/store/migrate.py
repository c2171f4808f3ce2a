"""Schema migrations of the staging store, run programmatically (``contactsync db upgrade``).

The Alembic scripts live in the ``migrations`` package, found through its installed location,
so this works from a non-editable install as well as from a checkout.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Engine

import migrations
from sync.store.connect import make_engine

# Any fixed 64-bit number: serializes concurrent `db upgrade`s on one PostgreSQL store.
_PG_MIGRATION_LOCK = 0x636F6E7461637473


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).resolve().parent))
    return cfg


def head_revision() -> str:
    """The revision the code needs (the single head of the migration scripts)."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError("no migration scripts found")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the store at ``engine`` is at; ``None`` for an empty (never migrated) store."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str) -> None:
    """Bring the store at ``url`` up to the head revision, creating it if needed. Idempotent;
    on PostgreSQL an advisory lock makes concurrent upgrades wait for each other."""
    engine = make_engine(url, for_migrations=True)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            cfg = _config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        engine.dispose()
