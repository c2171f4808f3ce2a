"""Opening the staging store: engine set-up per dialect, the revision check, sessions.

:class:`Store` is the one handle the rest of the engine holds. Its operations are grouped by job
in small mixins (staging, cursors, runs) that all work through :meth:`Store.session`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from sync.store.connect import display_url, make_engine
from sync.store.cursors import CursorsMixin
from sync.store.migrate import current_revision, head_revision
from sync.store.replan import ReplanMixin
from sync.store.runs import RunsMixin
from sync.store.staging import StagingMixin


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
