"""Opening the staging store, and its one transaction API.

:class:`Store` is the one handle the rest of the engine holds and the only door into the store.
Its repositories hang off it — ``store.staging``, ``store.cursors``, ``store.runs``,
``store.outbox``, ``store.persons``, ``store.snapshots``, ``store.status`` — and every one of
them works through :meth:`Store.transaction`, on the store's one sessionmaker, behind the
nested-transaction guard.

A repository taken from the store (``store.outbox.due(...)``) runs each call in a transaction
of its own. A repository taken from a unit of work (``tx.outbox``, ``tx.persons``) joins that
unit's transaction instead: what planning writes through ``tx.persons`` and queues through
``tx.outbox`` commits together.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import cached_property
from typing import Protocol

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from sync.store.auth import ConnectionAuth
from sync.store.behaviours import BehaviourStore
from sync.store.connect import display_url, make_engine
from sync.store.cursors import Cursors
from sync.store.health import HealthQueries
from sync.store.held import HeldDeletes
from sync.store.inbox import Inbox
from sync.store.locks import ProfileLock
from sync.store.migrate import current_revision, head_revision
from sync.store.operator import Operator
from sync.store.outbox import OutboxStore
from sync.store.persons import Persons
from sync.store.ratewindows import RateWindows
from sync.store.replan import Replan
from sync.store.runs import Runs
from sync.store.snapshots import SnapshotStore
from sync.store.staging import Staging
from sync.store.status import StatusQueries


class NestedSession(RuntimeError):
    """A store transaction opened inside another that holds its transaction, in the same thread,
    on SQLite (a deadlock: the inner one would wait for the outer one's write lock)."""


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


class Sessions(Protocol):
    """Where a repository gets its session: ``with sessions() as s`` (reads) and
    ``with sessions.begin() as s`` (writes) both yield a session inside a store transaction."""

    def __call__(self) -> AbstractContextManager[Session]: ...

    def begin(self) -> AbstractContextManager[Session]: ...


class _PerCall:
    """Each use is a transaction of its own, through :meth:`Store.transaction` (and its guard).
    ``fenced=False``: commits even after the profile lock was lost (the runs table: a run that
    lost its lock still records how it ended)."""

    def __init__(self, store: Store, *, fenced: bool = True) -> None:
        self._store = store
        self._fenced = fenced

    @contextmanager
    def __call__(self) -> Iterator[Session]:
        with self._store.transaction(fenced=self._fenced) as tx:
            yield tx.session

    begin = __call__


class _Joined:
    """Every use joins one open unit of work: nothing is committed or closed here."""

    def __init__(self, session: Session) -> None:
        self._session = session

    @contextmanager
    def __call__(self) -> Iterator[Session]:
        yield self._session

    begin = __call__


class UnitOfWork:
    """One open store transaction, yielded by :meth:`Store.transaction`.

    Repositories taken from it act inside it: ``tx.persons`` (matching and planning state),
    ``tx.outbox`` (queueing intents), ``tx.snapshots``. What they write commits when the
    ``with`` block ends without an exception and rolls back when it raises.

    - :meth:`commit` commits part-way: what was written so far is durable, and the next
      statement begins a new transaction. Planning streams this way (the match, then each
      slice), and commits right after reading a slice so SQLite's write lock is not held while
      the slice is computed.
    - :meth:`rollback` discards everything since the last commit: a dry run rolls back at the
      end of its block, so nothing it did is written anywhere.

    ``session`` is the raw SQLAlchemy session, for ``sync/store``'s own code and for tests that
    inspect the store; code outside ``sync/store`` goes through the repositories."""

    def __init__(self, session: Session, fence: Callable[[], None] | None = None) -> None:
        self.session = session
        self._sessions = _Joined(session)
        self._fence = fence

    def commit(self) -> None:
        """Commit what the unit has done so far; the unit stays open for more. Raises
        :class:`~sync.store.locks.LostLock` instead when a profile lock held by this process
        was lost (fencing: nothing more is committed)."""
        if self._fence is not None:
            self._fence()
        self.session.commit()

    def rollback(self) -> None:
        """Discard what the unit has done since its last commit; the unit stays open."""
        self.session.rollback()

    @property
    def holds_transaction(self) -> bool:
        """Whether a transaction is under way (on SQLite: the write lock is held)."""
        return self.session.in_transaction()

    @cached_property
    def persons(self) -> Persons:
        return Persons(self._sessions)

    @cached_property
    def replan(self) -> Replan:
        return Replan(self._sessions)

    @cached_property
    def outbox(self) -> OutboxStore:
        return OutboxStore(self._sessions)

    @cached_property
    def snapshots(self) -> SnapshotStore:
        return SnapshotStore(self._sessions)


class Store:
    """A handle on the staging store. Open with :meth:`open`; close with :meth:`close`.

    Repositories (each call its own transaction): :attr:`staging`, :attr:`cursors`,
    :attr:`runs`, :attr:`replan`, :attr:`held`, :attr:`outbox`, :attr:`persons`, :attr:`snapshots`,
    :attr:`status`, :attr:`operator`, :attr:`auth`, :attr:`health`, :attr:`inbox`. Several calls in one
    transaction: ``with store.transaction() as tx``."""

    def __init__(self, engine: Engine, url: str) -> None:
        # The engine is for sync/store's own code (locks, migrations) and tests' assertions.
        self.engine = engine
        self.url = url
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._open_units = threading.local()
        self._fences: tuple[ProfileLock, ...] = ()  # profile locks taken through this store
        per_call = _PerCall(self)
        self.staging = Staging(per_call, engine.dialect.name)
        self.cursors = Cursors(per_call)
        self.runs = Runs(_PerCall(self, fenced=False))
        self.replan = Replan(per_call)
        self.held = HeldDeletes(per_call)
        self.outbox = OutboxStore(per_call)
        self.persons = Persons(per_call)
        self.snapshots = SnapshotStore(per_call)
        self.status = StatusQueries(per_call)
        self.operator = Operator(per_call)
        # Unfenced: a rotated refresh token is stored even if the profile lock was lost.
        self.auth = ConnectionAuth(_PerCall(self, fenced=False), engine)
        self.health = HealthQueries(_PerCall(self, fenced=False))
        self.inbox = Inbox(per_call)
        self.behaviours = BehaviourStore(per_call)
        # Unfenced: what was sent is worth recording whoever holds the profile.
        self.rate_windows = RateWindows(_PerCall(self, fenced=False))

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

    @property
    def shareable(self) -> bool:
        """Whether other processes can open this store (not an in-memory SQLite database)."""
        url = self.engine.url
        return not (
            url.get_backend_name() == "sqlite"
            and (not url.database or url.database == ":memory:" or "mode=memory" in str(url))
        )

    @contextmanager
    def transaction(self, *, fenced: bool = True) -> Iterator[UnitOfWork]:
        """The one way into a store transaction: yields a :class:`UnitOfWork`, which commits
        when the block succeeds and rolls back when it raises (see its ``commit`` and
        ``rollback`` for committing part-way and for a dry run).

        The transaction begins at once; on SQLite that takes the write lock (``BEGIN
        IMMEDIATE``). So do not use the store (a repository of the store, or another
        transaction) inside the block while the unit holds its transaction: it would wait for
        the lock its own thread holds. That mistake raises :class:`NestedSession` at once
        instead of hanging. After ``tx.commit()`` the unit holds nothing until its next
        statement, and the store may be used meanwhile.

        Fencing: while this store holds a profile lock, every commit first checks the lock is
        still held and raises :class:`~sync.store.locks.LostLock` (rolling back) when it is
        not. ``fenced=False`` skips that (only for recording how a run ended)."""
        units: list[UnitOfWork] = getattr(self._open_units, "units", None) or []
        if self.dialect_name == "sqlite" and any(u.holds_transaction for u in units):
            raise NestedSession(
                "a store transaction is already under way in this thread; on SQLite the inner "
                "one would wait forever for the outer one's write lock"
            )
        session = self._sessions()
        unit = UnitOfWork(session, self.check_locks if fenced else None)
        self._open_units.units = [*units, unit]
        try:
            session.begin()
            yield unit
            if fenced:
                self.check_locks()
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
            self._open_units.units = units

    @contextmanager
    def session(self) -> Iterator[Session]:
        """``with store.session() as s`` is ``with store.transaction() as tx`` with ``s =
        tx.session``: the raw SQLAlchemy session of one transaction, for ``sync/store``'s own
        code and for tests that inspect the store."""
        with self.transaction() as tx:
            yield tx.session

    def profile_lock(self, profile: str) -> ProfileLock:
        """The lock that lets one process at a time run ``profile`` (use as a context manager).
        While it is held, the store's commits are fenced by it (see :meth:`transaction`)."""
        lock = ProfileLock(self.engine, profile)
        self._fences = (*self._fences, lock)
        lock.on_release.append(self._forget_lock)
        return lock

    def _forget_lock(self, lock: ProfileLock) -> None:
        self._fences = tuple(f for f in self._fences if f is not lock)

    def check_locks(self) -> None:
        """Raise :class:`~sync.store.locks.LostLock` when a profile lock this store took is no
        longer held (cheap: see ``ProfileLock.check``)."""
        for lock in self._fences:
            lock.check()

    def close(self) -> None:
        """Release all pooled connections."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({display_url(self.url)!r})"
