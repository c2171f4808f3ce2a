"""Alembic environment for the staging store (SQLite and PostgreSQL).

Two ways in:
- programmatic (``sync.store.migrate.upgrade``): the caller passes an open connection in
  ``config.attributes["connection"]``; this works from an installed (non-editable) package
  because the script location is the installed ``migrations`` package itself;
- ``alembic`` CLI from the repository root (``alembic.ini``): the URL comes from the
  ``CONTACTSYNC_DATABASE_URL`` environment variable, else ``sqlalchemy.url`` in the ini file.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from sync.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode recreates tables.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``)."""
    url = os.environ.get("CONTACTSYNC_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=bool(url and url.startswith("sqlite")),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from sync.store.connect import normalize_url  # late: keeps env.py importable without the app

    url = os.environ.get("CONTACTSYNC_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    engine = create_engine(normalize_url(url or ""))
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
