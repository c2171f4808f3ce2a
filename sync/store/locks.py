"""Profile locks: exactly one process runs a given sync profile at a time.

On PostgreSQL (scale-out: several daemons share one store) this is a session-level advisory
lock, ``pg_try_advisory_lock``, held on a dedicated connection for the length of the run; if the
process dies, its connection closes and the lock goes with it. SQLite is single-machine: an
exclusive ``flock`` on a file beside the database does the same job (also released by the OS
when a process is killed).

**Fencing.** Holding the lock at the start of a run is not enough: the lock's connection can be
terminated (``pg_terminate_backend``, a network drop, a server restart) and another daemon
take the profile while this run goes on. :meth:`ProfileLock.check` says whether the lock is
still ours and raises :class:`LostLock` when not; the store calls it before every commit made
while a lock is held (see ``Store.transaction``), so a run that lost its lock stops before its
next commit. The check is cheap: on PostgreSQL a non-blocking look at the lock connection's
socket (a terminated backend sends its goodbye and closes it) at every check, and a round trip
on that connection (``SELECT pg_backend_pid()``, the same backend as when the lock was taken)
at most every :attr:`ProfileLock.probe_interval_s`; on SQLite a ``stat`` that the lock file is
still the one this process locked (it was not deleted or replaced). A lost lock stays lost.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import select
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection


def lock_key(profile: str) -> int:
    """A stable signed 64-bit advisory-lock key for a profile name."""
    digest = hashlib.sha256(f"contactsync:profile:{profile}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class LostLock(RuntimeError):
    """This process no longer holds the profile lock it ran under (fencing): the run must stop
    before committing anything more."""

    def __init__(self, profile: str, why: str) -> None:
        super().__init__(
            f"lost the profile lock of {profile!r} ({why}); another process may be running it, "
            "so this run stopped before its next commit"
        )
        self.profile = profile
        self.why = why


class ProfileLock:
    """A non-blocking lock on one profile. Use as a context manager and test :attr:`held`::

    with ProfileLock(store.engine, "default") as lock:
        if not lock.held:
            return  # another process is running this profile
    """

    #: The longest time between two round trips on the lock connection (PostgreSQL).
    probe_interval_s = 1.0

    def __init__(self, engine: Engine, profile: str) -> None:
        self.engine = engine
        self.profile = profile
        self.held = False
        self.lost: str | None = None  # why the lock was lost (sticky), once it was
        self._conn: Connection | None = None
        self._file: IO[Any] | None = None
        self._backend_pid: int | None = None
        self._fd: int | None = None
        self._probed_at = 0.0
        self._guard = threading.Lock()  # the lock connection is probed from several threads
        self.on_release: list[Any] = []  # callbacks run on release (the store's fence registry)

    def acquire(self) -> bool:
        """Try to take the lock; True when this process now holds it."""
        if self.held:
            return True
        if self.engine.dialect.name == "postgresql":
            conn = self.engine.connect()
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(self.profile)}).scalar())
            if got:
                self._backend_pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            conn.commit()  # the lock is session-level; no transaction is left open
            if got:
                self._conn = conn
                self._fd = _socket_of(conn)
                self._probed_at = time.monotonic()
            else:
                conn.close()
            self.held = got
            return got
        path = self._lock_path()
        if path is None:  # an in-memory database cannot be shared between processes
            self.held = True
            return True
        f = open(path, "a+")  # noqa: SIM115 - kept open while the lock is held
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        self._file = f
        self.held = True
        return True

    def check(self) -> None:
        """Raise :class:`LostLock` unless this process still holds the lock (see the module's
        "Fencing"). Safe from any thread; a no-op for a lock not taken."""
        if self.lost is not None:
            raise LostLock(self.profile, self.lost)
        if not self.held:
            return
        why = self._pg_lost() if self._conn is not None else self._file_lost()
        if why is not None:
            self.lost = why
            raise LostLock(self.profile, why)

    def _pg_lost(self) -> str | None:
        with self._guard:
            conn = self._conn
            if conn is None:
                return None
            now = time.monotonic()
            if self._fd is not None and not _readable(self._fd) and now - self._probed_at < self.probe_interval_s:
                return None  # nothing arrived on an idle session: the backend is still there
            try:
                pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
                conn.commit()
            except Exception as exc:  # noqa: BLE001 - any failure of the lock connection loses the lock
                return f"its database connection failed: {type(exc).__name__}"
            self._probed_at = now
            if pid != self._backend_pid:  # reconnected behind our back: a new session holds nothing
                return "its database session was replaced"
            return None

    def _file_lost(self) -> str | None:
        # Under the guard: a release on another thread closes the file meanwhile, and a closed
        # descriptor is no evidence of a lost lock (a webhook's inbox commit, fenced by the
        # cycle's lock, once failed that way while the cycle gave its lock back).
        with self._guard:
            if self._file is None or not self.held:
                return None
            path = self._lock_path()
            try:
                same = path is not None and os.path.samestat(os.fstat(self._file.fileno()), os.stat(path))
            except OSError:
                same = False
            return None if same else f"its lock file {path} was removed or replaced"

    def release(self) -> None:
        """Give the lock back (idempotent)."""
        for callback in self.on_release:
            callback(self)
        self.on_release = []
        if self._conn is not None:
            try:
                if self.lost is None:
                    self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(self.profile)})
                    self._conn.commit()
            except Exception:  # noqa: BLE001, S110 - a dead connection holds no lock to give back
                pass
            finally:
                self._conn.close()
                self._conn = None
        if self._file is not None:
            with self._guard:
                self.held = False  # first: a check from another thread now finds nothing held
                try:
                    fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
                finally:
                    self._file.close()
                    self._file = None
        self.held = False

    def _lock_path(self) -> Path | None:
        database = self.engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in self.profile)
        return Path(os.path.abspath(database) + f".{safe}.lock")

    def __enter__(self) -> ProfileLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _socket_of(conn: Connection) -> int | None:
    """The file descriptor of a connection's socket (psycopg and psycopg2 have ``fileno``)."""
    try:
        dbapi = conn.connection.dbapi_connection
        return int(dbapi.fileno()) if dbapi is not None else None
    except Exception:  # noqa: BLE001 - no socket to watch: the periodic round trip still runs
        return None


def _readable(fd: int) -> bool:
    """Whether anything arrived on an idle connection (a terminated backend's goodbye, EOF)."""
    try:
        ready, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(ready)
