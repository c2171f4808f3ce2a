"""Re-planning persons that did not change: after a connection joins a profile, or on request.

Planning looks only at dirty persons (the cost of a run follows the change). A connection
added to a profile later has no dirty persons of its own beyond the records it brings, so
everyone else would never be created there. A connection that has been planned at least once
leaves a trace: a snapshot (a record confirmed there) or an outbox row (a write or an
exclusion). One with neither, in a store that already holds persons, has never been planned:
every live person is marked dirty once so the next plan covers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import exists, select, update

from sync.store.models import Outbox, Person, Snapshot

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from sync.store.db import Sessions


def unplanned_connections_in(session: Session, names: Sequence[str]) -> list[str]:
    """The connections of ``names`` never planned although the store holds persons."""
    if not session.execute(select(exists().where(Person.merged_into.is_(None)))).scalar():
        return []
    return [
        name
        for name in names
        if not session.execute(select(exists().where(Snapshot.connection == name))).scalar()
        and not session.execute(select(exists().where(Outbox.connection == name))).scalar()
    ]


def mark_all_persons_dirty_in(session: Session) -> int:
    """Mark every live person dirty in the caller's transaction, so the plan built in it
    reconciles all of them. Returns how many were marked."""
    result = session.execute(
        update(Person).where(Person.merged_into.is_(None), Person.dirty.is_(False)).values(dirty=True)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]  # a DML statement gives a CursorResult; Session.execute is typed as returning Result


def mark_persons_dirty_in(session: Session, person_ids: Sequence[int]) -> int:
    """Mark the given live persons dirty in the caller's transaction (a plan that could not
    cover every connection leaves them for the next one). Returns how many were marked."""
    ids = sorted(set(person_ids))
    n = 0
    for start in range(0, len(ids), 5_000):
        result = session.execute(
            update(Person)
            .where(Person.id.in_(ids[start : start + 5_000]), Person.merged_into.is_(None))
            .values(dirty=True)
            .execution_options(synchronize_session=False)
        )
        n += int(result.rowcount or 0)  # type: ignore[attr-defined]  # a DML statement gives a CursorResult; Session.execute is typed as returning Result
    return n


class Replan:
    """Re-planning operations: the repository ``store.replan``."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    def unplanned_connections(self, names: Sequence[str]) -> list[str]:
        """See :func:`unplanned_connections_in`."""
        with self._sessions() as s:
            return unplanned_connections_in(s, names)

    def mark_dirty(self, person_ids: Sequence[int]) -> int:
        """See :func:`mark_persons_dirty_in`."""
        with self._sessions() as s:
            return mark_persons_dirty_in(s, person_ids)
