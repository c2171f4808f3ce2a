"""Profile locks: exactly one process runs a given sync profile at a time.

On PostgreSQL (scale-out: several daemons share one store) this is a session-level advisory
lock, ``pg_try_advisory_lock``, held on a dedicated connection for the length of the run; if the
process dies, its connection closes and the lock goes with it. SQLite is single-machine: an
exclusive ``flock`` on a file beside the database does the same job (also released by the OS
when a process is killed).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection


def lock_key(profile: str) -> int:
    """A stable signed 64-bit advisory-lock key for a profile name."""
    digest = hashlib.sha256(f"contactsync:profile:{profile}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class ProfileLock:
    """A non-blocking lock on one profile. Use as a context manager and test :attr:`held`::

    with ProfileLock(store.engine, "default") as lock:
        if not lock.held:
            return  # another process is running this profile
    """

    def __init__(self, engine: Engine, profile: str) -> None:
        self.engine = engine
        self.profile = profile
        self.held = False
        self._conn: Connection | None = None
        self._file: IO[Any] | None = None

    def acquire(self) -> bool:
        """Try to take the lock; True when this process now holds it."""
        if self.held:
            return True
        if self.engine.dialect.name == "postgresql":
            conn = self.engine.connect()
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(self.profile)}).scalar())
            conn.commit()  # the lock is session-level; no transaction is left open
            if got:
                self._conn = conn
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

    def release(self) -> None:
        """Give the lock back (idempotent)."""
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(self.profile)})
                self._conn.commit()
            finally:
                self._conn.close()
                self._conn = None
        if self._file is not None:
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
