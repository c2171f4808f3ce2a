"""Connecting to the staging store: URL parsing and masking, and the SQLAlchemy engine with
the store's per-dialect settings (SQLite pragmas and immediate transactions; PostgreSQL without
server-side prepared statements). Used by :class:`sync.store.Store` and the migrations alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url

SQLITE_BUSY_TIMEOUT_MS = 30_000


def display_url(url: str | URL) -> str:
    """The URL with any password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show nothing that could hold a secret
        return "<unparsable store URL>"


def normalize_url(url: str | URL) -> URL:
    """Parse a store URL; a bare ``postgresql://`` gets the psycopg 3 driver we ship."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u


def _sqlite_pragmas(engine: Engine, *, foreign_keys: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" below own transactions instead of the driver's implicit ones.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # durable across app crashes in WAL mode
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front, so two writers wait (busy_timeout) rather
        # than deadlock when a read transaction later tries to write.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str | URL, *, for_migrations: bool = False) -> Engine:
    """Create an engine with the store's per-dialect settings. Migrations run with SQLite
    foreign keys off (batch mode recreates tables, which must not cascade)."""
    u = normalize_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:" and not u.database.startswith("file:"):
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u)
        _sqlite_pragmas(engine, foreign_keys=not for_migrations)
        return engine
    # No server-side prepared statements: psycopg would prepare the staging statements while a
    # fresh store is still empty and keep a generic plan (sequential scans) as it fills up.
    return create_engine(u, pool_pre_ping=True, connect_args={"prepare_threshold": None})
