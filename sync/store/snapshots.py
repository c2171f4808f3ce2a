"""Snapshots: the canonical values last confirmed for a person on a connection (the archive).

A snapshot moves only after a change is confirmed on the platform (``sync/apply`` calls
:func:`put_snapshot` inside the result transaction) or when a pulled value is adopted by
reconcile. Values are stored as the JSON form of a field dict (``fields_to_json``), with a
hash so an unchanged snapshot is recognised without comparing every field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sync.canonical import FieldDict, FieldValue, fields_from_json, fields_to_json
from sync.store.models import Snapshot, utcnow

if TYPE_CHECKING:
    from sync.store.db import Sessions


def fields_hash(fields_json: Mapping[str, Any]) -> str:
    """A stable hash of a snapshot's JSON form (sorted keys, sorted sets already)."""
    blob = json.dumps(fields_json, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _as_json(fields: Mapping[str, FieldValue] | Mapping[str, Any]) -> dict[str, Any]:
    # Accept a field dict (tuples/frozensets) or its JSON form; both end up as plain JSON.
    return fields_to_json(fields)


def put_snapshot(session: Session, person_id: int, connection: str, fields: Mapping[str, Any]) -> bool:
    """Set the snapshot of ``person_id`` on ``connection`` to ``fields`` (in the caller's
    transaction). Returns True when the stored snapshot changed."""
    data = _as_json(fields)
    digest = fields_hash(data)
    row = session.get(Snapshot, (person_id, connection))
    if row is None:
        session.add(Snapshot(person_id=person_id, connection=connection, fields=data, hash=digest, updated_at=utcnow()))
        return True
    if row.hash == digest:
        return False
    row.fields = data
    row.hash = digest
    row.updated_at = utcnow()
    return True


def get_snapshot(session: Session, person_id: int, connection: str) -> FieldDict | None:
    """The snapshot as a field dict, or None when nothing was ever confirmed there."""
    row = session.get(Snapshot, (person_id, connection))
    return None if row is None else fields_from_json(row.fields)


class SnapshotStore:
    """Snapshots: the repository ``store.snapshots`` / ``tx.snapshots``."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    def get(self, person_id: int, connection: str) -> FieldDict | None:
        with self._sessions() as session:
            return get_snapshot(session, person_id, connection)

    def for_person(self, person_id: int) -> dict[str, FieldDict]:
        """Every connection's snapshot of one person."""
        with self._sessions() as session:
            rows = session.scalars(select(Snapshot).where(Snapshot.person_id == person_id))
            return {row.connection: fields_from_json(row.fields) for row in rows}

    def put(self, person_id: int, connection: str, fields: Mapping[str, Any]) -> bool:
        with self._sessions.begin() as session:
            return put_snapshot(session, person_id, connection, fields)
