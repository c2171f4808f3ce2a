"""The requests each process sent to a connection within its rate limit's window
(``store.rate_windows``): a process that starts using a connection (a daemon after a backfill or
a probe) counts what the others sent, so two processes of ours never overrun a documented limit
between them that each would keep alone. Stamps are wall-clock (epoch seconds)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from sync.store.models import RateWindow, utcnow

if TYPE_CHECKING:
    from sync.store.db import Sessions

#: Rows not written for this long belong to processes long gone: removed on the next save.
STALE_AFTER = timedelta(days=1)


class RateWindows:
    """The repository ``store.rate_windows``."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    def save(self, connection: str, owner: str, stamps: Sequence[float]) -> None:
        """Replace what ``owner`` (one process) sent to ``connection`` within the window."""
        now = utcnow()
        with self._sessions.begin() as session:
            row = session.get(RateWindow, (connection, owner))
            if row is None:
                session.add(RateWindow(connection=connection, owner=owner, stamps=list(stamps), updated_at=now))
            else:
                row.stamps = list(stamps)
                row.updated_at = now
            session.execute(
                delete(RateWindow).where(RateWindow.connection == connection, RateWindow.updated_at < now - STALE_AFTER)
            )

    def sent_by_others(self, connection: str, owner: str, since: float) -> list[float]:
        """The stamps after ``since`` of what every other process sent to ``connection``."""
        with self._sessions() as session:
            rows = session.scalars(
                select(RateWindow.stamps).where(RateWindow.connection == connection, RateWindow.owner != owner)
            ).all()
        return sorted(float(t) for stamps in rows for t in (stamps or ()) if float(t) > since)
