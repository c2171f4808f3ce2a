"""What the store knows of each connection's platform behaviour (``store.behaviours``): the
variants ``contactsync probe`` measured, and the fields write verification found not writable.

Both feed the next cycle: measured variants become ``ConnectionSettings.behaviours`` (the
connector takes the reading measured instead of the safe one), unwritable fields leave the
connection's create and update field sets (``Capabilities.unwritable_fields``), so they are read
from it but never written to it again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from sync.store.models import ProbeFinding, UnwritableField, utcnow

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from sqlalchemy.orm import Session

    from sync.store.db import Sessions


@dataclass(frozen=True)
class MeasuredRow:
    connection: str
    behaviour: str
    variant: str
    evidence: str
    measured_at: datetime


@dataclass(frozen=True)
class UnwritableRow:
    connection: str
    field: str
    evidence: str
    detected_at: datetime


class BehaviourStore:
    """Measured behaviours and unwritable fields: the repository ``store.behaviours``."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    def session(self) -> AbstractContextManager[Session]:
        return self._sessions.begin()

    # -- probe findings -------------------------------------------------------------------------

    def record_findings(self, connection: str, findings: Iterable[tuple[str, str, str]]) -> None:
        """Store ``(behaviour, variant, evidence)`` measured now on ``connection`` (a behaviour
        measured again replaces its earlier finding)."""
        now = utcnow()
        with self.session() as s:
            for behaviour, variant, evidence in findings:
                row = s.get(ProbeFinding, (connection, behaviour))
                if row is None:
                    s.add(
                        ProbeFinding(
                            connection=connection,
                            behaviour=behaviour,
                            variant=variant,
                            evidence=evidence,
                            measured_at=now,
                        )
                    )
                else:
                    row.variant, row.evidence, row.measured_at = variant, evidence, now

    def measured(self, connection: str) -> dict[str, str]:
        """Behaviour name -> measured variant, for ``ConnectionSettings.behaviours``."""
        with self.session() as s:
            rows = s.execute(
                select(ProbeFinding.behaviour, ProbeFinding.variant).where(ProbeFinding.connection == connection)
            )
            return {str(b): str(v) for b, v in rows}

    def findings(self, connection: str | None = None) -> list[MeasuredRow]:
        with self.session() as s:
            q = select(ProbeFinding).order_by(ProbeFinding.connection, ProbeFinding.behaviour)
            if connection is not None:
                q = q.where(ProbeFinding.connection == connection)
            return [MeasuredRow(r.connection, r.behaviour, r.variant, r.evidence, r.measured_at) for r in s.scalars(q)]

    # -- unwritable fields ------------------------------------------------------------------------

    def mark_unwritable(self, connection: str, fields: dict[str, str]) -> list[str]:
        """Record ``fields`` (canonical field -> evidence) as not writable on ``connection``;
        the ones newly marked."""
        new: list[str] = []
        now = utcnow()
        with self.session() as s:
            for field, evidence in fields.items():
                if s.get(UnwritableField, (connection, field)) is None:
                    s.add(UnwritableField(connection=connection, field=field, evidence=evidence, detected_at=now))
                    new.append(field)
        return new

    def unwritable(self, connection: str) -> frozenset[str]:
        with self.session() as s:
            return frozenset(s.scalars(select(UnwritableField.field).where(UnwritableField.connection == connection)))

    def unwritable_rows(self, connection: str | None = None) -> list[UnwritableRow]:
        with self.session() as s:
            q = select(UnwritableField).order_by(UnwritableField.connection, UnwritableField.field)
            if connection is not None:
                q = q.where(UnwritableField.connection == connection)
            return [UnwritableRow(r.connection, r.field, r.evidence, r.detected_at) for r in s.scalars(q)]

    def forget_unwritable(self, connection: str, field: str | None = None) -> int:
        """Drop the verdicts of ``connection`` (one ``field``, or all): they are tried again."""
        with self.session() as s:
            q = delete(UnwritableField).where(UnwritableField.connection == connection)
            if field is not None:
                q = q.where(UnwritableField.field == field)
            return int(s.execute(q).rowcount or 0)  # type: ignore[attr-defined]
