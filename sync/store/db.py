"""Opening the staging store: engine set-up per dialect, the revision check, sessions.

:class:`Store` is the one handle the rest of the engine holds. Its operations are grouped by job
in small mixins (staging, cursors, runs) that all work through :meth:`Store.session`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from sync.store.cursors import CursorsMixin
from sync.store.replan import ReplanMixin
from sync.store.runs import RunsMixin
from sync.store.staging import StagingMixin

SQLITE_BUSY_TIMEOUT_MS = 30_000


class NestedSession(RuntimeError):
    """``Store.session()`` opened inside another in the same thread on SQLite (a deadlock)."""


class StoreOutOfDate(Exception):
    """The store's schema revision is not the one the code needs (or the store is empty)."""

    def __init__(self, url: str, current: str | None, needed: str) -> None:
        at = current if current is not None else "none (an empty store)"
        super().__init__(
            f"the store at {display_url(url)} is at revision {at}, the code needs {needed}: "
            "run `contactsync db upgrade -c FILE`"
        )
        self.current = current
        self.needed = needed


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


class Store(StagingMixin, CursorsMixin, RunsMixin, ReplanMixin):
    """A handle on the staging store. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._open_sessions = threading.local()

    @classmethod
    def open(cls, url: str, *, check: bool = True) -> Store:
        """Open the store at ``url``. With ``check`` (the default) refuse a store whose schema is
        not at the code's head revision, including an empty one, with :class:`StoreOutOfDate`."""
        from sync.store.migrate import current_revision, head_revision

        engine = make_engine(url)
        if check:
            try:
                current, needed = current_revision(engine), head_revision()
            except BaseException:
                engine.dispose()
                raise
            if current != needed:
                engine.dispose()
                raise StoreOutOfDate(url, current, needed)
        return cls(engine, url)

    @property
    def dialect_name(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commits when the block succeeds, rolls back when it raises.

        On SQLite a transaction takes the write lock when it begins, so do not call another
        Store method (or open another session) inside the block: it would wait for the lock its
        own thread holds. That mistake raises :class:`NestedSession` at once instead of hanging."""
        nested = getattr(self._open_sessions, "depth", 0)
        if nested and self.dialect_name == "sqlite":
            raise NestedSession(
                "a Store session is already open in this thread; on SQLite the inner one would "
                "wait forever for the outer one's write lock"
            )
        self._open_sessions.depth = nested + 1
        try:
            with self._sessions.begin() as session:
                yield session
        finally:
            self._open_sessions.depth = nested

    @contextmanager
    def stepwise_session(self) -> Iterator[Session]:
        """A transaction the block may commit part-way (planning commits after reading a slice,
        so SQLite's write lock is not held while it computes); what is left commits when the
        block succeeds and rolls back when it raises. :meth:`session` forbids such commits."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def manual_session(self) -> Session:
        """A session whose caller decides, at the end, to commit or roll back (planning's dry
        run rolls back a whole match-and-plan). Close it when done."""
        return self._sessions()

    def close(self) -> None:
        """Release all pooled connections."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({display_url(self.url)!r})"
