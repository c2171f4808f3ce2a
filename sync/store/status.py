"""Read models for ``contactsync status`` and ``contactsync conflicts``, and conflict resolution.

Per connection: record counts, the pull cursor, outbox counts, failed writes with the
platform's message, excluded persons with the reason; open conflicts and ambiguous matches.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Text, and_, case, cast, func, select
from sqlalchemy.orm import Session

from sync.store.models import Conflict, Cursor, MatchReview, Person, Quarantine, RemoteRecord, Run, utcnow

if TYPE_CHECKING:
    from sync.store.db import Sessions


@dataclass
class ConnectionStatus:
    """What ``status`` shows for one connection."""

    name: str
    records: int = 0
    linked: int = 0
    deleted: int = 0
    dirty: int = 0
    invalid: int = 0
    quarantined: int = 0
    future_stamped: int = 0  # live records whose updated time was past the server's now + skew
    cursor: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None
    cursor_updated_at: datetime | None = None


@dataclass
class ConflictRow:
    """One recorded conflict."""

    id: int
    person_id: int
    field: str
    candidates: list[dict[str, Any]]
    decision: Any
    rule: str
    needs_review: bool
    resolved_at: datetime | None
    resolved_by: str | None
    created_at: datetime


@dataclass
class ReviewRow:
    """One open matching question (ambiguous match or duplicate)."""

    id: int
    kind: str
    key: str
    records: list[dict[str, Any]]
    detail: str
    status: str


@dataclass
class StoreStatus:
    """Everything ``status`` needs from the store (outbox counts come from the outbox)."""

    connections: dict[str, ConnectionStatus] = field(default_factory=dict)
    persons: int = 0
    last_runs: list[dict[str, Any]] = field(default_factory=list)
    open_conflicts: int = 0
    open_reviews: int = 0


class StatusQueries:
    """Queries over the store for status and conflict listings."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    def overview(self, connections: list[str]) -> StoreStatus:
        out = StoreStatus()
        rr = RemoteRecord
        with self._sessions() as s:
            for name in connections:
                out.connections[name] = ConnectionStatus(name)
            rows = s.execute(
                select(
                    rr.connection,
                    func.count(),
                    func.count(rr.person_id),
                    func.count(rr.deleted_at),
                    func.sum(case((rr.dirty.is_(True), 1), else_=0)),
                    # Rows written before the fix may hold JSON null rather than SQL NULL.
                    func.sum(case((and_(rr.invalid.is_not(None), cast(rr.invalid, Text) != "null"), 1), else_=0)),
                ).group_by(rr.connection)
            )
            for conn, total, linked, deleted, dirty, invalid in rows:
                st = out.connections.setdefault(conn, ConnectionStatus(conn))
                st.records, st.linked, st.deleted = int(total), int(linked), int(deleted)
                st.dirty, st.invalid = int(dirty or 0), int(invalid or 0)
            for conn, n in s.execute(select(Quarantine.connection, func.count()).group_by(Quarantine.connection)):
                out.connections.setdefault(conn, ConnectionStatus(conn)).quarantined = int(n)
            future = cast(rr.invalid, Text).like('%"future_timestamp"%')  # sync.detect.stage.FUTURE_TIMESTAMP
            for conn, n in s.execute(
                select(rr.connection, func.count())
                .where(rr.invalid.is_not(None), rr.deleted_at.is_(None), future)
                .group_by(rr.connection)
            ):
                out.connections.setdefault(conn, ConnectionStatus(conn)).future_stamped = int(n)
            for cur in s.scalars(select(Cursor)):
                st = out.connections.setdefault(cur.connection, ConnectionStatus(cur.connection))
                st.cursor, st.checkpoint, st.cursor_updated_at = cur.position, cur.checkpoint, cur.updated_at
            out.persons = int(
                s.scalar(select(func.count()).select_from(Person).where(Person.merged_into.is_(None))) or 0
            )
            out.open_conflicts = int(
                s.scalar(
                    select(func.count())
                    .select_from(Conflict)
                    .where(Conflict.needs_review.is_(True), Conflict.resolved_at.is_(None))
                )
                or 0
            )
            out.open_reviews = int(
                s.scalar(select(func.count()).select_from(MatchReview).where(MatchReview.status == "open")) or 0
            )
            for run in s.scalars(select(Run).order_by(Run.id.desc()).limit(5)):
                out.last_runs.append(
                    {
                        "id": run.id,
                        "profile": run.profile,
                        "kind": run.kind,
                        "status": run.status,
                        "started_at": run.started_at,
                        "finished_at": run.finished_at,
                        "counts": dict(run.counts or {}),
                        "error": run.error,
                    }
                )
        return out

    def conflicts(self, *, open_only: bool = False, limit: int = 200) -> list[ConflictRow]:
        """Recorded conflicts, newest first; ``open_only``: those needing review, unresolved."""
        with self._sessions() as s:
            q = select(Conflict)
            if open_only:
                q = q.where(Conflict.needs_review.is_(True), Conflict.resolved_at.is_(None))
            rows = s.scalars(q.order_by(Conflict.id.desc()).limit(limit))
            return [
                ConflictRow(
                    r.id,
                    r.person_id,
                    r.field,
                    list(r.candidates or []),
                    r.decision,
                    r.rule,
                    r.needs_review,
                    r.resolved_at,
                    r.resolved_by,
                    r.created_at,
                )
                for r in rows
            ]

    def reviews(self, *, open_only: bool = True, limit: int = 200) -> list[ReviewRow]:
        """Ambiguous matches and duplicates kept for review."""
        with self._sessions() as s:
            q = select(MatchReview)
            if open_only:
                q = q.where(MatchReview.status == "open")
            rows = s.scalars(q.order_by(MatchReview.id.desc()).limit(limit))
            return [ReviewRow(r.id, r.kind, r.key, list(r.records or []), r.detail, r.status) for r in rows]

    def resolve_conflict(self, conflict_id: int, value: Any, by: str) -> ConflictRow:
        """Settle a conflict by hand: the chosen value becomes the person's golden value for the
        field and the person is marked dirty, so the next cycle carries it everywhere."""
        with self._sessions.begin() as s:
            row = s.get(Conflict, conflict_id)
            if row is None:
                raise KeyError(f"no conflict {conflict_id}")
            row.decision = value
            row.rule = "manual"
            row.needs_review = False
            row.resolved_at = utcnow()
            row.resolved_by = by
            # Row-locked (PostgreSQL): a plan saving this person meanwhile waits, then finds its
            # version moved and leaves the person dirty (optimistic save, see persons.py).
            person = s.get(Person, row.person_id, with_for_update=True)
            if person is not None:
                fields = dict(person.fields or {})
                fields[row.field] = value
                person.fields = fields
                person.version = (person.version or 0) + 1
                person.updated_at = utcnow()
                person.dirty = True
            return ConflictRow(
                row.id,
                row.person_id,
                row.field,
                list(row.candidates or []),
                row.decision,
                row.rule,
                row.needs_review,
                row.resolved_at,
                row.resolved_by,
                row.created_at,
            )


@dataclass
class PersonRecords:
    """A person and the records that are that person on each connection."""

    person_id: int
    fields: dict[str, Any]
    records: list[dict[str, Any]]  # {"connection", "remote_id", "merged_into", "deleted"}


def persons_with_records(session: Session, *, limit: int = 1000) -> list[PersonRecords]:
    """Live persons with their linked records (merged-away and deleted ones included, marked);
    ``store.persons.with_records()``."""
    with nullcontext(session) as s:
        people = list(s.scalars(select(Person).where(Person.merged_into.is_(None)).order_by(Person.id).limit(limit)))
        ids = [p.id for p in people]
        by_person: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for r in s.scalars(
                select(RemoteRecord)
                .where(RemoteRecord.person_id.in_(chunk))
                .order_by(RemoteRecord.connection, RemoteRecord.id)
            ):
                if r.person_id is None:  # never: selected by person_id IN (...)
                    continue
                by_person[r.person_id].append(
                    {
                        "connection": r.connection,
                        "remote_id": r.remote_id,
                        "merged_into": r.merged_into,
                        "deleted": r.deleted_at is not None,
                    }
                )
        return [PersonRecords(p.id, dict(p.fields or {}), by_person[p.id]) for p in people]
