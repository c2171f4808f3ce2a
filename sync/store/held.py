"""Held deletes: the mass-delete circuit breaker's side of the store (``store.held``).

A complete full scan implies deletes: the records the store holds live that the scan did not
list. :func:`judge` decides whether those deletes are believed. They are not — they are *held*,
stored here with the reason, nothing marked deleted and nothing propagated — when

* the scan shares none of the ids the store knew for the connection (an empty answer, or
  credentials that now point at a different account), or
* more records are missing than the connection's limits allow (``deletes.max_count``, or
  ``deletes.max_share`` of its live records).

Only a human releases them: :meth:`HeldDeletes.approve` marks the records deleted (dirty, so the
next cycle plans the delete under the configured policy), :meth:`HeldDeletes.reject` drops the
rows. A held record that a later scan lists again is released by that scan (it was there).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, select, update

from sync.store.models import HeldDelete, RemoteRecord, utcnow

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from sqlalchemy.orm import Session

    from sync.store.db import Sessions

_CHUNK = 500


@dataclass(frozen=True)
class DeleteLimits:
    """How many deletes one complete scan of one connection may imply before they are held:
    more than ``max_count`` records, or more than ``max_share`` of its live records."""

    max_share: float = 0.10
    max_count: int = 50


def judge(connection: str, *, live: int, gone: int, overlap: int, limits: DeleteLimits) -> str | None:
    """Why the ``gone`` deletes a scan implies are held (None: they are believed). ``live``:
    the records the store held live before the scan; ``overlap``: how many of them it listed."""
    if gone == 0 or live == 0:
        return None
    if overlap == 0:
        return (
            f"the complete scan of {connection} listed none of the {live} records known there "
            "(an empty answer, or credentials now pointing at a different account); "
            f"{gone} deletes held, not believed"
        )
    share = gone / live
    if gone > limits.max_count:
        return (
            f"{gone} of {live} records of {connection} ({share:.0%}) missing from one complete scan, "
            f"more than deletes.max_count ({limits.max_count}); held for review"
        )
    if share > limits.max_share:
        return (
            f"{gone} of {live} records of {connection} ({share:.0%}) missing from one complete scan, "
            f"more than deletes.max_share ({limits.max_share:.0%}); held for review"
        )
    return None


@dataclass(frozen=True)
class HeldRow:
    """One held delete."""

    id: int
    connection: str
    remote_id: str
    reason: str
    held_at: datetime


def hold_in(session: Session, connection: str, remote_ids: Sequence[str], reason: str) -> None:
    """Hold ``remote_ids`` of ``connection`` with ``reason`` (refreshing rows already held)."""
    now = utcnow()
    have: set[str] = set()
    for start in range(0, len(remote_ids), _CHUNK):
        part = list(remote_ids[start : start + _CHUNK])
        have.update(
            session.scalars(
                select(HeldDelete.remote_id).where(HeldDelete.connection == connection, HeldDelete.remote_id.in_(part))
            )
        )
        session.execute(
            update(HeldDelete)
            .where(HeldDelete.connection == connection, HeldDelete.remote_id.in_(part))
            .values(reason=reason, held_at=now)
            .execution_options(synchronize_session=False)
        )
    new = [r for r in remote_ids if r not in have]
    if new:
        session.execute(
            insert(HeldDelete),
            [{"connection": connection, "remote_id": r, "reason": reason, "held_at": now} for r in new],
        )


def release_in(session: Session, connection: str, *, keep: Collection[str] = ()) -> None:
    """Drop the connection's held rows except those of ``keep`` (still missing)."""
    held = list(session.scalars(select(HeldDelete.remote_id).where(HeldDelete.connection == connection)))
    gone = [r for r in held if r not in keep] if keep else held
    for start in range(0, len(gone), _CHUNK):
        session.execute(
            delete(HeldDelete).where(
                HeldDelete.connection == connection, HeldDelete.remote_id.in_(gone[start : start + _CHUNK])
            )
        )


class HeldDeletes:
    """Held-delete operations: the repository ``store.held``."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    def session(self) -> AbstractContextManager[Session]:
        return self._sessions.begin()

    def hold(self, connection: str, remote_ids: Sequence[str], reason: str) -> None:
        """Hold deletes confirmed outside a scan (webhook events whose contacts are gone) that
        are too many at once to believe without a human (``deletes approve|reject``)."""
        with self.session() as s:
            hold_in(s, connection, list(remote_ids), reason)

    def counts(self) -> dict[str, int]:
        """Held deletes per connection."""
        with self.session() as s:
            rows = s.execute(select(HeldDelete.connection, func.count()).group_by(HeldDelete.connection))
            return {str(c): int(n) for c, n in rows}

    def rows(self, connection: str | None = None, *, limit: int | None = None) -> list[HeldRow]:
        """The held deletes (of one connection), oldest first."""
        with self.session() as s:
            q = select(HeldDelete).order_by(HeldDelete.id)
            if connection is not None:
                q = q.where(HeldDelete.connection == connection)
            if limit is not None:
                q = q.limit(limit)
            return [HeldRow(h.id, h.connection, h.remote_id, h.reason, h.held_at) for h in s.scalars(q)]

    def reasons(self) -> dict[str, list[str]]:
        """Per connection, the distinct reasons its deletes are held for."""
        with self.session() as s:
            out: dict[str, list[str]] = {}
            for c, r in s.execute(
                select(HeldDelete.connection, HeldDelete.reason).distinct().order_by(HeldDelete.connection)
            ):
                out.setdefault(str(c), []).append(str(r))
            return out

    def approve(self, connections: Sequence[str] | None = None) -> dict[str, int]:
        """Believe the held deletes (of ``connections``; all when None): their records still live
        are marked deleted and dirty — the next cycle plans the deletes under the configured
        policy — and the rows are dropped. Returns the records marked, per connection."""
        out: dict[str, int] = {}
        with self.session() as s:
            q = select(HeldDelete.connection, HeldDelete.remote_id)
            if connections is not None:
                q = q.where(HeldDelete.connection.in_(list(connections)))
            by_conn: dict[str, list[str]] = {}
            for c, r in s.execute(q):
                by_conn.setdefault(str(c), []).append(str(r))
            now = utcnow()
            for conn, ids in by_conn.items():
                n = 0
                for start in range(0, len(ids), _CHUNK):
                    result = s.execute(
                        update(RemoteRecord)
                        .where(
                            RemoteRecord.connection == conn,
                            RemoteRecord.remote_id.in_(ids[start : start + _CHUNK]),
                            RemoteRecord.deleted_at.is_(None),
                            RemoteRecord.merged_into.is_(None),
                        )
                        .values(deleted_at=now, dirty=True)
                        .execution_options(synchronize_session=False)
                    )
                    n += int(result.rowcount or 0)  # type: ignore[attr-defined]  # a DML statement gives a CursorResult; Session.execute is typed as returning Result
                release_in(s, conn)
                out[conn] = n
        return out

    def reject(self, connections: Sequence[str] | None = None) -> dict[str, int]:
        """Drop the held deletes (of ``connections``; all when None): nothing is deleted. A later
        scan that still misses those records holds them again. Returns the rows dropped."""
        with self.session() as s:
            counts = {
                str(c): int(n)
                for c, n in s.execute(
                    select(HeldDelete.connection, func.count())
                    .where(*([HeldDelete.connection.in_(list(connections))] if connections is not None else []))
                    .group_by(HeldDelete.connection)
                )
            }
            for conn in counts:
                release_in(s, conn)
            return counts
