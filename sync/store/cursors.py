"""Per-connection pull cursors, resumable checkpoints and full-scan deletion detection.

The pull *position* advances only together with the rows it covers (see
``StagingMixin.stage_page``); this module reads it and manages the rest of the cursor row.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from sync.store.held import DeleteLimits, hold_in, judge, release_in
from sync.store.models import Cursor, IdentityKey, RemoteRecord, utcnow

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from sqlalchemy.orm import Session

    from sync.store.db import Sessions


@dataclass(frozen=True)
class CursorState:
    """Where a connection's pull stands: ``position`` (incremental pull cursor, connector-
    defined), ``checkpoint`` (a backfill's resume point) and the id of its latest full scan."""

    position: dict[str, Any] | None
    checkpoint: dict[str, Any] | None
    full_scan_id: int


@dataclass(frozen=True)
class ScanClose:
    """What closing a full scan did: the deletes believed (marked), or those held and why."""

    deleted: list[str]
    held: list[str] = field(default_factory=list)
    reason: str | None = None


class UnknownScan(Exception):
    """``finish_full_scan`` was given a scan id that is not the connection's current scan."""


def _cursor_row(session: Session, connection: str) -> Cursor:
    """The connection's cursor row, created if missing, locked for update on PostgreSQL."""
    row = session.execute(select(Cursor).where(Cursor.connection == connection).with_for_update()).scalar_one_or_none()
    if row is None:
        row = Cursor(connection=connection, position=None, checkpoint=None, full_scan_id=0)
        session.add(row)
        session.flush()
    return row


class Cursors:
    """Cursor operations: the repository ``store.cursors``."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    def session(self) -> AbstractContextManager[Session]:
        return self._sessions.begin()

    def get_cursor(self, connection: str) -> CursorState:
        """The connection's cursor; an unknown connection starts with everything empty."""
        with self.session() as s:
            row = s.get(Cursor, connection)
            if row is None:
                return CursorState(position=None, checkpoint=None, full_scan_id=0)
            return CursorState(row.position, row.checkpoint, row.full_scan_id)

    def set_checkpoint(self, connection: str, checkpoint: dict[str, Any] | None) -> None:
        """Record (or with ``None`` clear) a backfill's resume point."""
        with self.session() as s:
            row = _cursor_row(s, connection)
            row.checkpoint = checkpoint
            row.updated_at = utcnow()

    def begin_full_scan(self, connection: str) -> int:
        """Start a full scan of the connection and return its id; pass the id to every
        ``stage_page(..., scan_id=...)`` of the scan and then to :meth:`finish_full_scan`."""
        with self.session() as s:
            row = _cursor_row(s, connection)
            row.full_scan_id += 1
            row.updated_at = utcnow()
            return row.full_scan_id

    def finish_full_scan(
        self,
        connection: str,
        scan_id: int,
        *,
        seen: Collection[str] | None = None,
        limits: DeleteLimits | None = None,
    ) -> list[str]:
        """Close a full scan and return the remote ids it marked deleted (see
        :meth:`close_full_scan`; without ``limits`` every delete the scan implies is believed)."""
        return self.close_full_scan(connection, scan_id, seen=seen, limits=limits).deleted

    def close_full_scan(
        self,
        connection: str,
        scan_id: int,
        *,
        seen: Collection[str] | None = None,
        limits: DeleteLimits | None = None,
        merges: bool = False,
    ) -> ScanClose:
        """Close a full scan: records of the connection that the scan did not see (and that are
        not already deleted or merged away) are marked deleted (``deleted_at``, dirty) and their
        remote ids returned. What the scan saw is ``seen`` (every remote id it listed) when
        given, else the records its pages marked with ``scan_id``.

        With ``limits`` the deletes are believed only when the scan is consistent with the
        store's previous view (:func:`sync.store.held.judge`): otherwise none is marked, they
        are *held* (``store.held``) with the reason, returned as ``held``. Held rows of records
        the scan listed again are released either way.

        Call this ONLY after a complete, successful scan: every page pulled and staged with
        this ``scan_id``. Never call it after a partial, interrupted or failed scan: records on
        the pages not pulled would be marked deleted. Raises :class:`UnknownScan` if a newer
        scan has begun since (its pages would not carry this id).

        ``merges``: the connection merges contacts natively (Acquire). A missing record every
        key of which (emails and phones) now sits on one live record of the connection looks
        like a merge, not a delete (matching infers the merge): it is not counted by the
        mass-delete breaker, and is marked like any missing record even when the deletes are
        held."""
        with self.session() as s:
            row = _cursor_row(s, connection)
            if scan_id != row.full_scan_id or scan_id <= 0:
                raise UnknownScan(f"scan {scan_id} is not the current full scan of {connection!r} ({row.full_scan_id})")
            live = (
                RemoteRecord.connection == connection,
                RemoteRecord.deleted_at.is_(None),
                RemoteRecord.merged_into.is_(None),
            )
            if seen is not None:
                listed = set(seen)
                known = list(s.scalars(select(RemoteRecord.remote_id).where(*live)))
                gone = sorted(r for r in known if r not in listed)
            else:
                rows = s.execute(select(RemoteRecord.remote_id, RemoteRecord.last_scan).where(*live)).all()
                known = [r for r, _ in rows]
                gone = sorted(r for r, last in rows if last is None or last != scan_id)
            reason = None
            merged: list[str] = []
            if limits is not None:
                if merges and gone:
                    merged = _merge_like(s, connection, gone)
                counted = len(gone) - len(merged)
                reason = judge(connection, live=len(known), gone=counted, overlap=len(known) - len(gone), limits=limits)
            now = utcnow()
            if reason is not None:
                held = sorted(set(gone) - set(merged))
                release_in(s, connection, keep=set(held))
                hold_in(s, connection, held, reason)
                for start in range(0, len(merged), 500):
                    s.execute(
                        update(RemoteRecord)
                        .where(*live, RemoteRecord.remote_id.in_(merged[start : start + 500]))
                        .values(deleted_at=now, dirty=True)
                        .execution_options(synchronize_session=False)
                    )
                return ScanClose(deleted=merged, held=held, reason=reason)
            for start in range(0, len(gone), 500):
                s.execute(
                    update(RemoteRecord)
                    .where(*live, RemoteRecord.remote_id.in_(gone[start : start + 500]))
                    .values(deleted_at=now, dirty=True)
                    .execution_options(synchronize_session=False)
                )
            release_in(s, connection)
            return ScanClose(deleted=gone)


_MERGE_KINDS = ("email", "phone")


def _merge_like(session: Session, connection: str, gone: Sequence[str]) -> list[str]:
    """The records of ``gone`` (missing from a complete scan) every email and phone of which now
    sits on one single live record of ``connection``: what a native merge leaves (the inference
    matching makes, see ``sync.match.graph``). Two queries per 500 missing records."""
    rr, ik = RemoteRecord, IdentityKey
    keys: dict[str, set[tuple[str, str]]] = {}
    for start in range(0, len(gone), 500):
        for rid, kind, value in session.execute(
            select(rr.remote_id, ik.kind, ik.value)
            .join(ik, ik.record_id == rr.id)
            .where(rr.connection == connection, rr.remote_id.in_(gone[start : start + 500]), ik.kind.in_(_MERGE_KINDS))
        ):
            keys.setdefault(str(rid), set()).add((str(kind), str(value)))
    values = sorted({v for ks in keys.values() for _, v in ks})
    missing = set(gone)
    holders: dict[tuple[str, str], set[str]] = {}
    for start in range(0, len(values), 500):
        for rid, kind, value in session.execute(
            select(rr.remote_id, ik.kind, ik.value)
            .join(ik, ik.record_id == rr.id)
            .where(
                rr.connection == connection,
                rr.deleted_at.is_(None),
                rr.merged_into.is_(None),
                ik.kind.in_(_MERGE_KINDS),
                ik.value.in_(values[start : start + 500]),
            )
        ):
            if str(rid) not in missing:
                holders.setdefault((str(kind), str(value)), set()).add(str(rid))
    out = []
    for rid, ks in keys.items():
        owners = [holders.get(k, set()) for k in ks]
        if owners and all(owners) and len(set().union(*owners)) == 1:
            out.append(rid)
    return sorted(out)
