"""The stored answers to ambiguous matches, as matching and the echo check read them.

An operator answers through :meth:`sync.store.operator.Operator.decide_match`; matching reads
the answers (:func:`match_decisions`) and, in the transaction that stores its result, marks
them applied (:func:`mark_decisions_applied`, migration 0012). A ``link`` answer marks the
records holding its key dirty so the next match sees them; until a match has read it,
:func:`pending_link_holders` keeps the echo check after a pull (``OutboxStore.clear_echoes``)
from clearing that mark.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, and_, select, update
from sqlalchemy.orm import Session

from sync.store.models import IdentityKey, MatchDecision, utcnow


def match_decisions(session: Session) -> tuple[frozenset[tuple[str, str]], frozenset[tuple[str, str]]]:
    """The stored answers to ambiguous matches: (linked keys, apart keys), each (kind, value)."""
    linked: set[tuple[str, str]] = set()
    apart: set[tuple[str, str]] = set()
    for kind, value, decision in session.execute(
        select(MatchDecision.kind, MatchDecision.value, MatchDecision.decision)
    ):
        (linked if decision == "link" else apart).add((str(kind), str(value)))
    return frozenset(linked), frozenset(apart)


def mark_decisions_applied(session: Session, decided_by: datetime) -> int:
    """Mark applied the pending answers decided at or before ``decided_by`` (the moment the
    match that read them started), in the caller's transaction, which also stores that match.
    An answer given later, or changed meanwhile, stays pending for the next match."""
    result = session.execute(
        update(MatchDecision)
        .where(MatchDecision.applied_at.is_(None), MatchDecision.decided_at <= decided_by)
        .values(applied_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]  # a DML statement gives a CursorResult; Session.execute is typed as returning Result


def pending_link_holders() -> Select[int]:
    """The ids of the records holding a linked key no match has read yet: their dirty mark is
    the operator's answer waiting for matching, not a payload change an echo check may clear."""
    return (
        select(IdentityKey.record_id)
        .join(MatchDecision, and_(MatchDecision.kind == IdentityKey.kind, MatchDecision.value == IdentityKey.value))
        .where(MatchDecision.decision == "link", MatchDecision.applied_at.is_(None))
    )
